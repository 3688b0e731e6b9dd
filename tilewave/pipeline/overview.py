"""A small view of a whole image, read window by window: what a model conditioned on the
whole input (Inf-DiT's CLIP embedding) is shown. Memory holds one window and the view,
never the image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .upscale_window import unit_scale

#: Reads ``(c, h, w)`` pixels of the window ``y0, y1, x0, x1``.
ReadWindow = Callable[[int, int, int, int], np.ndarray]


def overview(read: ReadWindow, height: int, width: int, short_side: int,
             window: int = 2048) -> np.ndarray:
    """The image box-averaged by the largest whole factor that leaves its short side at
    least ``short_side`` pixels (the last rows and columns short of a whole box left
    out), as ``(c, h, w)`` float32 in unit space. Read in windows of about ``window``
    pixels on a side."""
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
            boxes = block.reshape(c, (y1 - y0) // factor, factor, (x1 - x0) // factor, factor)
            out[:, y0 // factor : y1 // factor, x0 // factor : x1 // factor] = boxes.mean((2, 4))
    assert out is not None  # an image has at least one pixel
    return out
