"""Inf-DiT's sampler: Heun's method on the EDM probability-flow ODE, with EDM's
preconditioning (Karras et al., NeurIPS 2022), as the release samples.

- Noise levels: ``n`` steps of EDM's schedule from ``sigma_max = 40`` to ``sigma_min =
  0.002`` with ``rho = 7``, then 0 (the release's configuration: 20 steps);
- start: the bicubic-upsampled input plus ``sigma_0`` times standard normal noise (the
  release's ``--init_noise``); the only noise drawn, keyed by position
  (:func:`~tilewave.models.position_noise.position_noise`, step key 0), never a stream;
- step ``i``: ``d = (x - D(x; s_i)) / s_i``, Euler to ``s_{i+1}``, then Heun's correction
  with a second evaluation at ``s_{i+1}``, except for the last step (to 0), which is
  Euler alone: 2 evaluations a step, 1 for the last (39 for 20 steps);
- ``D(x; s) = c_skip x + c_out F(c_in [x, lr_up]; c_noise)`` with ``sigma_data = 0.5``
  and ``c_noise = ln(s) / 4``; the upsampled input is scaled by ``c_in`` with ``x``.

No churn (the release's ``s_churn`` is 0), so the path is deterministic after the start.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 40.0
RHO = 7.0
SIGMA_DATA = 0.5
#: The release's step count.
STEPS = 20


def sigmas(steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``steps + 1`` noise levels, the last 0, computed as the release computes them
    (float32, then the model's dtype)."""
    ramp = torch.linspace(0, 1, steps)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    levels = (hi + ramp * (lo - hi)) ** RHO
    return torch.cat([levels, levels.new_zeros(1)]).to(dtype)


def precondition(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's ``c_skip, c_out, c_in, c_noise`` for the noise level ``sigma`` (a 1-element tensor)."""
    c_skip = SIGMA_DATA ** 2 / (sigma ** 2 + SIGMA_DATA ** 2)
    c_out = sigma * SIGMA_DATA / (sigma ** 2 + SIGMA_DATA ** 2) ** 0.5
    c_in = 1 / (sigma ** 2 + SIGMA_DATA ** 2) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


#: ``denoise(x, sigma, evaluation)``: the denoiser's estimate of the clean image at one
#: of a step's evaluations (0: at the step's level, 1: Heun's correction).
Denoise = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def evaluations(levels: torch.Tensor, step: int) -> int:
    """How many network evaluations step ``step`` takes: 2, or 1 for the step to 0."""
    return 1 if float(levels[step + 1]) == 0.0 else 2


def heun_step(x: torch.Tensor, levels: torch.Tensor, step: int, denoise: Denoise) -> torch.Tensor:
    """One step from ``levels[step]`` to ``levels[step + 1]``, in the release's order of
    operations (so that a tile's arithmetic is the whole image's)."""
    sigma, following = levels[step:step + 1], levels[step + 1:step + 2]
    d = (x - denoise(x, sigma, 0)) / sigma
    dt = following - sigma
    euler = x + dt * d
    if evaluations(levels, step) == 1:
        return euler
    d_new = (euler - denoise(euler, following, 1)) / following
    return x + (d + d_new) / 2.0 * dt
