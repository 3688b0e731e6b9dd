"""Reading and writing tiles of Zarr v3 arrays, addressed by small picklable specs.

The driver hands workers an :class:`ArraySpec` (a path and an axis layout), never the
pixels. Each worker opens the array itself and reads or writes only its own windows.
Internally every image is ``(c, y, x)``; :class:`ArraySpec` records how the stored axes
map onto that, so Zarr inputs in other layouts are read in place without a copy.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from .backends import backend_for

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


def checksum(pixels: np.ndarray) -> int:
    """CRC-32 of ``pixels`` as a C-ordered array of their dtype: what a tile's ledger line
    records and :mod:`tilewave.pipeline.verify` compares with what reads back."""
    return zlib.crc32(np.ascontiguousarray(pixels).data)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArrayWriter:
    """Writes ``(c, h, w)`` windows into a ``(c, y, x)`` Zarr array opened for update.

    With ``durable``, a write returns only once the chunk files it wrote, and the
    folders that name them, are on disk (``fsync``), so that a ledger line recorded
    after it never outlives the chunk in a power loss. Object stores make a finished
    put durable anyway, so it changes nothing there.
    """

    def __init__(self, path: str, durable: bool = False):
        self.path = path
        self.array = zarr.open_array(path, mode="r+")
        # Chunk files are fsynced only where a finished write is not durable by itself,
        # and only local files can be (object stores' puts are durable when they return).
        backend = backend_for(path)
        self.durable = durable and backend.local and not backend.durable_writes

    def write(self, y0: int, x0: int, data: np.ndarray) -> int:
        """Write ``data`` at ``(y0, x0)``; returns its :func:`checksum`."""
        _, h, w = data.shape
        self.array[:, y0 : y0 + h, x0 : x0 + w] = data
        if self.durable:
            self._sync(y0, y0 + h, x0, x0 + w)
        return checksum(data)

    def _sync(self, y0: int, y1: int, x0: int, x1: int) -> None:
        _, ch, cw = self.array.chunks
        folders = set()
        for r in range(y0 // ch, -(-y1 // ch)):
            for c in range(x0 // cw, -(-x1 // cw)):
                key = self.array.metadata.encode_chunk_key((0, r, c))
                chunk = os.path.join(self.path, *key.split("/"))
                if os.path.exists(chunk):  # a chunk equal to the fill value is not stored
                    _fsync(chunk)
                # A new chunk's name lives in its folder, and a new folder's in its parent.
                folder = os.path.dirname(chunk)
                while len(folder) >= len(self.path):
                    folders.add(folder)
                    folder = os.path.dirname(folder)
        for folder in sorted(folders, key=len, reverse=True):
            if os.path.isdir(folder):
                _fsync(folder)
