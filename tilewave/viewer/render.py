"""Tiles to PNG: 8-bit RGB as it is, other images stretched once for the whole view."""

from __future__ import annotations

import io

import numpy as np


class Stretch:
    """Maps pixel values to 0-255 with one linear stretch shared by both sides of the
    view: none for 8-bit images, else from the 0.5th to the 99.5th percentile of a
    sample (the output's smallest level), so that a 16-bit scene is not black."""

    def __init__(self, sample: np.ndarray, nodata: float | None = None):
        self.identity = sample.dtype == np.uint8
        values = sample.astype(np.float64)
        # Unwritten chunks (0) of a running job and nodata are not the image's range.
        valid = values[np.isfinite(values) & (values != 0)
                       & (values != (np.nan if nodata is None else nodata))]
        if self.identity:
            self.low, self.high = 0.0, 255.0
        elif valid.size == 0:  # nothing written yet: the type's range
            top = float(np.iinfo(sample.dtype).max) if sample.dtype.kind in "ui" else 1.0
            self.low, self.high = 0.0, top
        else:
            self.low, self.high = float(np.percentile(valid, 0.5)), float(np.percentile(valid, 99.5))
        if self.high <= self.low:
            self.high = self.low + 1

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.identity:
            return pixels
        scaled = (pixels.astype(np.float64) - self.low) / (self.high - self.low) * 255
        return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray, stretch: Stretch) -> bytes:
    """``(c, h, w)`` pixels as PNG bytes (grey for one channel, the first three for more)."""
    from PIL import Image

    data = stretch(pixels)
    c = data.shape[0]
    image = (Image.fromarray(data[0], "L") if c < 3
             else Image.fromarray(np.ascontiguousarray(np.moveaxis(data[:3], 0, -1)), "RGB"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
