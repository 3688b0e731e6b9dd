"""What the viewer shows: tiles of an output's pyramid, the input under them, the scale of
a pixel, and which tiles a running job has finished.

Every tile is addressed in the output's pyramid: level ``k`` is ``2 ** k`` times coarser
than the output, and tile ``(row, col)`` of it covers ``TILE`` x ``TILE`` of its pixels.
The input side reads the same region of the input (``scale`` times smaller) and
upscales it, with nearest neighbours or bicubic, to the same size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import zarr

from ..storage.inputs import lazy_pixels, open_input
from ..storage.ledger import Ledger
from ..storage.ome import read_metadata

#: Tile side in pixels of the level it is cut from.
TILE = 256
Baseline = Literal["bicubic", "nearest"]


@dataclass(frozen=True)
class TileKey:
    level: int
    row: int
    col: int

    def window(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)`` of the tile in a level of ``shape``; None outside it."""
        y0, x0 = self.row * TILE, self.col * TILE
        if self.row < 0 or self.col < 0 or y0 >= shape[0] or x0 >= shape[1]:
            return None
        return y0, min(y0 + TILE, shape[0]), x0, min(x0 + TILE, shape[1])


class OutputPyramid:
    """A tilewave output (OME-Zarr), finished or being written."""

    def __init__(self, path: str):
        from ..errors import InputError
        from ..storage import location

        self.path = path
        if not location.exists(path):
            raise InputError(f"{path!r} does not exist; give a tilewave output (OME-Zarr)")
        try:
            self.group = zarr.open_group(path, mode="r")
        except Exception:  # zarr raises several kinds for what is not a group
            raise InputError(f"{path!r} is not an OME-Zarr image; give a tilewave output") from None
        self.levels: list[zarr.Array] = []
        while str(len(self.levels)) in self.group:
            self.levels.append(cast(zarr.Array, self.group[str(len(self.levels))]))
        if not self.levels:
            raise InputError(f"{path!r} has no pyramid levels (0, 1, ...); give a tilewave output")
        self.metadata = read_metadata(self.group)
        job = self.group.attrs.get("tilewave")
        self.settings: dict[str, Any] = dict(job.get("settings") or {}) if isinstance(job, dict) else {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast(tuple[int, int, int], tuple(self.levels[0].shape))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    def read(self, key: TileKey) -> np.ndarray | None:
        """The tile's ``(c, h, w)`` pixels; None outside the pyramid."""
        if not 0 <= key.level < len(self.levels):
            return None
        level = self.levels[key.level]
        window = key.window((level.shape[1], level.shape[2]))
        if window is None:
            return None
        y0, y1, x0, x1 = window
        return np.asarray(level[:, y0:y1, x0:x1])

    def pixel_size(self) -> tuple[float, str] | None:
        """The physical size of an output pixel and its unit (``µm``, ``m``), if known."""
        if "mpp" in self.metadata:
            return float(self.metadata["mpp"][1]), "µm"
        if "pixel_size" in self.metadata and self.metadata.get("linear_unit") == "meter":
            return float(self.metadata["pixel_size"][1]), "m"
        return None

    def progress(self) -> dict[str, Any]:
        """The tile grid of the job that writes this output, and the tiles done so far:
        all once the output says it is complete, else those its ledger lists."""
        chunk = self.levels[0].chunks
        rows, cols = (-(-self.shape[1] // chunk[1]), -(-self.shape[2] // chunk[2]))
        # Read afresh: the job marks the output complete when it ends.
        job = zarr.open_group(self.path, mode="r").attrs.get("tilewave")
        if isinstance(job, dict) and job.get("complete"):
            done = [(r, c) for r in range(rows) for c in range(cols)]
        else:
            done = sorted(Ledger(self.path).done()) if os.path.isdir(self.path) else []
        return {"rows": rows, "cols": cols, "done": [list(t) for t in done],
                "complete": len(done) >= rows * cols}


class InputSide:
    """The input, read in the output's frame and upscaled to it for comparison."""

    def __init__(self, path: str, output_width: int, baseline: Baseline = "bicubic"):
        self.image = open_input(path)
        self.scale = max(1, round(output_width / self.image.width))
        self.baseline = baseline
        # A TIFF's own pyramid (a slide's levels): far out, a view reads a coarse level
        # rather than the whole of the full resolution.
        own = self.image.array is None and self.image.format not in ("png", "jpeg")
        self.levels = list(self.image.levels if own else self.image.levels[:1])
        self._pixels = {0: lazy_pixels(self.image, 512)}

    def _level(self, ratio: float) -> tuple[int, float, Any]:
        """The coarsest input level with at least one pixel per output pixel at
        ``ratio`` (full-resolution input pixels per output pixel): its index, how much
        coarser than full resolution it is, and its pixels."""
        best = 0
        for j, (_, w) in enumerate(self.levels):
            if self.image.width / w <= ratio:
                best = j
        if best not in self._pixels:
            self._pixels[best] = lazy_pixels(self.image, 512, best)
        return best, self.image.width / self.levels[best][1], self._pixels[best]

    def read(self, key: TileKey, output_shape: tuple[int, int]) -> np.ndarray | None:
        """The input under the output tile ``key``, resampled to the tile's size."""
        from PIL import Image

        f = 2**key.level
        level_shape = (-(-output_shape[0] // f), -(-output_shape[1] // f))
        window = key.window(level_shape)
        if window is None:
            return None
        y0, y1, x0, x1 = window
        # Input pixels under the tile, with a pixel more on each side for the resampling,
        # in the input level that suits the zoom.
        _, coarser, pixels = self._level(f / self.scale)
        ratio = f / self.scale / coarser
        h, w = pixels.shape[1], pixels.shape[2]
        iy0, iy1 = max(0, int(y0 * ratio) - 1), min(h, int(np.ceil(y1 * ratio)) + 1)
        ix0, ix1 = max(0, int(x0 * ratio) - 1), min(w, int(np.ceil(x1 * ratio)) + 1)
        step = max(1, int(ratio))  # far out, every step-th pixel is enough for a view
        region = np.asarray(pixels[:, iy0:iy1:step, ix0:ix1:step])
        # Resample the region so that output pixel centres map onto it.
        method = Image.Resampling.BICUBIC if self.baseline == "bicubic" else Image.Resampling.NEAREST
        out = []
        for band in region:
            img = Image.fromarray(band.astype(np.float32), mode="F")
            rh, rw = band.shape
            # Clamped: where the output's size is not a whole multiple of the input's, the
            # last output pixels reach a fraction past the input's edge.
            box = (min((x0 * ratio - ix0) / step, rw), min((y0 * ratio - iy0) / step, rh),
                   min((x1 * ratio - ix0) / step, rw), min((y1 * ratio - iy0) / step, rh))
            out.append(np.asarray(img.resize((x1 - x0, y1 - y0), method, box=box)))
        stacked = np.stack(out)
        if np.issubdtype(self.image.dtype, np.integer):
            info = np.iinfo(self.image.dtype)
            stacked = np.clip(np.rint(stacked), info.min, info.max)
        return stacked.astype(self.image.dtype)
