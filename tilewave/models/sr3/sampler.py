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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .arch import SR3Config, SR3UNet

#: ``noise(step) -> (1, channels, h, w)`` standard normal noise of the window.
NoiseField = Callable[[int], torch.Tensor]


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


@torch.no_grad()
def sample(net: SR3UNet, condition: torch.Tensor, steps: int, noise: NoiseField) -> torch.Tensor:
    """SR3's sample for ``condition`` (``(n, c, h, w)`` in ``[-1, 1]``), in ``[-1, 1]``."""
    kept, alpha_bar = respaced(net.cfg, steps)
    x = noise(net.cfg.n_timestep)
    for i in reversed(range(len(kept))):
        ab = float(alpha_bar[i])
        ab_prev = float(alpha_bar[i - 1]) if i > 0 else 1.0
        beta = 1.0 - ab / ab_prev
        level = torch.full((x.shape[0],), ab ** 0.5, dtype=x.dtype, device=x.device)
        eps = net(torch.cat([condition, x], dim=1), level)
        x0 = ((x - (1.0 - ab) ** 0.5 * eps) / ab ** 0.5).clamp(-1.0, 1.0)
        mean = (beta * ab_prev ** 0.5 / (1.0 - ab)) * x0 \
            + ((1.0 - ab_prev) * (1.0 - beta) ** 0.5 / (1.0 - ab)) * x
        if i == 0:
            x = mean
            break
        variance = max(beta * (1.0 - ab_prev) / (1.0 - ab), 1e-20)
        x = mean + variance ** 0.5 * noise(kept[i])
    return x
