"""Bicubic upscaling: torch's bicubic (Keys, a = -0.75, half-pixel centres, replicated
border), written as fixed per-phase weighted sums.

For an integer scale ``s`` every output pixel falls on one of ``s`` phases, and each phase
has four fixed weights. Computing the sums with element-wise tensor operations in a fixed
order makes every output pixel depend only on its 4 x 4 input neighbourhood and not on
the size of the tensor it was computed in, so a tiled run equals a whole-image run bit
for bit. ``torch.nn.functional.interpolate`` gives the same values to within float
rounding, but its rounding depends on the absolute position, so tiles would differ from
the whole image in the last bit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import ImageModel, ModelDescriptor
from .entry import ModelEntry

if TYPE_CHECKING:
    import torch

_A = -0.75  # torch's (and OpenCV's) cubic convolution coefficient


def _cubic(d: float) -> float:
    d = abs(d)
    if d <= 1:
        return ((_A + 2) * d - (_A + 3)) * d * d + 1
    if d < 2:
        return ((_A * d - 5 * _A) * d + 8 * _A) * d - 4 * _A
    return 0.0


def phase_taps(scale: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    """For each output phase, the offset of its first input tap and its four weights."""
    taps = []
    for p in range(scale):
        src = (p + 0.5) / scale - 0.5
        base = math.floor(src)
        t = src - base
        taps.append((base - 1, (_cubic(1 + t), _cubic(t), _cubic(1 - t), _cubic(2 - t))))
    return taps


def _upscale_last_axis(x: torch.Tensor, scale: int) -> torch.Tensor:
    import torch  # here, not at the top: listing the models must not import torch
    import torch.nn.functional as F

    # Replicate 2 pixels each side: the widest tap reaches 2 pixels past the edge.
    n = x.shape[-1]
    xp = F.pad(x.reshape(-1, 1, n), (2, 2), mode="replicate").reshape(*x.shape[:-1], n + 4)
    phases = []
    for first, weights in phase_taps(scale):
        acc = None
        for j, w in enumerate(weights):
            start = first + j + 2
            term = xp[..., start : start + n] * w
            acc = term if acc is None else acc + term
        assert acc is not None  # every phase has four taps
        phases.append(acc)
    return torch.stack(phases, dim=-1).reshape(*x.shape[:-1], n * scale)


def bicubic_upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Upscale the last two axes of ``x`` by the integer ``scale``."""
    if scale == 1:
        return x.clone()
    out = _upscale_last_axis(x, scale)
    return _upscale_last_axis(out.transpose(-1, -2), scale).transpose(-1, -2).contiguous()


def describe(scale: int = 2) -> ModelDescriptor:
    """Bicubic's descriptor at ``scale``: exact in ``halo`` mode with a halo of 2."""
    return ModelDescriptor(
        name="bicubic",
        scale=scale,
        modes=("halo", "blend"),
        halo=2,
        supports_half=False,
        description="bicubic interpolation (torch's kernel, replicated border), any integer scale",
    )


class Bicubic(ImageModel):
    """Bicubic interpolation at any integer scale; exact in ``halo`` mode with a halo of 2."""

    def __init__(self, scale: int = 2):
        self.descriptor = describe(scale)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upscale(x, self.descriptor.scale)


def entries() -> list[ModelEntry]:
    return [ModelEntry("bicubic", Bicubic, scales=None, default_scale=2,
                       summary="bicubic interpolation, any integer scale", describe=describe)]
