"""``uniba-x2`` and ``uniba-diff-x2``: tilewave's own UniBA transformers, run in
``context`` mode; the second samples in several steps (:mod:`.bridge`).

Weights ship in this folder as safetensors, with a record of how they were trained.
Describing a checkpoint reads only its header (configuration and tensor shapes), so it
needs no torch; the network is imported when a model is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import SettingsError
from ...pipeline.indices import Window
from ..base import (
    ModelDescriptor,
    SamplerSettings,
    SizeRequirements,
    StepResult,
    TileRequest,
    TileResult,
)
from ..entry import ModelEntry
from ..purposes import CLEAN, SCANS
from ..safetensors_header import read_header
from .config import UniBAConfig

if TYPE_CHECKING:
    import torch

    from .arch import UniBANet
    from .bridge import Noise, UniBADiffNet

HERE = os.path.dirname(__file__)


#: The bridge model's sampler defaults: deterministic, four steps.
SAMPLER_DEFAULTS = SamplerSettings(steps=4, noise=0.0, seed=0)
#: The largest --noise the bridge network was trained for (``bridge.NOISE_MAX``, kept
#: here too so that describing the model imports no torch; a test checks they agree).
NOISE_MAX = 0.1


def weights_path(scale: int, diffusion: bool = False, scan: bool = False) -> str:
    kind = "diff_" if diffusion else ""
    return os.path.join(HERE, f"uniba_{kind}x{scale}{'_scan' if scan else ''}.safetensors")


def describe(cfg: UniBAConfig, parameters: int = 0) -> ModelDescriptor:
    """The descriptor of a UniBA network with configuration ``cfg``: ``uniba-xN``, or
    ``uniba-diff-xN`` for a multi-step bridge model."""
    kv = (f"keys and values (heads x {cfg.tokens_per_side ** 2} tokens x head_dim, float32) of "
          "the tile's right block column, bottom block row and bottom-right block")
    one_step = ModelDescriptor(
        name=f"uniba-x{cfg.scale}",
        scale=cfg.scale,
        modes=("context",),
        halo=cfg.halo,
        channels=(cfg.channels,),
        size=SizeRequirements(multiple_of=cfg.block),
        block=cfg.block,
        context_format=f"per layer, {kv}",
        weights=f"tilewave/models/uniba/{os.path.basename(weights_path(cfg.scale))}",
        description=f"UniBA transformer x{cfg.scale}, block attention with KV-cache contexts",
        parameters=parameters,
        conditions=cfg.conditions,
    )
    if not cfg.diffusion:
        return one_step
    block_bytes = cfg.layers * 2 * cfg.tokens_per_side ** 2 * cfg.dim * 4
    return dataclasses.replace(
        one_step,
        name=f"uniba-diff-x{cfg.scale}",
        context_format=f"per sampler step and layer, {kv}",
        weights=f"tilewave/models/uniba/{os.path.basename(weights_path(cfg.scale, True))}",
        description=(f"UniBA bridge sampler x{cfg.scale}: refines bicubic in --steps steps "
                     "(default 4), noise --noise (default 0) keyed by position and --seed"),
        sampler=SAMPLER_DEFAULTS,
        noise_max=NOISE_MAX,
        stepwise=True,
        # Keys and values, float32, of every layer: a right block column and a bottom
        # block row of tile/block blocks each, and one corner block.
        step_context_bytes=(2 * block_bytes // cfg.block, block_bytes),
    )


class UniBA:
    """A :class:`~tilewave.models.base.TileModel` around :class:`UniBANet`."""

    def __init__(self, net: UniBANet):
        from ..base import count_parameters

        self.net = net.eval()
        self.descriptor = describe(net.cfg, count_parameters(net))

    @classmethod
    def load(cls, path: str) -> UniBA:
        """The model in ``path``: :class:`UniBA`, or :class:`UniBADiff` for a bridge model."""
        from safetensors.torch import load_file

        from .arch import UniBANet
        from .bridge import UniBADiffNet

        cfg, _ = _read_header(path)
        if cfg.diffusion:
            bridge = UniBADiffNet(cfg)
            bridge.load_state_dict(load_file(path))
            return UniBADiff(bridge)
        net = UniBANet(cfg)
        net.load_state_dict(load_file(path))
        return cls(net)

    #: The condition channels' values of a conditioned network (None: zeros).
    condition: list[float] | None = None

    def with_condition(self, given: Mapping[str, object]) -> UniBA:
        """The same network (shared, not copied) told ``given`` about its input."""
        import copy

        from ..conditions import levels

        told = copy.copy(self)
        told.condition = levels(self.descriptor.conditions, given)
        return told

    def to(self, device: torch.device, half: bool = False) -> UniBA:
        self.net.to(device)
        return self

    def _padded(self, x: torch.Tensor, core: Window, window: Window) -> torch.Tensor:
        """The window ``x`` covers, padded to the core's whole blocks plus the halo."""
        import torch.nn.functional as F

        cfg = self.net.cfg
        b, m = cfg.block, cfg.halo
        y0, y1, x0, x1 = core
        ry0, ry1, rx0, rx1 = window
        hp, wp = -(-(y1 - y0) // b) * b, -(-(x1 - x0) // b) * b
        # Replicate the edge for the halo past the image and the last partial blocks.
        pads = (m - (x0 - rx0), (x0 + wp + m) - rx1, m - (y0 - ry0), (y0 + hp + m) - ry1)
        return F.pad(x, pads, mode="replicate") if any(pads) else x

    def _run(self, x: torch.Tensor, core: Window, window: Window,
             contexts: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        y0, y1, x0, x1 = core
        s = self.net.cfg.scale
        out, ctx = self._forward(self._padded(x, core, window), (y0, x0), contexts)
        return out[..., : (y1 - y0) * s, : (x1 - x0) * s], ctx

    def _forward(self, x: torch.Tensor, origin: tuple[int, int], contexts: dict[str, Any]
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
        import torch

        condition = None
        if self.condition is not None:
            condition = torch.tensor([self.condition], dtype=x.dtype, device=x.device)
        return self.net.forward_tile(x, origin, contexts, condition)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self._run(x, (0, h, 0, w), (0, h, 0, w), {})[0]

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        out, ctx = self._run(x, request.core, request.window, dict(request.contexts))
        return TileResult(out, ctx)


class UniBADiff(UniBA):
    """The bridge sampler (:mod:`.bridge`) around :class:`UniBADiffNet`, with its
    sampler settings; noise comes from :func:`~tilewave.models.position_noise.position_noise`,
    so the output does not depend on how the image is tiled or when a tile runs."""

    net: UniBADiffNet

    def __init__(self, net: UniBADiffNet, sampler: SamplerSettings = SAMPLER_DEFAULTS):
        super().__init__(net)
        self.sampler = sampler

    def with_sampler(self, sampler: SamplerSettings) -> UniBADiff:
        """The same network (shared, not copied) with other sampler settings."""
        return UniBADiff(self.net, sampler)

    def _noise(self, x: torch.Tensor, origin: tuple[int, int]) -> Noise:
        """Step ``k``'s noise over the output of the padded window ``x`` at ``origin``."""
        import torch

        from ..position_noise import position_noise

        cfg, sampler = self.net.cfg, self.sampler
        s, m = cfg.scale, cfg.halo
        y, x0 = origin[0] * s, origin[1] * s
        h, w = (x.shape[-2] - 2 * m) * s, (x.shape[-1] - 2 * m) * s

        def noise(step: int) -> torch.Tensor:
            field = position_noise(sampler.seed, step, cfg.channels, y, y + h, x0, x0 + w)
            return torch.from_numpy(field)[None].to(x.device, x.dtype)

        return noise

    def _forward(self, x: torch.Tensor, origin: tuple[int, int], contexts: dict[str, Any]
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
        from .bridge import sample_tile

        return sample_tile(self.net, x, origin, contexts, self.sampler.steps,
                           self.sampler.noise or 0.0, self._noise(x, origin))

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        out, ctx = self._run(x, request.core, request.window, dict(request.contexts))
        return TileResult(out, ctx, (self.sampler.steps, self.sampler.steps))

    def forward_step(self, x: torch.Tensor, request: TileRequest, step: int,
                     state: Any) -> StepResult:
        """Step ``step`` of the tile: the state is the tile's current image (padded to
        whole blocks), so the tile's encoding is computed again at every step; this
        computes the same numbers as :meth:`forward_tile`'s loop, so both schedules write
        the same bytes."""
        from .bridge import sample_step

        y0, y1, x0, x1 = request.core
        window = self._padded(x, request.core, request.window)
        enc = self.net.encode(window, (y0, x0))
        current = enc.base if state is None else state["image"].to(enc.base.device, enc.base.dtype)
        steps = self.sampler.steps
        image, contexts = sample_step(self.net, enc, current, step, steps,
                                      dict(request.contexts), self.sampler.noise or 0.0,
                                      self._noise(window, (y0, x0)))
        if step + 1 < steps:
            return StepResult(state={"image": image}, contexts=contexts)
        s = self.net.cfg.scale
        return StepResult(state=None, contexts=contexts,
                          output=image[..., : (y1 - y0) * s, : (x1 - x0) * s],
                          steps=(steps, steps))


def _read_header(path: str) -> tuple[UniBAConfig, int]:
    """Configuration and parameter count from a weights file, without loading weights."""
    try:
        header = read_header(path)
        cfg = UniBAConfig(**json.loads((header.get("__metadata__") or {})["config"]))
        parameters = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except Exception as exc:  # I/O, JSON and the config raise various kinds
        raise SettingsError(
            f"weights {path!r} are not a UniBA checkpoint written by `tilewave train` "
            f"({type(exc).__name__}); give a registered model name or such a file"
        ) from None
    return cfg, parameters


def is_uniba_file(path: str) -> bool:
    """True if ``path`` is a safetensors file written by ``tilewave train``."""
    try:
        return "config" in (read_header(path).get("__metadata__") or {})
    except Exception:  # not a (readable) safetensors file: let the general loader say why
        return False


def describe_shipped(scale: int, diffusion: bool = False, scan: bool = False) -> ModelDescriptor:
    """The shipped model's descriptor, read from its file's metadata (no weights loaded)."""
    path = weights_path(scale, diffusion, scan)
    if not os.path.exists(path):
        desc = describe(UniBAConfig(scale=scale, diffusion=diffusion))
    else:
        desc = describe(*_read_header(path))
    if scan:
        return dataclasses.replace(
            desc, name=f"uniba-x{scale}-scan", trained_for=SCANS,
            weights=f"tilewave/models/uniba/{os.path.basename(path)}",
            description=f"UniBA transformer x{scale} fine-tuned for scans: no sharpened JPEG "
                        "grid (exact levels: --consistent)")
    return dataclasses.replace(desc, trained_for=CLEAN, scan_variant=f"uniba-x{scale}-scan")


def file_entry(path: str) -> ModelEntry:
    """A registry entry for a UniBA weights file trained with ``tilewave train``."""
    if not os.path.isfile(path):
        raise SettingsError(f"weights file {path!r} does not exist; check the path")
    path = os.path.abspath(path)
    cfg, parameters = _read_header(path)
    desc = describe(cfg, parameters)
    return ModelEntry(path, lambda scale: UniBA.load(path), scales=(cfg.scale,),
                      default_scale=cfg.scale, summary="UniBA weights file",
                      describe=lambda scale: desc)


def load_uniba(scale: int, diffusion: bool = False, scan: bool = False) -> UniBA:
    path = weights_path(scale, diffusion, scan)
    if not os.path.exists(path):
        name = f"uniba-{'diff-' if diffusion else ''}x{scale}{'-scan' if scan else ''}"
        raise SettingsError(f"the weights of {name} are missing ({path}); reinstall tilewave")
    model = UniBA.load(path)
    model.descriptor = describe_shipped(scale, diffusion, scan)
    return model


def entries() -> list[ModelEntry]:
    return [ModelEntry("uniba-x2", load_uniba, scales=(2,), default_scale=2,
                       summary="UniBA transformer x2", describe=describe_shipped),
            ModelEntry("uniba-diff-x2", lambda scale: load_uniba(scale, True), scales=(2,),
                       default_scale=2,
                       summary="UniBA bridge sampler x2, multi-step with per-step KV contexts",
                       describe=lambda scale: describe_shipped(scale, True)),
            ModelEntry("uniba-x2-scan", lambda scale: load_uniba(scale, scan=True), scales=(2,),
                       default_scale=2,
                       summary="UniBA transformer x2 fine-tuned for JPEG-compressed, noisy and 16-bit scans",
                       describe=lambda scale: describe_shipped(scale, scan=True))]
