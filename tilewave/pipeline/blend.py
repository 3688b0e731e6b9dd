"""Feathering overlapping tile predictions in ``blend`` mode.

Each tile predicts its core grown by the overlap into its right and lower neighbours.
It keeps its core and hands the parts that fall on its neighbours' cores to them as
contexts (``right``, ``below``, ``below_right`` strips). The owner of a pixel blends its
own prediction with the strips it received, with separable complementary ramps: along x,
the left neighbour's weight is ``1 - r`` where the owner's is ``r``, and likewise along
y, so the weights of all predictions covering a pixel sum to one and every output pixel
is written once, by its owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from .directions import Direction
from .grid import Tile

Ramp = Literal["linear", "cosine"]
RAMPS: tuple[Ramp, ...] = ("linear", "cosine")


def ramp(length: int, kind: Ramp) -> np.ndarray:
    """Weights rising from near 0 to near 1 over ``length`` pixels (pixel centres)."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    if kind == "linear":
        return t.astype(np.float32)
    if kind == "cosine":
        return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
    raise ValueError(f"unknown ramp {kind!r}; choose one of {RAMPS}")


def split_prediction(
    scale: int, tile: Tile, prediction: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cut a tile's prediction (``(c, h, w)`` over ``tile.predicted`` in output pixels,
    ``scale`` times the input's) into its own core and the strips for its right, lower
    and lower-right neighbours."""
    s = scale
    y0, y1, x0, x1 = tile.core
    _, py1, _, px1 = tile.predicted
    h, w = (y1 - y0) * s, (x1 - x0) * s
    core = prediction[:, :h, :w]
    strips: dict[str, np.ndarray] = {}
    if px1 > x1:
        strips[Direction.RIGHT] = prediction[:, :h, w:]
    if py1 > y1:
        strips[Direction.BELOW] = prediction[:, h:, :w]
    if px1 > x1 and py1 > y1:
        strips[Direction.BELOW_RIGHT] = prediction[:, h:, w:]
    return core, strips


def blend_core(
    core: np.ndarray,
    inbound: Mapping[str, np.ndarray | None],
    kind: Ramp,
) -> np.ndarray:
    """Blend a tile's own core prediction with the strips its neighbours sent."""
    left, top, corner = inbound.get(Direction.LEFT), inbound.get(Direction.TOP), inbound.get(Direction.TOP_LEFT)
    c, h, w = core.shape
    # Ramp lengths come from the strips themselves: a strip is shorter than the overlap
    # only where the image edge clipped it, and sender and receiver then agree.
    wx = np.ones(w, np.float32)
    wy = np.ones(h, np.float32)
    rx = ramp(left.shape[2], kind) if left is not None else None
    ry = ramp(top.shape[1], kind) if top is not None else None
    if rx is not None:
        wx[: rx.size] = rx
    if ry is not None:
        wy[: ry.size] = ry
    acc = core.astype(np.float32) * (wy[:, None] * wx[None, :])
    total = wy[:, None] * wx[None, :]
    if left is not None:
        assert rx is not None  # made whenever the left strip is there
        lw = wy[:, None] * (1 - rx)[None, :]
        acc[:, :, : rx.size] += left * lw
        total[:, : rx.size] += lw
    if top is not None:
        assert ry is not None  # made whenever the top strip is there
        tw = (1 - ry)[:, None] * wx[None, :]
        acc[:, : ry.size, :] += top * tw
        total[: ry.size, :] += tw
    if corner is not None:
        # The top-left neighbour sends a corner only where the left and top ones send strips.
        assert rx is not None and ry is not None
        cw = (1 - ry)[:, None] * (1 - rx)[None, :]
        acc[:, : ry.size, : rx.size] += corner * cw
        total[: ry.size, : rx.size] += cw
    return acc / total
