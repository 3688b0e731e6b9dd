"""The indices and regions the pipeline (and the models it runs) pass around, defined once."""

from __future__ import annotations

#: ``(row, col)`` of a tile in its grid.
TileIndex = tuple[int, int]
#: What a worker runs: a tile ``(row, col)``, or a pyramid chunk ``(level, row, col)``.
WorkIndex = tuple[int, ...]
#: A region ``(y0, y1, x0, x1)``, half-open, in the pixels of the array it is cut from.
Window = tuple[int, int, int, int]
#: One sampler step of one tile in the (tile, step) DAG: ``(row, col, step)``; a model
#: that runs in one pass has one node per tile, at step 0.
Node = tuple[int, int, int]
