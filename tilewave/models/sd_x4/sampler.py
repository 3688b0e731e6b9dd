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

The loop runs one step per call (:func:`sample_step`), from a small :class:`LoopState`
that is handed from one step to the next, pickled in between where the job runs step
by step; :func:`finish` makes the last pull. What stays the same over the steps (the
low-resolution conditioning, :func:`low_res_input`) is computed again for each.

Noise never comes from a stream: the initial latents, the low-resolution augmentation
and DDPM's per-step noise are :func:`~tilewave.models.position_noise.position_noise` of
``(seed, key, channel, y, x)``, so a latent pixel starts the same in every tile that
samples it, whatever the tiling, the worker, a retry or the step it is resumed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class Strip:
    """The latents ``(c, h, w)`` a neighbour sampled over ``window`` at one point of its
    loop (the state a step started from after its own pulls, or the final one)."""

    window: Window
    latents: torch.Tensor


@dataclass
class LoopState:
    """What one step of a region's loop hands the next: all the loop carries, no more."""

    #: The padded region's latents ``(1, c, ph, pw)`` the next step starts from (before
    #: it pulls its neighbours').
    latents: torch.Tensor
    #: UNet passes run so far (steps after an early stop take none).
    steps_run: int
    #: The last estimate of the result over the region's own latents ``(1, c, h, w)``,
    #: which the next step's is compared with; None without early stop, or once stopped.
    estimate: torch.Tensor | None = None
    #: The estimate and its noise ``(x0, eps)``, padded, held since an early stop.
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def plain(self, step: int) -> dict[str, Any]:
        """The state as plain containers of compact CPU tensors, for the next step,
        ``step`` (a view would pickle all the storage behind it)."""
        return {"step": step, "latents": _compact(self.latents), "steps_run": self.steps_run,
                "estimate": None if self.estimate is None else _compact(self.estimate),
                "frozen": None if self.frozen is None else [_compact(t) for t in self.frozen]}

    @classmethod
    def from_plain(cls, value: dict[str, Any], step: int, device: torch.device) -> LoopState:
        """The state :meth:`plain` wrote for ``step``, on ``device``."""
        if value.get("step") != step:
            raise ValueError(f"the sampler state given to step {step} was left for step "
                             f"{value.get('step')}")
        estimate, frozen = value["estimate"], value["frozen"]
        return cls(value["latents"].to(device), int(value["steps_run"]),
                   None if estimate is None else estimate.to(device),
                   None if frozen is None else (frozen[0].to(device), frozen[1].to(device)))


