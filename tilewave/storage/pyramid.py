"""Pyramid levels of an OME-Zarr output.

A job computes them chunk by chunk as part of its tile DAG
(:mod:`tilewave.pipeline.pyramid_plan`), each chunk by :func:`downsample_window` on a
worker, into arrays :func:`tilewave.storage.ome.create_levels` made.

Each level averages 2 x 2 blocks of the one before (the last row and column are repeated
where a size is odd) and is rounded back to the image's dtype, so 16-bit data stays
16-bit. Levels are added until the longest side is at most
:data:`tilewave.storage.ome.SMALLEST` pixels.
"""

from __future__ import annotations

import numpy as np

from .nodata import nodata_mask


def _halve(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    c, h, w = block.shape
    return _rounded(block.reshape(c, h // 2, 2, w // 2, 2).astype(np.float32).mean(axis=(2, 4)), dtype)


def _rounded(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Means back in ``dtype``: rounded and clipped for integers."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(dtype)
    return mean.astype(dtype)


def downsample_window(pixels: np.ndarray, height: int, width: int,
                      nodata: float | None = None) -> np.ndarray:
    """``height`` x ``width`` pixels averaging 2 x 2 blocks of ``(c, h, w)`` ``pixels``,
    whose last row or column (an image's odd edge) is repeated where ``h`` or ``w`` falls
    one short of twice the output. With ``nodata``, a block averages its valid pixels
    only, and is nodata where all four are."""
    c, h, w = pixels.shape
    pad_y, pad_x = 2 * height - h, 2 * width - w
    if pad_y not in (0, 1) or pad_x not in (0, 1):
        raise ValueError(f"{h} x {w} pixels do not halve to {height} x {width}")
    if pad_y or pad_x:
        pixels = np.pad(pixels, ((0, 0), (0, pad_y), (0, pad_x)), mode="edge")
    mask = nodata_mask(pixels, nodata)
    if mask is None or nodata is None:
        return _halve(pixels, pixels.dtype)
    return _halve_valid(pixels, mask, nodata)


def _halve_valid(block: np.ndarray, mask: np.ndarray, nodata: float) -> np.ndarray:
    """2 x 2 means over the pixels ``mask`` does not mark; ``nodata`` where it marks all."""
    c, h, w = block.shape
    valid = (~mask).reshape(1, h // 2, 2, w // 2, 2).astype(np.float32)
    values = np.where(mask[None], 0, block).astype(np.float32).reshape(c, h // 2, 2, w // 2, 2)
    count = valid.sum(axis=(2, 4))
    mean = (values * valid).sum(axis=(2, 4)) / np.maximum(count, 1)
    out = _rounded(mean, block.dtype)
    out[:, count[0] == 0] = np.asarray(nodata).astype(block.dtype)
    return out
