"""Measuring how far a model looks, to choose the halo that makes tiling exact.

Two measurements, both on the model's own forward function:

* :func:`impulse_reach`: add an impulse to one input pixel and find the farthest input
  distance at which any output moves by more than a tolerance. With a tolerance of zero
  this is the receptive field itself (for a plain CNN: the number of chained 3x3
  convolutions); with a tolerance it is how far the model's influence *effectively*
  reaches.
* :func:`tiling_error`: what ``halo`` tiling actually does. Run a tile's window (the tile
  grown by ``halo`` pixels, so the network zero-pads at the cut) and compare its core
  with the same pixels of whole-image inference. The halo a model ships with is the
  smallest one whose error stays below half a uint8 step on real and adversarial images,
  so that rounding can move a pixel by at most one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .base import Forward


def _distance_map(height: int, width: int, scale: int, cy: int, cx: int) -> np.ndarray:
    """For each output pixel, the Chebyshev distance of its input pixel from (cy, cx)."""
    iy = np.arange(height * scale) // scale
    ix = np.arange(width * scale) // scale
    return np.maximum(np.abs(iy - cy)[:, None], np.abs(ix - cx)[None, :])


def impulse_reach(forward: Forward, scale: int, size: int = 96, tolerance: float = 0.0,
                  background: np.ndarray | None = None, dtype: torch.dtype = torch.float32) -> int:
    """The farthest input distance (pixels) at which an impulse moves an output by > tolerance.

    ``background`` is a ``(3, size, size)`` image in [0, 1] to put the impulse on (dark
    grey by default); the impulse flips the centre pixel to ``1 - value``. The impulse sits at the centre; ``size`` must exceed twice the reach
    for the answer to be a measurement rather than a lower bound. Measure the exact field in
    float64 (``dtype`` and the model's weights), where rounding noise cannot pass for reach.
    """
    base = (torch.full((1, 3, size, size), 0.25) if background is None
            else torch.from_numpy(np.asarray(background, np.float32))[None])
    size = base.shape[-1]
    if base.shape[-2] != size:
        raise ValueError(f"background must be square, got {tuple(base.shape[-2:])}")
    c = size // 2
    poked = base.clone()
    poked[0, :, c, c] = 1.0 - poked[0, :, c, c]  # the largest change the range allows
    base, poked = base.to(dtype), poked.to(dtype)
    with torch.inference_mode():
        diff = (forward(poked) - forward(base)).abs().amax(dim=(0, 1)).cpu().numpy()
    moved = diff > tolerance
    if not moved.any():
        return 0
    return int(_distance_map(size, size, scale, c, c)[moved].max())


@dataclass(frozen=True)
class TilingError:
    halo: int
    max_abs: float  # in unit space: 1.0 is the full range


def tiling_error(forward: Forward, scale: int, images: Iterable[np.ndarray],
                 halos: Sequence[int], tile: int = 16) -> list[TilingError]:
    """Largest difference between halo-tiled and whole-image output, per halo.

    Each image (``(3, h, w)`` in [0, 1]) needs a border of ``max(halos)`` around a central
    ``tile``-sized core; the core's window is cut out, run alone, and its core compared.
    """
    worst = {h: 0.0 for h in halos}
    with torch.inference_mode():
        for image in images:
            x = torch.from_numpy(np.asarray(image, np.float32))[None]
            height, width = x.shape[-2:]
            y0, x0 = (height - tile) // 2, (width - tile) // 2
            if min(y0, x0) < max(halos):
                raise ValueError(f"image {height}x{width} too small for tile {tile} "
                                 f"and halo {max(halos)}")
            whole = forward(x)[..., y0 * scale:(y0 + tile) * scale, x0 * scale:(x0 + tile) * scale]
            for h in halos:
                window = x[..., y0 - h:y0 + tile + h, x0 - h:x0 + tile + h]
                out = forward(window)[..., h * scale:(h + tile) * scale, h * scale:(h + tile) * scale]
                worst[h] = max(worst[h], float((out - whole).abs().max()))
    return [TilingError(h, worst[h]) for h in halos]


def smallest_sufficient_halo(errors: Sequence[TilingError], tolerance: float = 0.5 / 255) -> int | None:
    """The smallest measured halo from which on every larger one stays within ``tolerance``
    (None if even the largest does not)."""
    chosen = None
    for err in sorted(errors, key=lambda e: e.halo, reverse=True):
        if err.max_abs > tolerance:
            break
        chosen = err.halo
    return chosen
