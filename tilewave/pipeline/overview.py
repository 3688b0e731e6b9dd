"""A small view of a whole image, read window by window: what a model conditioned on the
whole input (Inf-DiT's CLIP embedding) is shown. Memory holds one window and the view,
never the image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..storage.nodata import nodata_mask
from .upscale_window import unit_scale

#: Reads ``(c, h, w)`` pixels of the window ``y0, y1, x0, x1``.
ReadWindow = Callable[[int, int, int, int], np.ndarray]


def overview(read: ReadWindow, height: int, width: int, short_side: int,
             window: int = 2048, nodata: float | None = None) -> np.ndarray:
    """The image box-averaged by the largest whole factor that leaves its short side at
    least ``short_side`` pixels (the last rows and columns short of a whole box left
    out), as ``(c, h, w)`` float32 in unit space. Read in windows of about ``window``
    pixels on a side. Pixels equal to ``nodata`` are left out of every average (a box
    of nothing but nodata is 0), as the model never sees them either."""
    factor = max(1, min(height, width) // max(1, short_side))
    oh, ow = height // factor, width // factor
    step = max(factor, window // factor * factor)
    out: np.ndarray | None = None
    for y0 in range(0, oh * factor, step):
        for x0 in range(0, ow * factor, step):
            y1, x1 = min(y0 + step, oh * factor), min(x0 + step, ow * factor)
            pixels = read(y0, y1, x0, x1)
            block = pixels.astype(np.float32) / np.float32(unit_scale(pixels.dtype))
            c = block.shape[0]
            if out is None:
                out = np.zeros((c, oh, ow), np.float32)
            shape = (c, (y1 - y0) // factor, factor, (x1 - x0) // factor, factor)
            mask = nodata_mask(pixels, nodata)
            if mask is None:
                mean = block.reshape(shape).mean((2, 4))
            else:
                valid = ~mask[None]
                weights = np.broadcast_to(valid, block.shape).reshape(shape).sum((2, 4))
                sums = np.where(valid, block, 0).reshape(shape).sum((2, 4))
                mean = np.divide(sums, weights, out=np.zeros_like(sums), where=weights > 0)
            out[:, y0 // factor : y1 // factor, x0 // factor : x1 // factor] = mean
    assert out is not None  # an image has at least one pixel
    return out
