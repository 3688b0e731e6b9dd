"""One tile's sampling loop, with its latents tied to its neighbours' at every step.

The upscaler's latent grid is the low-resolution pixel grid (its VAE shrinks by the
scale), so a tile samples the latents of its *region*: its core grown by the overlap
``h`` on every side, clipped to the image. Its left and upper neighbours sampled the
same latent pixels where their regions cross it. At every step, before the UNet runs,
the tile's latents there are set to the neighbours' latents *of that step*, which they
handed on as per-step strips; after the last step once more, before decoding. So the
UNet of each tile sees, at every step, the state its neighbours reached next to it, and
tiles continue one another's trajectories instead of each sampling its own (the ghosts
of final-only blending). It needs one raster pass and no barrier, as the DAG provides.

Noise never comes from a stream: the initial latents, the low-resolution augmentation
and DDPM's per-step noise are :func:`~tilewave.models.position_noise.position_noise` of
``(seed, key, channel, y, x)``, so a latent pixel starts the same in every tile that
samples it, whatever the tiling, the worker or a retry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ...pipeline.indices import Window
from ..position_noise import position_noise
from .folder import Parts

#: ``position_noise`` keys of the noise fields that are not a step's (steps use 0, 1, ...).
KEY_LATENTS = 1_000_001
KEY_LOW_RES = 1_000_002


@dataclass
class LatentStrip:
    """The latents a tile sampled over ``window``: the state each step started from
    (after its own pulls), then the final one; ``steps + 1`` tensors ``(c, h, w)``."""

    window: Window
    states: list[torch.Tensor]


@dataclass
class Sampled:
    """A region's final latents, the strips for its neighbours, and the steps it ran."""

    latents: torch.Tensor
    strips: dict[str, LatentStrip]
    steps_run: int


@dataclass(frozen=True)
class Conditioning:
    """What stays the same for every tile: prompt embeddings (two rows with guidance:
    negative, then positive), the guidance scale, the noise level, seed and early stop."""

    embeds: torch.Tensor
    guidance: float
    noise_level: int
    seed: int
    early_stop: float


def _noise(seed: int, key: int, channels: int, window: Window, like: torch.Tensor) -> torch.Tensor:
    y0, y1, x0, x1 = window
    field = position_noise(seed, key, channels, y0, y1, x0, x1)
    return torch.from_numpy(field)[None].to(like.device, torch.float32)


def _crossing(a: Window, b: Window) -> Window | None:
    y0, y1, x0, x1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def _pull(z: torch.Tensor, region: Window, inbound: Sequence[LatentStrip], step: int) -> None:
    """Set ``z`` (the padded region's latents) to the neighbours' state of ``step`` where
    they cross it; later strips win where strips cross each other (they agree there)."""
    for strip in inbound:
        both = _crossing(region, strip.window)
        if both is None:
            continue
        y0, y1, x0, x1 = both
        sy, sx = strip.window[0], strip.window[2]
        state = strip.states[step].to(z.device, z.dtype)
        z[0, :, y0 - region[0] : y1 - region[0], x0 - region[2] : x1 - region[2]] = \
            state[:, y0 - sy : y1 - sy, x0 - sx : x1 - sx]


def _crop(z: torch.Tensor, region: Window, window: Window) -> torch.Tensor:
    y0, y1, x0, x1 = window
    return z[0, :, y0 - region[0] : y1 - region[0], x0 - region[2] : x1 - region[2]].float().cpu().clone()


def _alpha(scheduler: Any, timestep: int) -> float:
    """The cumulative alpha of ``timestep``; DDIM's final one below 0."""
    if timestep < 0:
        return float(scheduler.final_alpha_cumprod)
    return float(scheduler.alphas_cumprod[timestep])


