"""The pyramid as part of the tile DAG: which chunk of which level may be computed once
which chunks of the level below exist. Plain integer geometry, free of Ray and pixels.

Level ``k`` averages 2 x 2 pixels of level ``k - 1`` (the last row and column repeated
where a size is odd; :func:`tilewave.storage.pyramid.downsample_window`). Its chunk
``(i, j)`` therefore needs the level ``k - 1`` pixels twice its window, which lie in a
few chunks of that level; it becomes work as soon as those exist. Level 0's chunks are
the tiles' output chunks, so the first levels start while tiles are still running, and
no pass over the whole image waits for the last tile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..storage.ome import DOWNSAMPLE, SMALLEST, level_shapes
from .indices import Window

#: ``(level, row, col)`` of a pyramid chunk, level >= 1; level 0's chunks are tiles.
Chunk = tuple[int, int, int]


def _span(start: int, stop: int, chunk: int) -> range:
    """Chunk indices along one axis that pixels ``start:stop`` touch."""
    return range(start // chunk, -(-stop // chunk))


@dataclass(frozen=True)
class PyramidPlan:
    """Levels ``1, 2, ...`` of an output whose level 0 is ``shape`` in ``chunk`` chunks."""

    #: ``(height, width)`` of every level, level 0 first.
    shapes: tuple[tuple[int, int], ...]
    #: ``(height, width)`` of every level's chunks, level 0 first.
    chunks: tuple[tuple[int, int], ...]

    @classmethod
    def for_output(cls, shape: tuple[int, int], chunk: tuple[int, int],
                   smallest: int = SMALLEST) -> PyramidPlan:
        """Levels halved (rounded up) until the longest side is at most ``smallest``,
        chunked like level 0 (or whole, where a level is smaller than a chunk)."""
        shapes = tuple((h, w) for _, h, w in level_shapes((1, *shape), smallest))
        chunks = (chunk, *((min(chunk[0], h), min(chunk[1], w)) for h, w in shapes[1:]))
        return cls(shapes, chunks)

    @property
    def levels(self) -> int:
        """How many levels are added above level 0."""
        return len(self.shapes) - 1

    def grid(self, level: int) -> tuple[int, int]:
        """Chunk rows and columns of ``level``."""
        (h, w), (ch, cw) = self.shapes[level], self.chunks[level]
        return -(-h // ch), -(-w // cw)

    def window(self, level: int, row: int, col: int) -> Window:
        """The pixels ``(y0, y1, x0, x1)`` of chunk ``(row, col)`` of ``level``."""
        (h, w), (ch, cw) = self.shapes[level], self.chunks[level]
        return (row * ch, min(h, (row + 1) * ch), col * cw, min(w, (col + 1) * cw))

    def source(self, chunk: Chunk) -> Window:
        """The pixels of level ``k - 1`` that chunk ``(k, i, j)`` averages, clipped to
        that level (the odd last row or column is repeated, not read twice)."""
        k, i, j = chunk
        y0, y1, x0, x1 = self.window(k, i, j)
        h, w = self.shapes[k - 1]
        d = DOWNSAMPLE
        return (y0 * d, min(h, y1 * d), x0 * d, min(w, x1 * d))

    def chunks_of(self, level: int) -> Iterator[Chunk]:
        rows, cols = self.grid(level)
        for i in range(rows):
            for j in range(cols):
                yield (level, i, j)

    def all_chunks(self) -> Iterator[Chunk]:
        for level in range(1, len(self.shapes)):
            yield from self.chunks_of(level)

    @property
    def count(self) -> int:
        return sum(r * c for r, c in (self.grid(k) for k in range(1, len(self.shapes))))

    def children(self, chunk: Chunk) -> list[tuple[int, int, int]]:
        """The level ``k - 1`` chunks ``(k - 1, row, col)`` that ``chunk`` reads."""
        k = chunk[0]
        y0, y1, x0, x1 = self.source(chunk)
        ch, cw = self.chunks[k - 1]
        return [(k - 1, r, c) for r in _span(y0, y1, ch) for c in _span(x0, x1, cw)]

    def parents(self, level: int, row: int, col: int) -> list[Chunk]:
        """The level ``level + 1`` chunks that read chunk ``(row, col)`` of ``level``."""
        if level + 1 >= len(self.shapes):
            return []
        y0, y1, x0, x1 = self.window(level, row, col)
        ch, cw = self.chunks[level + 1]
        d = DOWNSAMPLE
        return [(level + 1, r, c) for r in _span(y0 // d, -(-y1 // d), ch)
                for c in _span(x0 // d, -(-x1 // d), cw)]


class PyramidFront:
    """Which pyramid chunks are ready: those whose children are all finished.

    Level 0 children are tiles, reported with :meth:`finish_tile`; pyramid chunks with
    :meth:`finish`. ``tiles_done`` and ``done`` are what a resumed job finished before.
    """

    def __init__(self, plan: PyramidPlan, tiles_done: Iterable[tuple[int, int]] = (),
                 done: Iterable[Chunk] = ()):
        self.plan = plan
        self._done = set(done)
        tiles = set(tiles_done)
        self._missing: dict[Chunk, int] = {}
        self._ready: list[Chunk] = []
        for chunk in plan.all_chunks():
            if chunk in self._done:
                continue
            missing = sum(1 for k, r, c in plan.children(chunk)
                          if (k == 0 and (r, c) not in tiles) or (k > 0 and (k, r, c) not in self._done))
            if missing:
                self._missing[chunk] = missing
            else:
                self._ready.append(chunk)
        self.remaining = plan.count - len(self._done)

    def _child_finished(self, level: int, row: int, col: int) -> None:
        for parent in self.plan.parents(level, row, col):
            if parent in self._missing:
                self._missing[parent] -= 1
                if not self._missing[parent]:
                    del self._missing[parent]
                    self._ready.append(parent)

    def finish_tile(self, row: int, col: int) -> None:
        self._child_finished(0, row, col)

    def finish(self, chunk: Chunk) -> None:
        self._done.add(chunk)
        self.remaining -= 1
        self._child_finished(*chunk)

    def pop_ready(self) -> Chunk | None:
        return self._ready.pop() if self._ready else None

    def has_ready(self) -> bool:
        return bool(self._ready)

    @property
    def finished(self) -> bool:
        return self.remaining == 0
