"""The driver loop: feeds ready tiles (and the pyramid chunks they make ready) to a
worker pool, records finished ones, and hands contexts from producers to consumers,
dropping each once its consumer is done.

The loop touches only tile coordinates and context handles; pixels stay with workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ResumeMismatchError
from ..storage.contexts import ContextStore, StateStore
from ..storage.ledger import Ledger, step_entry
from .directions import OUTBOUND
from .grid import TileGrid
from .indices import TileIndex
from .messages import TileDone
from .pyramid_plan import PyramidFront, PyramidPlan
from .report import Counts
from .scheduling import RowsAhead
from .wavefront import ContextTable, Wavefront

if TYPE_CHECKING:
    from .pool import TilePool



@dataclass(kw_only=True)
class RunStats(Counts):
    """What one pass of the driver loop did: its counters, and how it went."""

    seconds: float = 0.0
    peak_contexts: int = 0
    peak_in_flight: int = 0
    #: Pyramid chunks computed.
    chunks_run: int = 0


def _tiles(grid: TileGrid) -> list[TileIndex]:
    return [(r, c) for r in range(grid.rows) for c in range(grid.cols)]


def _resumed_contexts(grid: TileGrid, wave: Wavefront, contexts: ContextStore,
                      table: ContextTable[Any], stepwise: bool) -> None:
    """Put back the persisted contexts that tiles (or steps of tiles) finished before
    left for tiles that had not run that step yet."""
    for producer in _tiles(grid):
        ran = wave.steps_run(producer)
        for direction, (dr, dc) in OUTBOUND.items():
            consumer = (producer[0] + dr, producer[1] + dc)
            if not grid.contains(*consumer):
                continue
            for k in range(wave.steps_run(consumer), ran):
                persisted = contexts.existing(producer, direction, k if stepwise else None)
                if persisted is None:
                    what = f"step {k} of tile" if stepwise else "tile"
                    raise ResumeMismatchError(
                        f"{what} {producer} is done but the context it left for tile "
                        f"{consumer} is missing from {contexts.root}; rerun with --overwrite "
                        "instead of --resume")
                table.put(producer, direction, persisted, k)


def _check_states(wave: Wavefront, states: StateStore, tiles: list[TileIndex]) -> None:
    """Every tile part-way through its steps must find the state its last step left."""
    for tile in tiles:
        ran = wave.steps_run(tile)
        if 0 < ran < wave.steps and not states.exists(tile, ran - 1):
            raise ResumeMismatchError(
                f"tile {tile} ran {ran} of its {wave.steps} sampler steps but the state they "
                f"left is missing from {states.root}; rerun with --overwrite instead of --resume")


@dataclass
class _Handover:
    """Hands a finished node's contexts to its consumers and frees what it consumed:
    in the table, and (where persisted) in the context and state stores."""

    wave: Wavefront
    table: ContextTable[Any]
    contexts: ContextStore | None
    states: StateStore | None

    def stored(self, k: int) -> int | None:
        return k if self.states is not None else None

    def finished(self, t: TileDone) -> None:
        tile, k = (t.row, t.col), t.step or 0
        for direction, handle in t.outbound.items():
            consumer = self.table.consumer(tile, direction)
            if consumer is not None and self.wave.steps_run(consumer) > k:
                # Run again after --verify, while its neighbour had run that step.
                if self.contexts is not None:
                    self.contexts.remove(tile, direction, self.stored(k))
                continue
            self.table.put(tile, direction, handle, k)
        self.wave.finish((t.row, t.col, k))
        for producer, direction, step in self.table.release(tile, k):
            if self.contexts is not None:
                self.contexts.remove(producer, direction, self.stored(step))
        if self.states is not None and k > 0:
            self.states.remove(tile, k - 1)  # the next attempt of step k is not needed


def _submit_ready(pool: TilePool, wave: Wavefront, levels: PyramidFront | None,
                  table: ContextTable[Any] | None, stepwise: bool) -> None:
    """Submit ready pyramid chunks, then ready tiles (with their neighbours' contexts
    from ``table``, for dependent tiles), while the pool has room."""
    while pool.in_flight() < pool.capacity:
        chunk = levels.pop_ready() if levels is not None else None
        if chunk is not None:
            pool.submit(chunk, {})
            continue
        node = wave.pop_ready()
        if node is None:
            return
        r, c, k = node
        inbound = table.inbound((r, c), k) if table is not None else {}
        pool.submit((r, c), {str(d): v for d, v in inbound.items() if v is not None},
                    k if stepwise else None)


def run_tiles(
    grid: TileGrid,
    pool: TilePool,
    ledger: Ledger,
    dependent: bool,
    contexts: ContextStore | None = None,
    on_tile: Callable[[int], None] | None = None,
    pyramid: PyramidPlan | None = None,
    guard: Callable[[], None] | None = None,
    steps: int = 1,
    states: StateStore | None = None,
) -> RunStats:
    """Run every tile of ``grid`` that ``ledger`` does not list as done, and every chunk
    of the ``pyramid`` levels, each as soon as the chunks below it exist.

    With ``dependent`` set, a tile starts only after its left, top and top-left
    neighbours, and receives their contexts; contexts of finished tiles whose consumers
    are not done yet are taken from ``contexts`` (the persisted store) on resume.
    Given ``states`` (``--schedule step``), each tile runs its ``steps`` sampler steps as
    separate nodes, its state kept there between them, each step receiving its
    neighbours' contexts of that step (:class:`~tilewave.pipeline.wavefront.Wavefront`).
    Pyramid chunks go first when both are ready: they are cheap, and each done early
    keeps the tail after the last tile short. ``guard`` is called before each record and
    raises if the job may no longer write (its lease on an object store was lost).
    ``on_tile`` is told how many tiles (sampler steps under ``--schedule step``) and
    pyramid chunks each wait finished.
    """
    start = time.perf_counter()
    done = ledger.done()
    strays = [t for t in done if not grid.contains(*t)]
    if strays:
        raise ResumeMismatchError(
            f"the ledger lists tile {strays[0]} outside the {grid.rows} x {grid.cols} grid; it "
            "belongs to another job, so rerun with --overwrite instead of --resume")
    stepwise = states is not None
    nodes = steps if stepwise else 1
    window = RowsAhead.for_workers(pool.workers, dependent)
    wave = Wavefront(grid.rows, grid.cols, dependent, done, rows_ahead=window.rows, steps=nodes,
                     partial=ledger.steps_done() if stepwise else None)
    table: ContextTable[Any] = ContextTable(grid.rows, grid.cols)
    if states is not None:
        _check_states(wave, states, _tiles(grid))
    if dependent and contexts is not None:
        _resumed_contexts(grid, wave, contexts, table, stepwise)
    handover = _Handover(wave, table, contexts, states)
    levels = PyramidFront(pyramid, done, ledger.done_chunks()) if pyramid else None
    tiles_run = tiles_cheap = chunks_run = peak_in_flight = steps_run = steps_total = 0
    last_tile = start if wave.finished else None
    try:
        while not wave.finished or (levels is not None and not levels.finished):
            _submit_ready(pool, wave, levels, table if dependent else None, stepwise)
            peak_in_flight = max(peak_in_flight, pool.in_flight())
            ready = wave.has_ready() or (levels is not None and levels.has_ready())
            if not pool.in_flight() and not ready:  # nothing runs or is ready: a bug, not a hang
                raise RuntimeError("the tile DAG stalled: no tile or pyramid chunk is ready")
            # With nothing of this job in flight, other jobs hold the workers' room: this
            # waits for some and finds nothing finished.
            finished = pool.wait()
            if not finished:
                continue
            if guard is not None:
                guard()
            # The worker wrote the chunk and its contexts before reporting: record first,
            # then hand over and free, so a crash at any point leaves a resumable state.
            final = [t for t in finished if t.level or t.step is None or t.step == nodes - 1]
            between: list[tuple[int, ...]] = [step_entry(t.row, t.col, t.step) for t in finished
                       if not t.level and t.step is not None and t.step < nodes - 1]
            ledger.record([*(t.index for t in final), *between],
                          [t.checksum for t in final] + [None] * len(between))
            for t in finished:
                if t.level:
                    assert levels is not None
                    levels.finish((t.level, t.row, t.col))
                    chunks_run += 1
                    continue
                handover.finished(t)
                if levels is not None and wave.is_done((t.row, t.col)):
                    levels.finish_tile(t.row, t.col)
            tiles_run += sum(not t.level for t in final)
            tiles_cheap += sum(t.cheap for t in final)
            steps_run += sum(t.steps[0] for t in final if t.steps)
            steps_total += sum(t.steps[1] for t in final if t.steps)
            if wave.finished and last_tile is None:
                last_tile = time.perf_counter()
            if on_tile is not None:
                on_tile(len(finished))
    finally:
        ledger.close()
    end = time.perf_counter()
    tail = end - (last_tile or end)  # the pyramid chunks left after the last tile
    return RunStats(tiles_run=tiles_run, tiles_cheap=tiles_cheap, steps_run=steps_run,
                    steps_total=steps_total, tile_seconds=end - start - tail, pyramid_seconds=tail,
                    seconds=end - start, peak_contexts=table.peak, peak_in_flight=peak_in_flight,
                    chunks_run=chunks_run, peak_context_bytes=table.peak_bytes)
