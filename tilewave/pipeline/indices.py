"""The two kinds of index the pipeline passes around, defined once."""

from __future__ import annotations

#: ``(row, col)`` of a tile in its grid.
TileIndex = tuple[int, int]
#: What a worker runs: a tile ``(row, col)``, or a pyramid chunk ``(level, row, col)``.
WorkIndex = tuple[int, ...]
