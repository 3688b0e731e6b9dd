"""Scheduling state for the raster-order tile DAG, free of Ray and of pixels.

A tile may depend on its left, top and top-left neighbours (``context`` and ``blend``
modes) or on nothing (``halo`` mode); a multi-step model's tile may also run one sampler
step at a time (``--schedule step``). :class:`Wavefront` says which (tile, step) may start;
:class:`ContextTable` holds the contexts finished tiles handed to unfinished ones and
drops each as soon as its only consumer has finished, so only a frontier stays alive.
Both are plain data structures, so the runner's decisions can be tested without Ray.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from .directions import ARRIVES_AS, INBOUND, OUTBOUND, Direction
from .indices import Node, TileIndex
from .scheduling import RowsAhead

V = TypeVar("V")


class Wavefront:
    """Which nodes are ready to run, lowest step first, then in raster order.

    A node is one sampler step of one tile, ``(row, col, step)``; a model that runs in
    one pass has ``steps = 1``, so its nodes are its tiles. Step ``k`` of a tile waits for
    step ``k`` of its left, top and top-left neighbours (``dependent`` only) and for its
    own step ``k - 1``. Preferring low steps makes each step sweep the image as a
    raster wavefront just behind the previous one, so only about one step's contexts are
    alive at a time, whatever the number of steps.

    ``done`` lists finished tiles; ``partial`` the steps already run by unfinished ones
    (a resumed job). ``rows_ahead`` caps, per step, how many rows below the first row
    unfinished at that step may start (see :class:`~tilewave.pipeline.scheduling.RowsAhead`).
    """

    def __init__(self, rows: int, cols: int, dependent: bool, done: Iterable[TileIndex] = (),
                 rows_ahead: int | None = None, steps: int = 1,
                 partial: Mapping[TileIndex, int] | None = None):
        self.rows, self.cols, self.dependent, self.steps = rows, cols, dependent, steps
        self.window = RowsAhead(rows_ahead)
        done = set(done)
        # Steps run by every tile: all of them for a finished tile.
        self._progress = {(r, c): steps if (r, c) in done else (partial or {}).get((r, c), 0)
                          for r in range(rows) for c in range(cols)}
        self._unfinished = [[0] * rows for _ in range(steps)]
        for (r, _), ran in self._progress.items():
            for k in range(ran, steps):
                self._unfinished[k][r] += 1
        self._first_row = [0] * steps
        for k in range(steps):
            self._advance_first_row(k)
        self._started: set[Node] = set()
        self._ready: list[tuple[int, int, int]] = []  # (step, row, col): the heap's order
        self._waiting: dict[Node, int] = {}
        for (r, c), ran in self._progress.items():
            if ran < steps:
                self._enter((r, c, ran))

    def _enter(self, node: Node) -> None:
        """Put the next node of a tile among the ready or the waiting ones."""
        missing = sum(1 for p in self.dependencies(node) if not self._ran(p))
        if missing:
            self._waiting[node] = missing
        else:
            heapq.heappush(self._ready, (node[2], node[0], node[1]))

    def _ran(self, node: Node) -> bool:
        return self._progress[node[:2]] > node[2]

    def _neighbours(self, node: Node, offsets: Iterable[tuple[int, int]]) -> list[Node]:
        if not self.dependent:
            return []
        r, c, k = node
        near = [(r + dr, c + dc) for dr, dc in offsets]
        return [(y, x, k) for y, x in near if 0 <= y < self.rows and 0 <= x < self.cols]

    def _follows(self, node: Node) -> bool:
        """Whether ``node`` opens its column's sweep of a step after the first: a tile of
        the first row, in a grid of several, whose tiles pass contexts."""
        return self.dependent and node[0] == 0 and node[2] > 0 and self.rows > 1

    def dependencies(self, node: Node) -> list[Node]:
        """The nodes ``node`` must wait for: its neighbours' same step and its own
        previous one; a first-row tile also waits for the previous step's last-row tile
        of its column.

        That last one keeps two steps' sweeps from holding two frontiers of contexts at
        once: step ``k + 1`` opens column by column behind step ``k``'s last row (which
        leaves no context below), so one frontier shrinks as the other grows, and the
        workers that step ``k``'s last row leaves idle (each of its tiles waits for its
        left neighbour) run step ``k + 1``'s first rows. It is no barrier: no tile waits
        for a whole step."""
        r, c, k = node
        own = [(r, c, k - 1)] if k > 0 else []
        if self._follows(node):
            own.append((self.rows - 1, c, k - 1))
        return self._neighbours(node, INBOUND.values()) + own

    def dependants(self, node: Node) -> list[Node]:
        """The nodes that wait for ``node``."""
        r, c, k = node
        own = [(r, c, k + 1)] if k + 1 < self.steps else []
        if r == self.rows - 1 and self._follows((0, c, k + 1)) and k + 1 < self.steps:
            own.append((0, c, k + 1))
        return self._neighbours(node, OUTBOUND.values()) + own

    def is_done(self, index: TileIndex) -> bool:
        """Whether tile ``index`` ran all its steps (in this run or before it)."""
        return self._progress[index] == self.steps

    def steps_run(self, index: TileIndex) -> int:
        """How many steps tile ``index`` has run."""
        return self._progress[index]

    @property
    def finished(self) -> bool:
        return self._first_row[-1] >= self.rows if self.steps else True

    def _advance_first_row(self, k: int) -> None:
        rows = self._unfinished[k]
        while self._first_row[k] < self.rows and rows[self._first_row[k]] == 0:
            self._first_row[k] += 1

    def has_ready(self) -> bool:
        if not self._ready:
            return False
        k, r, _ = self._ready[0]
        return self.window.allows(r, self._first_row[k])

    def pop_ready(self) -> Node | None:
        """The next node to start, or None if every unfinished one waits, runs, or lies
        too far below the first row unfinished at its step."""
        if not self.has_ready():
            return None
        k, r, c = heapq.heappop(self._ready)
        self._started.add((r, c, k))
        return (r, c, k)

    def finish(self, node: Node) -> list[Node]:
        """Record ``node`` as finished; returns the nodes that became ready."""
        if node not in self._started:
            raise ValueError(f"step {node[2]} of tile {node[:2]} finished without being started")
        r, c, k = node
        self._started.discard(node)
        self._progress[(r, c)] = k + 1
        self._unfinished[k][r] -= 1
        self._advance_first_row(k)
        newly = []
        for d in self.dependants(node):
            if d == (r, c, k + 1):
                self._enter(d)
                if d not in self._waiting:
                    newly.append(d)
            elif d in self._waiting:
                self._waiting[d] -= 1
                if self._waiting[d] == 0:
                    del self._waiting[d]
                    heapq.heappush(self._ready, (d[2], d[0], d[1]))
                    newly.append(d)
        return newly


#: A context's key: its producer, the direction it goes, and the step it belongs to.
ContextKey = tuple[TileIndex, Direction, int]


class ContextTable(Generic[V]):
    """Contexts in flight between tiles, keyed by (producer, outbound direction, step);
    a model that runs in one pass hands on one context per direction, at step 0.

    Every context has exactly one consumer (the neighbour's same step), so it is dropped
    the moment that consumer finishes: the table never holds more than the frontier.
    """

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self._live: dict[ContextKey, V] = {}
        self.peak = 0
        #: Bytes of the live contexts that say theirs (``nbytes``), and the most at once.
        self._bytes = 0
        self.peak_bytes = 0

    def consumer(self, producer: TileIndex, direction: Direction) -> TileIndex | None:
        dr, dc = OUTBOUND[direction]
        r, c = producer[0] + dr, producer[1] + dc
        return (r, c) if 0 <= r < self.rows and 0 <= c < self.cols else None

    def put(self, producer: TileIndex, direction: Direction, value: V, step: int = 0) -> bool:
        """Keep ``value`` for the consumer in ``direction``; False (and nothing kept) when
        that neighbour lies outside the grid."""
        if self.consumer(producer, direction) is None:
            return False
        self._drop((producer, direction, step))
        self._live[(producer, direction, step)] = value
        self.peak = max(self.peak, len(self._live))
        self._bytes += getattr(value, "nbytes", 0)
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        return True

    def inbound(self, consumer: TileIndex, step: int = 0) -> dict[Direction, V | None]:
        """The contexts ``consumer`` receives at ``step``, by inbound name (None where absent)."""
        r, c = consumer
        out: dict[Direction, V | None] = {}
        for direction, name in ARRIVES_AS.items():
            dr, dc = OUTBOUND[direction]
            out[name] = self._live.get(((r - dr, c - dc), direction, step))
        return out

    def release(self, consumer: TileIndex, step: int = 0) -> list[ContextKey]:
        """Drop the contexts ``consumer`` received at ``step``; returns their keys."""
        r, c = consumer
        freed = []
        for direction in ARRIVES_AS:
            dr, dc = OUTBOUND[direction]
            key = ((r - dr, c - dc), direction, step)
            if self._drop(key):
                freed.append(key)
        return freed

    def _drop(self, key: ContextKey) -> bool:
        value = self._live.pop(key, None)
        if value is None:
            return False
        self._bytes -= getattr(value, "nbytes", 0)
        return True

    def __len__(self) -> int:
        return len(self._live)
