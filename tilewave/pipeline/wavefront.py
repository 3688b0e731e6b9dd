"""Scheduling state for the raster-order tile DAG, free of Ray and of pixels.

A tile may depend on its left, top and top-left neighbours (``context`` and ``blend``
modes) or on nothing (``halo`` mode). :class:`Wavefront` says which tiles may start;
:class:`ContextTable` holds the contexts finished tiles handed to unfinished ones and
drops each as soon as its only consumer has finished, so only a frontier stays alive.
Both are plain data structures, so the runner's decisions can be tested without Ray.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Generic, TypeVar

from .directions import ARRIVES_AS, INBOUND, OUTBOUND, Direction
from .indices import TileIndex
from .scheduling import RowsAhead

V = TypeVar("V")


class Wavefront:
    """Which tiles are ready to run, in raster-order priority.

    ``rows_ahead`` caps how many rows below the first unfinished one may start (see
    :class:`~tilewave.pipeline.scheduling.RowsAhead`).
    """

    def __init__(self, rows: int, cols: int, dependent: bool, done: Iterable[TileIndex] = (),
                 rows_ahead: int | None = None):
        self.rows, self.cols, self.dependent = rows, cols, dependent
        self.window = RowsAhead(rows_ahead)
        self._done: set[TileIndex] = set(done)
        self._unfinished = [cols] * rows
        for r, _ in self._done:
            self._unfinished[r] -= 1
        self._first_row = 0
        self._advance_first_row()
        self._started: set[TileIndex] = set()
        self._ready: list[TileIndex] = []
        self._waiting: dict[TileIndex, int] = {}
        for r in range(rows):
            for c in range(cols):
                if (r, c) in self._done:
                    continue
                missing = sum(1 for p in self.dependencies((r, c)) if p not in self._done)
                if missing:
                    self._waiting[(r, c)] = missing
                else:
                    self._ready.append((r, c))
        heapq.heapify(self._ready)

    def _neighbours(self, index: TileIndex, offsets: Iterable[tuple[int, int]]) -> list[TileIndex]:
        if not self.dependent:
            return []
        r, c = index
        near = [(r + dr, c + dc) for dr, dc in offsets]
        return [(y, x) for y, x in near if 0 <= y < self.rows and 0 <= x < self.cols]

    def dependencies(self, index: TileIndex) -> list[TileIndex]:
        """The tiles ``index`` must wait for."""
        return self._neighbours(index, INBOUND.values())

    def dependants(self, index: TileIndex) -> list[TileIndex]:
        """The tiles that wait for ``index``."""
        return self._neighbours(index, OUTBOUND.values())

    def is_done(self, index: TileIndex) -> bool:
        """Whether ``index`` is finished (in this run or before it)."""
        return index in self._done

    @property
    def remaining(self) -> int:
        """Tiles not finished yet (running, ready or waiting)."""
        return self.rows * self.cols - len(self._done)

    @property
    def finished(self) -> bool:
        return self.remaining == 0

    def _advance_first_row(self) -> None:
        while self._first_row < self.rows and self._unfinished[self._first_row] == 0:
            self._first_row += 1

    def has_ready(self) -> bool:
        if not self._ready:
            return False
        return self.window.allows(self._ready[0][0], self._first_row)

    def pop_ready(self) -> TileIndex | None:
        """The next tile to start, or None if every unfinished tile waits, runs, or lies
        too far below the first unfinished row."""
        if not self.has_ready():
            return None
        index = heapq.heappop(self._ready)
        self._started.add(index)
        return index

    def finish(self, index: TileIndex) -> list[TileIndex]:
        """Record ``index`` as finished; returns the tiles that became ready."""
        if index not in self._started:
            raise ValueError(f"tile {index} finished without being started")
        self._started.discard(index)
        self._done.add(index)
        self._unfinished[index[0]] -= 1
        self._advance_first_row()
        newly = []
        for d in self.dependants(index):
            if d in self._waiting:
                self._waiting[d] -= 1
                if self._waiting[d] == 0:
                    del self._waiting[d]
                    heapq.heappush(self._ready, d)
                    newly.append(d)
        return newly


class ContextTable(Generic[V]):
    """Contexts in flight between tiles, keyed by (producer, outbound direction).

    Every context has exactly one consumer, so it is dropped the moment that consumer
    finishes: the table never holds more than the wavefront's frontier.
    """

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self._live: dict[tuple[TileIndex, Direction], V] = {}
        self.peak = 0

    def consumer(self, producer: TileIndex, direction: Direction) -> TileIndex | None:
        dr, dc = OUTBOUND[direction]
        r, c = producer[0] + dr, producer[1] + dc
        return (r, c) if 0 <= r < self.rows and 0 <= c < self.cols else None

    def put(self, producer: TileIndex, direction: Direction, value: V) -> bool:
        """Keep ``value`` for the consumer in ``direction``; False (and nothing kept) when
        that neighbour lies outside the grid."""
        if self.consumer(producer, direction) is None:
            return False
        self._live[(producer, direction)] = value
        self.peak = max(self.peak, len(self._live))
        return True

    def inbound(self, consumer: TileIndex) -> dict[Direction, V | None]:
        """The contexts ``consumer`` receives, by inbound name (None where absent)."""
        r, c = consumer
        out: dict[Direction, V | None] = {}
        for direction, name in ARRIVES_AS.items():
            dr, dc = OUTBOUND[direction]
            out[name] = self._live.get(((r - dr, c - dc), direction))
        return out

    def release(self, consumer: TileIndex) -> list[tuple[TileIndex, Direction]]:
        """Drop the contexts ``consumer`` received; returns their keys."""
        r, c = consumer
        freed = []
        for direction in ARRIVES_AS:
            dr, dc = OUTBOUND[direction]
            key = ((r - dr, c - dc), direction)
            if self._live.pop(key, None) is not None:
                freed.append(key)
        return freed

    def __len__(self) -> int:
        return len(self._live)
