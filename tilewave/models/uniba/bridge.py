"""``uniba-diff``: the UniBA transformer as a multi-step bridge sampler.

The sampler walks a Brownian bridge from the bicubic image (``t = 0``) to the
high-resolution image (``t = 1``)::

    x_t = bicubic + t * (HR - bicubic) + sigma * sqrt(t * (1 - t)) * eps

At each of ``K`` steps the network sees the current state ``x_t`` and predicts the
residual ``HR - bicubic``; the state then moves to the next time by the bridge's own
conditional law given that prediction (mean on the line towards it, variance
``sigma^2 (u - t)(1 - u)/(1 - t)``), so the last step lands on the prediction. With
``sigma = 0`` the walk is deterministic; ``K = 1`` is exactly a one-step model.

What keeps it tileable in one raster pass, as in Inf-DiT (Yang et al. 2024): the time
and ``sigma`` enter only through adaptive norms (global scalars, the same for every
tile), and the state ``x_t`` enters only through block-local operations (a patch
embedding into each token, a per-pixel input to the head). Everything that crosses
blocks is the UniBA attention, which looks only left and up; so a tile runs all ``K``
steps at once, reading its left, top and top-left neighbours' keys and values *of the
same step*, and hands on its own for every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..base import OUTBOUND
from .arch import Encoded, UniBANet, _blocks
from .config import UniBAConfig

#: The largest ``sigma`` (in unit-space pixel values) the network is trained for.
NOISE_MAX = 0.1
#: Sine/cosine frequencies per conditioning scalar.
_FREQUENCIES = 8
#: Typical standard deviation of ``HR - bicubic`` at x2 in unit space (0.015 to 0.06 on
#: scikit-image's training photos).
_RESIDUAL_STD = 0.03

#: Gives the noise of step ``k`` for the tile, in its output pixels.
Noise = Callable[[int], torch.Tensor]


class UniBADiffNet(UniBANet):
    """The UniBA network plus what a multi-step sampler needs: a conditioning on
    ``(t, sigma)`` through adaptive norms, and the current estimate as an input.

    Every added layer starts at zero, so a network warm-started from a one-step
    ``uniba-x2`` checkpoint computes exactly what that checkpoint did, at every step.
    """

    #: Prefixes of the parameters a one-step checkpoint lacks.
    ADDED = ("cond.", "ada.", "estimate_tokens.", "estimate_pixels.")

    def __init__(self, cfg: UniBAConfig):
        super().__init__(cfg)
        d, c, p, s = cfg.dim, cfg.channels, cfg.patch, cfg.scale
        self.cond = nn.Sequential(nn.Linear(4 * _FREQUENCIES, d), nn.SiLU(), nn.Linear(d, d))
        self.ada = nn.ModuleList([nn.Linear(d, 4 * d) for _ in range(cfg.layers)])
        self.estimate_tokens = nn.Conv2d(c, d, p * s, stride=p * s)  # within a token's patch
        self.estimate_pixels = nn.Conv2d(c * s * s, d, 1)  # within one input pixel's outputs
        for layer in [*self.ada, self.estimate_tokens, self.estimate_pixels]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def conditioning(self, t: float, sigma: float) -> list[torch.Tensor]:
        """Per layer, the ``(4, d)`` shifts and scales of its two norms at ``(t, sigma)``."""
        ref = cast(nn.Linear, self.cond[0]).weight
        v = torch.tensor([t, sigma / NOISE_MAX], dtype=ref.dtype, device=ref.device)
        freqs = (2.0 ** torch.arange(_FREQUENCIES, dtype=ref.dtype, device=ref.device)) * math.pi
        angles = (v[:, None] * freqs).flatten()
        c = F.silu(self.cond(torch.cat([angles.sin(), angles.cos()])))
        return [ada(c).view(4, -1) for ada in self.ada]

    def predict(self, enc: Encoded, estimate: torch.Tensor, t: float, sigma: float,
                contexts: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The residual over bicubic predicted from the state ``bicubic + estimate`` at
        ``t``, and this step's outgoing keys and values."""
        e = estimate * _input_gain(t, sigma)
        x = enc.tokens + _blocks(self.estimate_tokens(e), self.cfg.tokens_per_side)
        x, ctx = self.transform(enc, x, contexts, self.conditioning(t, sigma))
        extra = self.estimate_pixels(F.pixel_unshuffle(e, self.cfg.scale))
        return self.residual(enc, x, extra), ctx


def _input_gain(t: float, sigma: float) -> float:
    """What brings the state's residual ``t (HR - bicubic) + sigma sqrt(t (1 - t)) eps``
    to about unit scale at every ``t`` and ``sigma`` (as EDM's input scaling does), so
    the network need not learn to divide by ``t``. At ``t = 0`` the residual is zero."""
    variance = (t * _RESIDUAL_STD) ** 2 + sigma**2 * t * (1.0 - t)
    return 0.0 if variance <= 0 else 1.0 / math.sqrt(variance)


def bridge_step(x: torch.Tensor, target: torch.Tensor, t: float, u: float, sigma: float,
                noise: torch.Tensor | None) -> torch.Tensor:
    """Move the state from time ``t`` to ``u``, given the predicted endpoint ``target``."""
    if u >= 1.0:
        return target
    x = x + (u - t) / (1.0 - t) * (target - x)
    if sigma > 0 and noise is not None:
        x = x + sigma * math.sqrt((u - t) * (1.0 - u) / (1.0 - t)) * noise
    return x


def sample_step(net: UniBADiffNet, enc: Encoded, x: torch.Tensor, step: int, steps: int,
                contexts: dict[str, Any], sigma: float, noise: Noise | None
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Step ``step`` of ``steps`` from the state ``x`` (the tile's current image):
    the next state, and this step's outgoing keys and values by direction.

    ``contexts`` maps ``left``/``top``/``top_left`` to that neighbour's per-layer keys
    and values *of this step* (absent or None: treated as outside the image).
    """
    t, u = step / steps, (step + 1) / steps
    step_in = {d: v for d, v in contexts.items() if v is not None}
    residual, step_out = net.predict(enc, x - enc.base, t, sigma, step_in)
    eps = noise(step) if sigma > 0 and u < 1.0 and noise is not None else None
    return bridge_step(x, enc.base + residual, t, u, sigma, eps), step_out


def sample_tile(net: UniBADiffNet, window: torch.Tensor, origin: tuple[int, int],
                contexts: dict[str, Any], steps: int, sigma: float, noise: Noise | None
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run all ``steps`` sampler steps on one tile (see :meth:`UniBANet.forward_tile` for
    ``window`` and ``origin``).

    ``contexts`` maps ``left``/``top``/``top_left`` to that neighbour's per-step list of
    per-layer keys and values (a step's entry may be None: that neighbour is treated as
    absent at that step). Returns the output and, per outbound direction, the list over
    steps of this tile's per-layer keys and values.
    """
    enc = net.encode(window, origin)
    x = enc.base
    outbound: dict[str, Any] = {d: [] for d in OUTBOUND}
    for k in range(steps):
        step_in = {d: v[k] for d, v in contexts.items() if v is not None}
        x, step_out = sample_step(net, enc, x, k, steps, step_in, sigma, noise)
        for d, value in step_out.items():
            outbound[d].append(value)
    return x, outbound