def _compact(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().clone(memory_format=torch.contiguous_format)


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


def padded_region(parts: Parts, region: Window) -> Window:
    """``region`` grown at its lower and right edges to the UNet's latent multiple."""
    y0, y1, x0, x1 = region
    m = parts.latent_multiple
    return (y0, y0 + -(-(y1 - y0) // m) * m, x0, x0 + -(-(x1 - x0) // m) * m)


def low_res_input(parts: Parts, lr_unit: torch.Tensor, region: Window,
                  cond: Conditioning) -> torch.Tensor:
    """The UNet's image input for ``region`` from its low-resolution pixels ``lr_unit``
    (``(1, 3, h, w)`` in unit space): padded, augmented with position-keyed noise.
    Deterministic, so every step computes it again rather than carry it."""
    y0, y1, x0, x1 = region
    padded = padded_region(parts, region)
    h, w, ph, pw = y1 - y0, x1 - x0, padded[1] - y0, padded[3] - x0
    lr = lr_unit.float() * 2 - 1
    if (ph, pw) != (h, w):
        # Replicating the edge gives the UNet a plausible continuation; what it makes of
        # it is cropped away.
        lr = F.pad(lr, (0, pw - w, 0, ph - h), mode="replicate")
    level = torch.tensor([cond.noise_level], dtype=torch.long, device=lr.device)
    return parts.low_res_scheduler.add_noise(lr, _noise(cond.seed, KEY_LOW_RES, 3, padded, lr), level)


def initial_state(parts: Parts, region: Window, cond: Conditioning,
                  device: torch.device) -> LoopState:
    """The state step 0 starts from: the region's position-keyed initial latents."""
    like = torch.empty(0, device=device)
    z = _noise(cond.seed, KEY_LATENTS, parts.latent_channels, padded_region(parts, region), like)
    return LoopState(z * float(parts.scheduler.init_noise_sigma), 0)


def _pull(z: torch.Tensor, region: Window, inbound: Sequence[Strip]) -> None:
    """Set ``z`` (the padded region's latents) to the neighbours' where they cross it;
    later strips win where strips cross each other (they agree there)."""
    for strip in inbound:
        both = _crossing(region, strip.window)
        if both is None:
            continue
        y0, y1, x0, x1 = both
        sy, sx = strip.window[0], strip.window[2]
        state = strip.latents.to(z.device, z.dtype)
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


def sample_step(parts: Parts, state: LoopState, low_res: torch.Tensor, region: Window,
                step: int, cond: Conditioning, inbound: Sequence[Strip],
                outbound: Mapping[str, Window]) -> tuple[LoopState, dict[str, torch.Tensor]]:
    """Step ``step`` of ``region``'s loop from ``state`` (left unchanged): its latents
    set to the ``inbound`` strips of this step, then the latents over each ``outbound``
    window kept for the neighbour it names, then the UNet's step (or, after an early
    stop, the held estimate's). Returns the next state and the kept latents."""
    sched = parts.scheduler
    t = sched.timesteps[step]
    # A copy: the caller's state stays as it was, so that a retried step starts alike.
    z = state.latents.clone()
    _pull(z, region, inbound)
    kept = {d: _crop(z, region, window) for d, window in outbound.items()}
    if state.frozen is not None:
        # The rest of DDIM's path with the estimate held: no more UNet passes.
        a = _alpha(sched, _previous(sched, int(t)))
        x0, eps = state.frozen
        return LoopState(math.sqrt(a) * x0 + math.sqrt(1 - a) * eps, state.steps_run,
                         frozen=state.frozen), kept
    padded = padded_region(parts, region)
    out = sched.step(_predict(parts, z, low_res, t, cond), t, z, eta=parts.eta,
                     variance_noise=_noise(cond.seed, step, parts.latent_channels, padded, z)
                     if parts.eta > 0 else None)
    x0 = out.pred_original_sample
    own = (region[1] - region[0], region[3] - region[2])
    if cond.early_stop <= 0:
        return LoopState(out.prev_sample, state.steps_run + 1), kept
    if (state.estimate is not None and step + 1 < sched.num_inference_steps
            and _change(x0, state.estimate, own) < cond.early_stop):
        a = _alpha(sched, _previous(sched, int(t)))
        eps = (out.prev_sample - math.sqrt(a) * x0) / math.sqrt(1 - a)
        return LoopState(out.prev_sample, state.steps_run + 1, frozen=(x0, eps)), kept
    # Only the region's own latents are compared, so only they are kept.
    return LoopState(out.prev_sample, state.steps_run + 1, estimate=x0[..., : own[0], : own[1]]), kept


def finish(state: LoopState, region: Window, inbound: Sequence[Strip],
           outbound: Mapping[str, Window]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """After the last step: the region's final latents, set to the neighbours' final
    ``inbound`` strips, and their crops over the ``outbound`` windows."""
    z = state.latents.clone()
    _pull(z, region, inbound)
    return z, {d: _crop(z, region, window) for d, window in outbound.items()}


def decode(parts: Parts, z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Latents (padded) to unit-space pixels ``(1, 3, height * s, width * s)``."""
    vae = parts.vae
    dtype = next(vae.parameters()).dtype
    image = vae.decode((z / vae.config.scaling_factor).to(dtype)).sample.float()
    s = parts.scale
    return ((image[..., : height * s, : width * s] + 1) / 2).clamp(0, 1)
