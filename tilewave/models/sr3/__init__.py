"""SR3 checkpoints (as Diff2X trains them), run from ``--model PATH``.

``PATH`` is a ``.pth``/``.pt`` (or ``.safetensors``) state dict of the SR3 noise-prediction
UNet (:mod:`.arch`), as saved by itself or inside SR3's ``GaussianDiffusion`` wrapper
(keys prefixed ``denoise_fn.``, schedule buffers beside them; ``module.`` of
``DataParallel`` is stripped too). It is told from other weights by its key names
(``noise_level_mlp.1.weight`` and ``final_conv.block.3.weight``).

The configuration defaults to Diff2X's (:class:`.arch.SR3Config`); another one is read
from a JSON file beside the checkpoint with the same stem (``model.pth`` ->
``model.json``), either flat (``{"inner_channel": 64, "res_blocks": 2, ...}``, the
:class:`.arch.SR3Config` field names, ``channel_multiplier`` accepted for
``channel_mults``) or in SR3's own configuration layout (``model.unet``,
``model.beta_schedule.val``, ``model.diffusion.image_size``; ``//`` comments allowed, so
Diff2X's ``config/diff2x.json`` can be copied beside the checkpoint as it is).

The model runs in ``blend`` mode by default (each window sampled alone, overlaps
feathered) and in ``halo`` mode with an explicit ``--halo``: GroupNorm statistics and
self-attention span the whole window, so no halo makes tiles exact. The sampler's noise
is keyed by output position (:mod:`.sampler`), so a window's output depends only on
its pixels, where it lies and the seed.

``--early-stop X`` is Diff2X's per-tile noise estimation: a window stops sampling once
its sample's estimated noise falls below ``X`` times its input's (Diff2X's rule is
``X = 1``), and its ``TileResult.steps`` says how many steps ran. ``--adaptive`` needs
nothing of the model: easy tiles never reach it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import TYPE_CHECKING, Any

from ...errors import SettingsError
from ..base import ImageModel, ModelDescriptor, SamplerSettings, SizeRequirements, TileRequest, TileResult
from ..entry import ModelEntry, file_entry_for

if TYPE_CHECKING:
    import torch

    from .arch import SR3Config, SR3UNet

__all__ = ["SR3Model", "describe", "file_entry", "is_sr3_file", "read_config"]

#: Keys that mark an SR3 UNet state dict.
MARKERS = ("noise_level_mlp.1.weight", "final_conv.block.3.weight")
#: Prefixes a saved network may carry: SR3's diffusion wrapper, DataParallel.
PREFIXES = ("module.", "denoise_fn.")
#: The halo (input pixels) the descriptor states; not measured, so ``--mode halo`` asks
#: for an explicit ``--halo``.
HALO = 16
_ALIASES = {"channel_multiplier": "channel_mults"}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def network_shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The network's tensors' shapes by canonical key: prefixes stripped, and the
    diffusion wrapper's schedule buffers (keys without a dot) left out."""
    return {_strip(k): tuple(v.shape) for k, v in state.items() if "." in _strip(k)}


def _read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    if path.lower().endswith(".safetensors"):
        from ..safetensors_header import read_header

        header = read_header(path)
        return {_strip(k): tuple(t["shape"]) for k, t in header.items()
                if k != "__metadata__" and "." in _strip(k)}
    import zipfile

    if zipfile.is_zipfile(path):
        import torch

        # Memory-mapped: telling an SR3 checkpoint from other weights needs the key names
        # and shapes only, and the file is read again by whichever loader takes it.
        return network_shapes(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    from ..user_weights import read_state_dict

    return network_shapes(read_state_dict(path))


@functools.lru_cache(maxsize=8)
def _shapes(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, ...]] | None:
    try:
        shapes = _read_shapes(path)
    except Exception:  # unreadable or another format: the general loader says why
        return None
    return shapes if all(k in shapes for k in MARKERS) else None


