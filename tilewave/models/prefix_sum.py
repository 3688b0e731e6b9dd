"""A deterministic model that needs contexts, to prove the ``context`` scheduler.

Its output is the summed-area table of the input (the sum of every pixel above and to
the left, inclusive), upscaled by pixel repetition. A tile can only compute its sums
from the sums of its left column, top row and top-left corner of its neighbours, which
is exactly the left/top/top-left dependency pattern of a block-causal transformer, and
the whole-image answer is known in closed form. Sums are computed in float64, so on
integer-valued float inputs the tiled and whole-image answers are identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Direction, ModelDescriptor, TileRequest, TileResult
from .entry import ModelEntry

if TYPE_CHECKING:
    import torch


def _repeat(x: torch.Tensor, scale: int) -> torch.Tensor:
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def describe(scale: int = 2) -> ModelDescriptor:
    """The descriptor of the diagnostic at ``scale``."""
    return ModelDescriptor(
        name="prefix-sum",
        scale=scale,
        modes=("context",),
        halo=0,
        context_format="float64 tensors: right column, bottom row, bottom-right corner sums",
        description="diagnostic: summed-area table upscaled by repetition (tests the context mode)",
    )


class PrefixSum:
    """Summed-area table, upscaled by repetition; a diagnostic for the ``context`` mode."""

    def __init__(self, scale: int = 2):
        self.descriptor = describe(scale)

    def to(self, device: torch.device, half: bool = False) -> PrefixSum:
        return self

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        sums = x.double().cumsum(-1).cumsum(-2)
        return _repeat(sums, self.descriptor.scale).to(x.dtype)

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        sums = x.double().cumsum(-1).cumsum(-2)
        left, top, corner = (request.contexts.get(k) for k in (Direction.LEFT, Direction.TOP, Direction.TOP_LEFT))
        # Missing neighbours lie outside the image, where every sum is zero.
        if left is not None:
            sums = sums + left[..., :, None]
        if top is not None:
            sums = sums + top[..., None, :]
        if corner is not None:
            sums = sums - corner[..., None, None]
        contexts: dict[str, Any] = {
            Direction.RIGHT: sums[..., :, -1].clone(),
            Direction.BELOW: sums[..., -1, :].clone(),
            Direction.BELOW_RIGHT: sums[..., -1, -1].clone(),
        }
        return TileResult(_repeat(sums, self.descriptor.scale).to(x.dtype), contexts)


def entries() -> list[ModelEntry]:
    return [ModelEntry("prefix-sum", PrefixSum, scales=None, default_scale=2,
                       summary="diagnostic context-mode model", describe=describe, diagnostic=True)]
