"""Nodata pixels: kept out of the model's view, and exactly nodata in the output.

A pixel is nodata when every channel equals the nodata value (``--nodata``, or the
input's GDAL nodata tag; NaN matches NaN). Before the model runs, the window's nodata
pixels take the value of the nearest valid pixel in the window, so that the model sees
the scene continue rather than a cliff to the fill value (which would ring into the
valid pixels beside it and turn the empty area into data). After it runs, every output
pixel whose input pixel was nodata is set to the nodata value exactly.
"""

from __future__ import annotations

import math

import numpy as np


def nodata_mask(pixels: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """``(h, w)`` True where ``pixels`` (``(c, h, w)``) are nodata; None where none are."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        mask = np.isnan(pixels).all(axis=0) if pixels.dtype.kind == "f" else None
    else:
        mask = (pixels == np.asarray(nodata).astype(pixels.dtype)).all(axis=0)
    return mask if mask is not None and mask.any() else None


def fill_nodata(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``pixels`` with each masked pixel set to its nearest unmasked pixel (all masked:
    zeros, the model's output there is replaced anyway)."""
    if mask.all():
        return np.zeros_like(pixels)
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(mask, return_distances=True, return_indices=True)
    return pixels[:, iy, ix]


def restore_nodata(output: np.ndarray, mask: np.ndarray, scale: int, nodata: float) -> np.ndarray:
    """``output`` (``(c, h * scale, w * scale)``) with the pixels over ``mask`` (``(h, w)``,
    the input under it) set to ``nodata``."""
    big = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
    out = output.copy()
    out[:, big] = np.asarray(nodata).astype(output.dtype)
    return out