def _file_shapes(path: str) -> dict[str, tuple[int, ...]] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _shapes(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def is_sr3_file(path: str) -> bool:
    """True if ``path`` holds an SR3 UNet state dict (read once, then cached)."""
    return _file_shapes(path) is not None


def config_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """SR3's own configuration layout to :class:`SR3Config` fields; flat ones as they are."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return raw
    flat = dict(model.get("unet", {}))
    schedule = model.get("beta_schedule", {})
    flat.update({k: v for k, v in schedule.get("val", schedule).items()
                 if k in ("schedule", "n_timestep", "linear_start", "linear_end")})
    if "image_size" in model.get("diffusion", {}):
        flat["image_size"] = model["diffusion"]["image_size"]
    return flat


def read_config(path: str) -> SR3Config:
    """The configuration of the checkpoint ``path``: its JSON file's, or Diff2X's."""
    from .arch import SR3Config

    json_path = config_path(path)
    if not os.path.isfile(json_path):
        return SR3Config()
    try:
        with open(json_path, encoding="utf-8") as f:
            text = f.read()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:  # SR3's configuration files carry // comments
            raw = json.loads("\n".join(line.split("//")[0] for line in text.splitlines()))
        raw = _flatten(raw)
        fields = {f.name for f in dataclasses.fields(SR3Config)}
        given = {_ALIASES.get(k, k): v for k, v in raw.items()}
        unknown = sorted(k for k in given if k not in fields)
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}")
        for key in ("channel_mults", "attn_res"):
            if key in given:
                value = given[key]
                given[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
        cfg = SR3Config(**given)
    except Exception as exc:  # I/O, JSON, bad values
        raise SettingsError(f"{json_path}: not an SR3 configuration ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if cfg.in_channel != 2 * cfg.out_channel or cfg.out_channel != 3:
        raise SettingsError(f"{json_path}: tilewave runs SR3 models of 3 output channels "
                            f"conditioned on 3 (in_channel 6), not {cfg.in_channel} -> "
                            f"{cfg.out_channel}")
    return cfg


def expected_shapes(cfg: SR3Config) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of the SR3 UNet ``cfg`` describes (built without memory)."""
    import torch

    from .arch import SR3UNet

    with torch.device("meta"):
        net = SR3UNet(cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_layout(path: str, shapes: dict[str, tuple[int, ...]], cfg: SR3Config) -> None:
    """Refuse, in one line, a checkpoint whose tensors are not those ``cfg`` describes."""
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = [f"{len(v)} {what} (first {v[0]})" for what, v in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if v]
    raise SettingsError(f"{path}: not the SR3 network its configuration describes: "
                        f"{'; '.join(parts)}; put the right configuration in "
                        f"{os.path.basename(config_path(path))}")


def describe(path: str, cfg: SR3Config, parameters: int = 0) -> ModelDescriptor:
    """The descriptor of the SR3 checkpoint ``path`` with configuration ``cfg``."""
    multiple = 2 ** (len(cfg.channel_mults) - 1)
    return ModelDescriptor(
        name=os.path.basename(path),
        scale=cfg.scale,
        modes=("blend", "halo"),
        halo=HALO,
        halo_measured=False,
        channels=(1, 3),  # grey: replicated to RGB, the outputs averaged back
        size=SizeRequirements(multiple_of=max(1, -(-multiple // cfg.scale))),
        weights=path,
        description=(f"SR3 diffusion x{cfg.scale} (Diff2X layout, inner_channel "
                     f"{cfg.inner_channel}): {cfg.n_timestep}-step ancestral sampler, fewer "
                     "with --steps (respaced); noise keyed by position and --seed; "
                     "--early-stop X: a tile stops once its sample's estimated noise is "
                     "below X times its input's (Diff2X: 1)"),
        parameters=parameters,
        # early_stop 0 (never) is what runs without the option; being set, not None, is
        # what lets the job accept --early-stop for this model.
        sampler=SamplerSettings(steps=cfg.n_timestep, noise=None, seed=0, early_stop=0.0),
        steps_max=cfg.n_timestep,
        positional=True,
        trained_for=f"{cfg.image_size // cfg.scale} -> {cfg.image_size} px tiles "
                    "(a diffusion model: detail is generated)",
    )


class SR3Model(ImageModel):
    """An SR3 UNet and its sampler settings, as a :class:`~tilewave.models.base.TileModel`."""

    def __init__(self, net: SR3UNet, descriptor: ModelDescriptor,
                 sampler: SamplerSettings | None = None):
        self.net = net.eval()
        self.descriptor = descriptor
        self.sampler = sampler or descriptor.sampler or SamplerSettings()

    @classmethod
    def load(cls, path: str, cfg: SR3Config, descriptor: ModelDescriptor) -> SR3Model:
        from ..user_weights import read_state_dict
        from .arch import SR3UNet

        state = read_state_dict(path)
        check_layout(path, network_shapes(state), cfg)
        net = SR3UNet(cfg)
        net.load_state_dict({_strip(k): v for k, v in state.items() if "." in _strip(k)})
        return cls(net, descriptor)

    def with_sampler(self, sampler: SamplerSettings) -> SR3Model:
        """The same network (shared, not copied) with other sampler settings."""
        if sampler.noise:
            raise SettingsError(f"{self.descriptor.name}: SR3's noise is set by its schedule; "
                                "drop --noise")
        return SR3Model(self.net, self.descriptor, sampler)

    def to(self, device: torch.device, half: bool = False) -> SR3Model:
        self.net.to(device)
        return self

    def _sample(self, x: torch.Tensor, origin: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """The sample of the window ``x`` whose first input pixel is ``origin``, and the
        steps it ran."""
        import torch
        import torch.nn.functional as F

        from ..position_noise import position_noise
        from .sampler import sample_window

        cfg, s = self.net.cfg, self.net.cfg.scale
        h, w = x.shape[-2:]
        m = max(1, -(-self.net.multiple // s))
        ph, pw = -(-h // m) * m, -(-w // m) * m
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        param = next(self.net.parameters())
        x = x.to(param.device, param.dtype)
        condition = F.interpolate(x, scale_factor=float(s), mode="bicubic",
                                  align_corners=False).mul(2.0).sub(1.0).clamp(-1.0, 1.0)
        oy, ox = origin[0] * s, origin[1] * s
        n, _, H, W = condition.shape

        def noise(step: int) -> torch.Tensor:
            field = position_noise(self.sampler.seed, step, cfg.out_channel, oy, oy + H, ox, ox + W)
            return torch.from_numpy(field)[None].expand(n, -1, -1, -1).to(condition)

        # The noise estimates see the window's own pixels only: the edge padding would
        # lower both, and differently for windows that need different padding.
        done = sample_window(self.net, condition, self.sampler.steps, noise,
                             self.sampler.early_stop or 0.0, (h * s, w * s))
        return done.image.add(1.0).mul(0.5).clamp(0.0, 1.0)[..., : h * s, : w * s], done.steps_run

    def _bands(self, x: torch.Tensor, origin: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """RGB as it is; grey (or any other count, band by band) replicated to three
        channels and the outputs averaged back, as a grey image runs through RGB. With
        the steps run: the most any band ran, as a tile is asked for its steps once."""
        import torch

        if x.shape[1] == 3:
            return self._sample(x, origin)
        bands = [self._sample(band.expand(-1, 3, -1, -1), origin) for band in x.split(1, dim=1)]
        return (torch.cat([out.mean(1, keepdim=True) for out, _ in bands], dim=1),
                max(run for _, run in bands))

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        return self._bands(x, (0, 0))[0]

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        s = self.net.cfg.scale
        ry0, _, rx0, _ = request.window
        y0, y1, x0, x1 = request.core
        out, run = self._bands(x, (ry0, rx0))
        top, left = (y0 - ry0) * s, (x0 - rx0) * s
        out = out[..., top: top + (y1 - y0) * s, left: left + (x1 - x0) * s]
        return TileResult(out, steps=(run, self.sampler.steps))


@functools.lru_cache(maxsize=8)
def _entry(path: str, mtime_ns: int, size: int) -> ModelEntry:
    shapes = _shapes(path, mtime_ns, size)
    if shapes is None:
        raise SettingsError(f"{path} is not an SR3 checkpoint")
    cfg = read_config(path)
    check_layout(path, shapes, cfg)
    desc = describe(path, cfg, sum(math.prod(v) for v in shapes.values()))
    return ModelEntry(path, lambda _scale: SR3Model.load(path, cfg, desc),
                      scales=(cfg.scale,), default_scale=cfg.scale,
                      summary="SR3 / Diff2X checkpoint", describe=lambda _scale: desc)


def file_entry(path: str) -> ModelEntry:
    """A registry entry for the SR3 checkpoint ``path``, checked (layout, config) now."""
    return file_entry_for(path, _entry)
