"""How much a tile needs the model: a cheap estimate from its low-resolution pixels.

Whole-slide images are mostly glass, satellite scenes have nodata corners and open
water; upscaling those with a neural network costs as much as tissue and coastline and
gives nothing bicubic does not. Four measurements, all on the tile's luminance in [0, 1]:

``noise``
    Immerkaer's fast noise variance estimate (CVIU 64(2), 1996): the mean absolute
    response to the Laplacian-difference mask ``[[1,-2,1],[-2,4,-2],[1,-2,1]]``, scaled
    by ``sqrt(pi/2) / 6``. The mask cancels smooth structure, so what remains is noise.
``spread``
    The standard deviation of the tile. ``structure = sqrt(max(spread^2 - noise^2, 0))``
    is the variation that noise does not explain: edges, texture, detail. It is judged
    relative to the tile's mean level (``relative_structure``), because 16-bit scenes
    use a small part of their range: a 1 % variation of a dark Landsat band is real
    terrain, not flatness.
``background``
    The fraction of bright, colourless pixels (luminance > 0.85, chroma < 0.06): a
    slide's glass.
``nodata``
    The fraction of pixels equal to the nodata value in every channel (0 when the input
    declares none: GeoTIFF corners).

A tile is *easy* when all of it is nodata, almost all of it (98 %) is glass, or its
structure is under 2 % of its level; easy tiles can take the cheap path (bicubic) with little
difference (``benchmarks/adaptive.py`` measures how little).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import dask.array

#: Thresholds of :meth:`Difficulty.easy`, in fractions and unit-range intensities.
MOSTLY = 0.98
FLAT = 0.02  # structure / mean level
DARKEST = 0.02  # levels below this count as this, so near-black tiles are not all "hard"
GLASS_LUMINANCE = 0.85
GLASS_CHROMA = 0.06


@dataclass(kw_only=True, frozen=True)
class Difficulty:
    noise: float
    spread: float
    background: float
    nodata: float
    level: float = 0.5

    @property
    def structure(self) -> float:
        return math.sqrt(max(self.spread ** 2 - self.noise ** 2, 0.0))

    @property
    def relative_structure(self) -> float:
        return self.structure / max(self.level, DARKEST)

    @property
    def easy(self) -> bool:
        # Only wholly empty tiles count as nodata: a sliver of scene against the empty
        # corner is an edge of the kind the model and bicubic disagree on most.
        return (self.nodata >= 1.0 or self.background >= MOSTLY
                or self.relative_structure < FLAT)


def immerkaer_sigma(grey: np.ndarray) -> float:
    """Immerkaer's estimate of the standard deviation of additive noise in ``grey``."""
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    g = grey.astype(np.float64)
    response = (g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:]
                - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1] - 2 * g[1:-1, 2:]
                + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def assess(pixels: np.ndarray, nodata: float | None = None) -> Difficulty:
    """The difficulty of a ``(c, h, w)`` tile in its own dtype."""
    top = float(np.iinfo(pixels.dtype).max) if np.issubdtype(pixels.dtype, np.integer) else 1.0
    unit = pixels.astype(np.float32) / top
    grey = unit.mean(axis=0) if unit.shape[0] < 3 else unit[:3].mean(axis=0)
    if unit.shape[0] >= 3:
        chroma = unit[:3].max(axis=0) - unit[:3].min(axis=0)
        background = float(((grey > GLASS_LUMINANCE) & (chroma < GLASS_CHROMA)).mean())
    else:
        background = 0.0
    empty = np.all(pixels == (0 if nodata is None else nodata), axis=0)
    return Difficulty(noise=immerkaer_sigma(grey), spread=float(grey.std()), background=background,
                      nodata=float(empty.mean()), level=float(grey.mean()))


def difficulty_map(pixels: dask.array.Array, tile: int, nodata: float | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(easy, structure)`` per tile of a lazy ``(c, y, x)`` image, in one streaming pass.

    ``pixels`` must be chunked ``tile`` x ``tile`` (as :func:`tilewave.storage.inputs.
    lazy_pixels` makes it): each chunk is assessed where it is read and reduced to two
    numbers, so memory holds a few tiles whatever the image size.
    """
    import dask

    def per_tile(block: np.ndarray) -> np.ndarray:
        d = assess(block, nodata)
        return np.array([[[float(d.easy), d.structure]]], dtype=np.float32).reshape(2, 1, 1)

    ny, nx = len(pixels.chunks[1]), len(pixels.chunks[2])
    single = pixels.rechunk({0: -1})
    reduced = single.map_blocks(per_tile, dtype=np.float32,
                                chunks=((2,), (1,) * ny, (1,) * nx))
    with dask.config.set(scheduler="threads", num_workers=2):
        out = reduced.compute()
    return out[0] > 0.5, out[1]
