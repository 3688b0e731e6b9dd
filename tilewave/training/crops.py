"""Random crops of real images, the ground truth models are trained on."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import SettingsError
from ..storage.inputs import InputImage, lazy_pixels

#: Images up to this many pixels are decoded once and kept in memory; larger ones are
#: read crop by crop.
IN_MEMORY_PIXELS = 64 * 1024 * 1024

Region = tuple[int, int, int, int]


class CropSource:
    """Random RGB crops, in unit space, from one image of any supported format, inside
    ``region`` ``(y0, y1, x0, x1)`` (the whole image by default).

    ``accept`` sees a candidate crop and may turn it down (glass, nodata, flat areas);
    up to 20 candidates are drawn before the last one is taken anyway. No crop touches
    ``exclude`` ``(y0, y1, x0, x1)``, a region kept for measuring the result.
    """

    def __init__(self, image: InputImage, region: Region | None = None,
                 accept: Callable[[np.ndarray], bool] | None = None,
                 exclude: Region | None = None):
        self.image = image
        self.scale = float(np.iinfo(image.dtype).max) if image.dtype.kind == "u" else 1.0
        self.region = region or (0, image.height, 0, image.width)
        self.accept = accept
        self.exclude = exclude
        if image.height * image.width <= IN_MEMORY_PIXELS:
            self._data = lazy_pixels(image, 1024).compute()
        else:  # read crop by crop: small chunks, so a crop decodes little beyond itself
            self._data = lazy_pixels(image, 256)

    @property
    def area(self) -> int:
        y0, y1, x0, x1 = self.region
        return (y1 - y0) * (x1 - x0)

    def _draw(self, size: int, rng: random.Random) -> np.ndarray:
        y0, y1, x0, x1 = self.region
        if y1 - y0 < size or x1 - x0 < size:
            raise SettingsError(f"training image {self.image.path!r} is smaller than a "
                                f"{size}-pixel crop")
        for _ in range(1000):
            y, x = y0 + rng.randrange(y1 - y0 - size + 1), x0 + rng.randrange(x1 - x0 - size + 1)
            e = self.exclude
            if e is None or not (y < e[1] and e[0] < y + size and x < e[3] and e[2] < x + size):
                break
        else:
            raise SettingsError(f"no {size}-pixel crop of {self.image.path!r} avoids the "
                                "excluded region; exclude less")
        data = np.asarray(self._data[:, y : y + size, x : x + size], dtype=np.float32) / self.scale
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        return data[:3]

    def crop(self, size: int, rng: random.Random) -> np.ndarray:
        for _ in range(20):
            data = self._draw(size, rng)
            if self.accept is None or self.accept(self._as_stored(data)):
                return data
        return data

    def _as_stored(self, data: np.ndarray) -> np.ndarray:
        """A crop in the image's own dtype, as :func:`~tilewave.pipeline.difficulty.assess`
        judges tiles."""
        if self.image.dtype.kind != "u":
            return data
        return np.rint(data * self.scale).astype(self.image.dtype)


def pick(sources: Sequence[CropSource], rng: random.Random, cap: int = 2_000_000) -> CropSource:
    """A source drawn in proportion to its area, capped so one large image does not
    crowd out the rest."""
    weights = np.array([min(s.area, cap) for s in sources], float)
    return sources[int(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random()))]


def augment(crop: np.ndarray, rng: random.Random) -> np.ndarray:
    """One of the eight rotations and flips of ``crop``."""
    crop = np.rot90(crop, rng.randrange(4), axes=(1, 2))
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray(crop)
