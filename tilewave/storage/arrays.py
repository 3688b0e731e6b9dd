"""Reading and writing tiles of Zarr v3 arrays, addressed by small picklable specs.

The driver hands workers an :class:`ArraySpec` (a path and an axis layout), never the
pixels. Each worker opens the array itself and reads or writes only its own windows.
Internally every image is ``(c, y, x)``; :class:`ArraySpec` records how the stored axes
map onto that, so Zarr inputs in other layouts are read in place without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

#: Axis letters tilewave understands; t and z must have length one.
KNOWN_AXES = set("tczyx")


@dataclass(frozen=True)
class ArraySpec:
    """Where a Zarr array lies and how its axes map onto ``(c, y, x)``."""

    path: str
    #: Stored axis order, e.g. ``"cyx"``, ``"yxc"``, ``"yx"`` or ``"tczyx"``.
    axes: str = "cyx"

    def __post_init__(self) -> None:
        if (not set(self.axes) <= KNOWN_AXES or "y" not in self.axes or "x" not in self.axes
                or len(set(self.axes)) != len(self.axes)):
            raise ValueError(f"axes {self.axes!r} must be distinct letters of 'tczyx' with y and x")


class ArrayReader:
    """Reads ``(c, h, w)`` windows from a Zarr array of any supported layout."""

    def __init__(self, spec: ArraySpec):
        self.spec = spec
        self.array = zarr.open_array(spec.path, mode="r")
        shape = dict(zip(spec.axes, self.array.shape))
        self.shape = (shape.get("c", 1), shape["y"], shape["x"])
        self.dtype = np.dtype(self.array.dtype)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        index: list[Any] = []
        for axis in self.spec.axes:
            index.append({"y": slice(y0, y1), "x": slice(x0, x1), "c": slice(None)}.get(axis, 0))
        data = np.asarray(self.array[tuple(index)])
        kept = [a for a in self.spec.axes if a in "cyx"]
        if "c" not in kept:
            data, kept = data[None], ["c", *kept]
        return np.transpose(data, [kept.index(a) for a in "cyx"])


class ArrayWriter:
    """Writes ``(c, h, w)`` windows into a ``(c, y, x)`` Zarr array opened for update."""

    def __init__(self, path: str):
        self.path = path
        self.array = zarr.open_array(path, mode="r+")

    def write(self, y0: int, x0: int, data: np.ndarray) -> None:
        _, h, w = data.shape
        self.array[:, y0 : y0 + h, x0 : x0 + w] = data
