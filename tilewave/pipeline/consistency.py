"""``--consistent``: an output whose box downsample is the input.

A model's output ``y`` of an input ``x`` at scale ``s`` is *consistent* when the mean of
every ``s`` x ``s`` block of ``y`` is the input pixel under it. Super-resolution networks
trained on photos are not: SPAN adds a small offset to every pixel (+17 to +25 DN on a
16-bit Landsat scene), and on a JPEG-compressed input any model drifts from what was
measured. The correction is residual back-projection (Irani and Peleg, 1991):

1. ``ITERATIONS`` times, the residual ``x - box(y)`` (one value per input pixel) is
   upscaled with tilewave's bicubic and added to ``y``: a smooth correction;
2. then the least change that makes every block's mean exact: each block gets what its
   mean still lacks, spread evenly (where that would leave the dtype's range, the block
   is shifted by the one amount that, after clipping, gives it the right mean);
3. integer outputs are rounded so that every block's sum is ``s * s`` times its input
   pixel exactly: each pixel is rounded down and the block's remainder goes, one unit
   each, to the pixels with the largest fractions. Float outputs are left unrounded.

Step 2 alone is exact but leaves a faint ``s``-pixel checkerboard wherever the residual
varies from pixel to pixel; step 1 removes most of it first (measured in docs/scans.md).

A corrected pixel depends on the model's output and the input within ``MARGIN`` input
pixels (each bicubic pass reaches 2 pixels). That is more than one tile sees of its
neighbours' final output in ``context`` and ``blend`` mode, so the correction runs as a
stage of its own after the model (:class:`BackProjection`, in ``halo`` mode, its halo
the margin): it reads the model's output, already complete, and the input, and is exact
under tiling like every halo model: tiled equals the whole image bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.base import ModelDescriptor, TileRequest, TileResult

if TYPE_CHECKING:
    import torch

#: Smooth back-projection passes before the exact step (two already give what five do).
ITERATIONS = 2
#: Input pixels around a block that its corrected value depends on.
MARGIN = 2 * ITERATIONS + 2
#: Halvings of the search for a clipped block's shift: its error is then far below the
#: rounding that follows.
BISECTIONS = 60
#: The name the correction stage runs under (in progress lines and the job's stages).
NAME = "back-projection"


def _blocks(values: np.ndarray, s: int) -> np.ndarray:
    """``(c, h*s, w*s)`` as ``(c, h, w, s*s)``: each block's pixels on the last axis."""
    c, hh, ww = values.shape
    return values.reshape(c, hh // s, s, ww // s, s).transpose(0, 1, 3, 2, 4).reshape(c, hh // s, ww // s, s * s)


def _unblocks(blocks: np.ndarray, s: int) -> np.ndarray:
    c, h, w, _ = blocks.shape
    return blocks.reshape(c, h, w, s, s).transpose(0, 1, 3, 2, 4).reshape(c, h * s, w * s)


def _fit_in_range(blocks: np.ndarray, target: np.ndarray, top: float) -> np.ndarray:
    """Blocks with pixels past ``[0, top]``: each shifted by the one amount ``t`` for which
    ``clip(block + t)`` has mean ``target``, the nearest such block to the unclipped one
    (the projection onto the range and the block's mean together). Found by bisection,
    since that mean rises monotonically with ``t``."""
    out = np.clip(blocks, 0.0, top)
    bad = ((blocks < 0) | (blocks > top)).any(axis=-1)
    if not bad.any():
        return out
    v, goal = blocks[bad], np.clip(target[bad], 0.0, top)
    lo, hi = -v.max(axis=-1) - 1.0, top - v.min(axis=-1) + 1.0
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        low = np.clip(v + mid[:, None], 0.0, top).mean(axis=-1) < goal
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    out[bad] = np.clip(v + (0.5 * (lo + hi))[:, None], 0.0, top)
    return out


def _round_exactly(blocks: np.ndarray, target: np.ndarray, top: float) -> np.ndarray:
    """Integers whose block sums are ``target * n`` where the range allows: floors, and
    the remainder as +1s on the largest fractions (never past ``top``)."""
    n = blocks.shape[-1]
    floors = np.floor(blocks)
    want = np.rint(target * n) - floors.sum(axis=-1)  # whole units still to place
    fractions = np.where(floors < top, blocks - floors, -1.0)
    # Each pixel's place when its block's fractions are sorted, largest first.
    rank = np.argsort(np.argsort(-fractions, axis=-1, kind="stable"), axis=-1, kind="stable")
    bump = (rank < want[..., None]) & (floors < top)
    return np.clip(floors + bump, 0, top)


def _box(values: np.ndarray, s: int) -> np.ndarray:
    return _blocks(values, s).mean(axis=-1)


def project(values: np.ndarray, source: np.ndarray, scale: int, dtype: np.dtype) -> np.ndarray:
    """Steps 2 and 3: ``values`` (``(c, h*s, w*s)``, float, in ``dtype``'s units) with the
    least change that makes every block's mean ``source`` (``(c, h, w)``), in ``dtype``."""
    dtype = np.dtype(dtype)
    target = np.asarray(source, np.float64)
    blocks = _blocks(np.asarray(values, np.float64), scale)
    blocks = blocks + (target - blocks.mean(axis=-1))[..., None]
    if not np.issubdtype(dtype, np.integer):
        return _unblocks(blocks, scale).astype(dtype)
    top = float(np.iinfo(dtype).max)
    blocks = _fit_in_range(blocks, target, top)
    return _unblocks(_round_exactly(blocks, target, top), scale).astype(dtype)


def back_project(output: np.ndarray, source: np.ndarray, scale: int,
                 iterations: int = ITERATIONS) -> np.ndarray:
    """The model's ``output`` (``(c, h*s, w*s)``, in the input's dtype) corrected to be
    consistent with ``source`` (``(c, h, w)``): steps 1 to 3 of the module. Exact only
    ``MARGIN`` input pixels inside the edges of a window cut from a larger image."""
    import torch

    from ..models.bicubic import bicubic_upscale

    values = np.asarray(output, np.float64)
    target = np.asarray(source, np.float64)
    for _ in range(iterations):
        residual = torch.from_numpy(target - _box(values, scale))[None]
        values = values + bicubic_upscale(residual, scale)[0].numpy()
    return project(values, source, scale, output.dtype)


def reference_consistent(model: Any, pixels: np.ndarray) -> np.ndarray:
    """Whole-image upscaling of ``(c, h, w)`` pixels with ``--consistent``: what a tiled
    job must equal (the model's output, in the input's dtype, then corrected)."""
    from .upscale_window import reference_upscale

    return back_project(reference_upscale(model, pixels), pixels, model.descriptor.scale)


#: Reads ``(c, h, w)`` input pixels of a window ``(y0, y1, x0, x1)``.
ReadSource = Callable[[tuple[int, int, int, int]], np.ndarray]


class BackProjection:
    """The correction as a scale-1 :class:`~tilewave.models.base.TileModel` in ``halo``
    mode: its tiles are the model's output, its ``source`` the job's input at ``scale``
    times less, read (and filled where nodata) window by window."""

    def __init__(self, read_source: ReadSource, scale: int, nodata: float | None = None):
        self.read_source, self.scale, self.nodata = read_source, scale, nodata
        self.descriptor = describe(scale)

    def to(self, device: torch.device, half: bool = False) -> BackProjection:
        return self

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("back-projection needs to know where its window lies")

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        import torch

        from ..storage.nodata import fill_nodata, nodata_mask
        from .upscale_window import from_unit, unit_scale

        s = self.scale
        y0, y1, x0, x1 = request.window
        source = self.read_source((y0 // s, y1 // s, x0 // s, x1 // s))
        top = unit_scale(source.dtype)
        mask = nodata_mask(source, self.nodata)
        if mask is not None:  # as the model saw it: nearest valid pixels, not the fill value
            source = fill_nodata(source, mask)
        output = from_unit(x[0].float().cpu().numpy(), source.dtype)
        fixed = back_project(output, source, s)
        cy0, cy1, cx0, cx1 = request.core
        core = fixed[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(np.float32) / np.float32(top)
        return TileResult(torch.from_numpy(np.ascontiguousarray(core))[None])


def describe(scale: int) -> ModelDescriptor:
    """The correction stage's descriptor: scale 1, halo mode, its halo the margin."""
    return ModelDescriptor(name=NAME, scale=1, modes=("halo",), halo=MARGIN * scale,
                           channels=(1, 3, 4), positional=True,
                           description=f"back-projection onto the x{scale} input "
                                       f"({ITERATIONS} bicubic passes, then exact block means)")
