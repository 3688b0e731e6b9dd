"""The tile grid: which input pixels each tile reads and which output pixels it owns.

Everything here is plain integer geometry, in input pixels unless a name says ``out``.
A tile *owns* its core; its output chunk is the core times the scale, so output chunks
line up with the grid and no two tiles ever write the same chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import SettingsError
from .indices import Window


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`."""

    row: int
    col: int
    core: Window
    #: The input region whose prediction the tile computes: the core, grown by the blend
    #: overlap into the right and lower neighbours.
    predicted: Window
    #: The input region the tile reads: ``predicted`` grown by the halo, clipped.
    read: Window

    @property
    def index(self) -> tuple[int, int]:
        return (self.row, self.col)


@dataclass(frozen=True)
class TileGrid:
    """Cuts an ``height`` x ``width`` image into ``tile`` x ``tile`` tiles (smaller at the
    right and bottom edges)."""

    height: int
    width: int
    tile: int
    scale: int
    halo: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise SettingsError(f"image is {self.height} x {self.width}; it must have pixels")
        if self.tile < 1:
            raise SettingsError(f"--tile must be a positive number of pixels, got {self.tile}")
        if self.scale < 1:
            raise SettingsError(f"--scale must be a positive integer, got {self.scale}")
        if self.halo < 0:
            raise SettingsError(f"halo must be >= 0, got {self.halo}")
        if not 0 <= self.overlap <= self.tile:
            raise SettingsError(
                f"--overlap {self.overlap} must be between 0 and the tile size {self.tile}"
            )

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def out_shape(self) -> tuple[int, int]:
        return (self.height * self.scale, self.width * self.scale)

    @property
    def out_chunk(self) -> tuple[int, int]:
        return (self.tile * self.scale, self.tile * self.scale)

    def contains(self, row: int, col: int) -> bool:
        return 0 <= row < self.rows and 0 <= col < self.cols

    def __getitem__(self, index: tuple[int, int]) -> Tile:
        row, col = index
        if not self.contains(row, col):
            raise IndexError(f"tile ({row}, {col}) outside a {self.rows} x {self.cols} grid")
        t = self.tile
        y0, x0 = row * t, col * t
        y1, x1 = min(self.height, y0 + t), min(self.width, x0 + t)
        py1, px1 = min(self.height, y1 + self.overlap), min(self.width, x1 + self.overlap)
        h = self.halo
        read = (max(0, y0 - h), min(self.height, py1 + h), max(0, x0 - h), min(self.width, px1 + h))
        return Tile(row, col, (y0, y1, x0, x1), (y0, py1, x0, px1), read)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in raster order."""
        for row in range(self.rows):
            for col in range(self.cols):
                yield self[row, col]

    def out_window(self, window: Window) -> Window:
        """``window`` in output pixels."""
        s = self.scale
        return (window[0] * s, window[1] * s, window[2] * s, window[3] * s)
