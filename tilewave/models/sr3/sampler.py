"""SR3's conditional ancestral sampler, with noise keyed by output position.

As SR3 samples (``model/sr3_modules/diffusion.py`` of the SR3 implementation that Diff2X
uses), for ``t = T-1 .. 0``: the network predicts the noise in ``x_t`` given the
condition (the input upsampled with bicubic, in ``[-1, 1]``) concatenated *before*
``x_t``, and the noise level ``sqrt(alpha_bar_t)``; the clean image estimate
``x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)`` is clipped to ``[-1, 1]``;
``x_{t-1}`` is the posterior mean of ``q(x_{t-1} | x_t, x0)`` plus, for ``t > 0``, noise
with the posterior's (clipped log) variance. ``x_T`` is pure noise.

Fewer steps than the schedule's (``--steps``) respace it: the steps kept are spread
evenly over the schedule, and each kept step's beta is recomputed from the cumulative
products of the steps kept (``beta = 1 - alpha_bar_t / alpha_bar_prev``), so the noise
levels the network sees are ones it was trained on. SR3 conditions on the continuous
noise level, so this needs no retraining; with all steps it is SR3's sampler exactly.

Every noise field comes from :func:`~tilewave.models.position_noise.position_noise`,
keyed by the seed, the step (the timestep's index in the full schedule; ``x_T`` uses
index ``T``) and the output pixel's global coordinates, never from a stream.

Per-tile stop (``early_stop``, Diff2X's noise-estimation idea): each window's *target* is
``early_stop`` times Immerkaer's noise estimate of its condition (the bicubic input, on
its luma); after every step but the last, the same estimate is taken of the new sample
``x_{t-1}``, and once it is below the target the window stops: no more network passes,
and the rest of the path is held, i.e. run with the last clean estimate ``x0`` fixed and
no more noise. The last step's posterior mean is exactly ``x0`` (its coefficients are 1
and 0), so a held path ends at that ``x0``. A flat window has a target of 0 and runs
every step; a textured or noisy one may stop early. The decision depends only on the
window's pixels, where it lies (its noise) and the seed, like the rest of the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...pipeline.difficulty import immerkaer_sigma
from .arch import SR3Config, SR3UNet

#: ``noise(step) -> (1, channels, h, w)`` standard normal noise of the window.
NoiseField = Callable[[int], torch.Tensor]

#: ITU-R BT.601 luma weights: the grey image a colour window's noise is estimated on.
LUMA = (0.299, 0.587, 0.114)


def betas(cfg: SR3Config) -> np.ndarray:
    """The schedule's betas (float64); linear, as Diff2X configures it."""
    if cfg.schedule == "linear":
        return np.linspace(cfg.linear_start, cfg.linear_end, cfg.n_timestep, dtype=np.float64)
    if cfg.schedule == "quad":
        return np.linspace(cfg.linear_start ** 0.5, cfg.linear_end ** 0.5, cfg.n_timestep,
                           dtype=np.float64) ** 2
    if cfg.schedule == "const":
        return np.full(cfg.n_timestep, cfg.linear_end, dtype=np.float64)
    raise ValueError(f"beta schedule {cfg.schedule!r} is not supported (linear, quad, const)")


def kept_steps(total: int, steps: int) -> list[int]:
    """The timesteps (ascending) that ``steps`` of a ``total``-step schedule keep."""
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be between 1 and {total}, not {steps}")
    return sorted({round(i * (total - 1) / max(steps - 1, 1)) for i in range(steps)}
                  if steps > 1 else {total - 1})


def respaced(cfg: SR3Config, steps: int) -> tuple[list[int], np.ndarray]:
    """The kept timesteps and their cumulative alpha products."""
    alpha_bar = np.cumprod(1.0 - betas(cfg))
    kept = kept_steps(cfg.n_timestep, steps)
    return kept, alpha_bar[kept]


def noise_sigmas(image: torch.Tensor, own: tuple[int, int] | None = None) -> list[float]:
    """Immerkaer's noise estimate of each image of ``image`` (``(n, c, h, w)``), on its
    luma (the channel mean for other counts), over its first ``own = (h, w)`` pixels.

    Measured in float64 on the CPU: the stop decision must be a function of the
    tensor's values alone, not of the device's reduction order.
    """
    if own is not None:
        image = image[..., : own[0], : own[1]]
    values = image.detach().to("cpu", torch.float64)
    if values.shape[1] == 3:
        grey = LUMA[0] * values[:, 0] + LUMA[1] * values[:, 1] + LUMA[2] * values[:, 2]
    else:
        grey = values.mean(dim=1)
    return [immerkaer_sigma(g.numpy()) for g in grey]


@dataclass(frozen=True)
class Sampled:
    """A window's sample (``[-1, 1]``) and how many of the steps asked for it ran."""

    image: torch.Tensor
    steps_run: int
    steps: int


@torch.no_grad()
def sample_window(net: SR3UNet, condition: torch.Tensor, steps: int, noise: NoiseField,
                  early_stop: float = 0.0, own: tuple[int, int] | None = None) -> Sampled:
    """SR3's sample for ``condition`` (``(n, c, h, w)`` in ``[-1, 1]``), stopping early
    once every image's sample is less noisy than ``early_stop`` times its condition
    (0: never); ``own`` limits both estimates to the window's real pixels (the rest is
    edge padding)."""
    kept, alpha_bar = respaced(net.cfg, steps)
    targets = [early_stop * s for s in noise_sigmas(condition, own)] if early_stop > 0 else []
    x = noise(net.cfg.n_timestep)
    run = 0
    for i in reversed(range(len(kept))):
        ab = float(alpha_bar[i])
        ab_prev = float(alpha_bar[i - 1]) if i > 0 else 1.0
        beta = 1.0 - ab / ab_prev
        level = torch.full((x.shape[0],), ab ** 0.5, dtype=x.dtype, device=x.device)
        eps = net(torch.cat([condition, x], dim=1), level)
        run += 1
        x0 = ((x - (1.0 - ab) ** 0.5 * eps) / ab ** 0.5).clamp(-1.0, 1.0)
        mean = (beta * ab_prev ** 0.5 / (1.0 - ab)) * x0 \
            + ((1.0 - ab_prev) * (1.0 - beta) ** 0.5 / (1.0 - ab)) * x
        if i == 0:
            x = mean
            break
        variance = max(beta * (1.0 - ab_prev) / (1.0 - ab), 1e-20)
        x = mean + variance ** 0.5 * noise(kept[i])
        # Diff2X measures the new sample, its fresh noise included: a window is done once
        # that is smoother than what it is conditioned on. A flat condition's target is 0,
        # which no sample goes below, so flat windows run every step.
        if targets and all(s < t for s, t in zip(noise_sigmas(x, own), targets, strict=True)):
            # The held path's last posterior mean is x0 itself: return it, no more passes.
            x = x0
            break
    return Sampled(x, run, len(kept))


def sample(net: SR3UNet, condition: torch.Tensor, steps: int, noise: NoiseField) -> torch.Tensor:
    """SR3's sample for ``condition`` (``(n, c, h, w)`` in ``[-1, 1]``), in ``[-1, 1]``,
    with every step asked for."""
    return sample_window(net, condition, steps, noise).image