def _previous(scheduler: Any, timestep: int) -> int:
    return timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def _predict(parts: Parts, z: torch.Tensor, low_res: torch.Tensor, t: torch.Tensor,
             cond: Conditioning) -> torch.Tensor:
    """The UNet's output at ``z`` (with guidance: unconditional pushed to conditional)."""
    rows = cond.embeds.shape[0]
    x = parts.scheduler.scale_model_input(z, t)
    x = torch.cat([x, low_res], dim=1).to(parts.dtype)
    x = x.repeat(rows, 1, 1, 1)
    labels = torch.full((rows,), cond.noise_level, dtype=torch.long, device=z.device)
    out = parts.unet(x, t, encoder_hidden_states=cond.embeds, class_labels=labels).sample.float()
    if rows == 2:
        uncond, text = out.chunk(2)
        return uncond + cond.guidance * (text - uncond)
    return out


def _change(x0: torch.Tensor, before: torch.Tensor, own: tuple[int, int]) -> float:
    """Mean absolute change of the estimate over the tile's own latents, relative."""
    h, w = own
    now, was = x0[..., :h, :w], before[..., :h, :w]
    return float((now - was).abs().mean() / now.abs().mean().clamp_min(1e-8))


def sample_region(parts: Parts, lr_unit: torch.Tensor, region: Window, steps: int,
                  cond: Conditioning, inbound: Sequence[LatentStrip],
                  outbound: dict[str, Window]) -> Sampled:
    """Sample the latents of ``region`` from its low-resolution pixels ``lr_unit``
    (``(1, 3, h, w)`` in unit space), tied to the ``inbound`` strips at every step, and
    keep the states over each ``outbound`` window for the neighbour it names."""
    y0, y1, x0, x1 = region
    h, w = y1 - y0, x1 - x0
    m = parts.latent_multiple
    ph, pw = -(-h // m) * m, -(-w // m) * m
    padded = (y0, y0 + ph, x0, x0 + pw)
    lr = lr_unit.float() * 2 - 1
    if (ph, pw) != (h, w):
        # Replicating the edge gives the UNet a plausible continuation; what it makes of
        # it is cropped away.
        lr = F.pad(lr, (0, pw - w, 0, ph - h), mode="replicate")
    sched = parts.scheduler
    level = torch.tensor([cond.noise_level], dtype=torch.long, device=lr.device)
    low_res = parts.low_res_scheduler.add_noise(lr, _noise(cond.seed, KEY_LOW_RES, 3, padded, lr),
                                                level)
    z = _noise(cond.seed, KEY_LATENTS, parts.latent_channels, padded, lr) * float(sched.init_noise_sigma)
    kept: dict[str, list[torch.Tensor]] = {d: [] for d in outbound}
    estimate: torch.Tensor | None = None
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # (x0, eps) once stopped early
    steps_run = 0
    for k, t in enumerate(sched.timesteps):
        _pull(z, region, inbound, k)
        for d, window in outbound.items():
            kept[d].append(_crop(z, region, window))
        if frozen is None:
            out = sched.step(_predict(parts, z, low_res, t, cond), t, z, eta=parts.eta,
                             variance_noise=_noise(cond.seed, k, parts.latent_channels, padded, z)
                             if parts.eta > 0 else None)
            steps_run += 1
            x0 = out.pred_original_sample
            if (cond.early_stop > 0 and estimate is not None and k + 1 < steps
                    and _change(x0, estimate, (h, w)) < cond.early_stop):
                # The rest of DDIM's path with this estimate held: no more UNet passes.
                a = _alpha(sched, _previous(sched, int(t)))
                frozen = (x0, (out.prev_sample - math.sqrt(a) * x0) / math.sqrt(1 - a))
            estimate, z = x0, out.prev_sample
        else:
            a = _alpha(sched, _previous(sched, int(t)))
            z = math.sqrt(a) * frozen[0] + math.sqrt(1 - a) * frozen[1]
    _pull(z, region, inbound, steps)
    for d, window in outbound.items():
        kept[d].append(_crop(z, region, window))
    strips = {d: LatentStrip(window, kept[d]) for d, window in outbound.items()}
    return Sampled(z, strips, steps_run)


def decode(parts: Parts, z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Latents (padded) to unit-space pixels ``(1, 3, height * s, width * s)``."""
    vae = parts.vae
    dtype = next(vae.parameters()).dtype
    image = vae.decode((z / vae.config.scaling_factor).to(dtype)).sample.float()
    s = parts.scale
    return ((image[..., : height * s, : width * s] + 1) / 2).clamp(0, 1)
