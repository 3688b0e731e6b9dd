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
from ..storage.contexts import ContextStore
from ..storage.ledger import Ledger
from .directions import OUTBOUND
from .grid import TileGrid
from .indices import TileIndex
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


def _resumed_contexts(grid: TileGrid, done: set[TileIndex], contexts: ContextStore,
                      table: ContextTable[Any]) -> None:
    """Put back the persisted contexts that finished tiles left for unfinished ones."""
    for producer in done:
        for direction, (dr, dc) in OUTBOUND.items():
            consumer = (producer[0] + dr, producer[1] + dc)
            if grid.contains(*consumer) and consumer not in done:
                persisted = contexts.existing(producer, direction)
                if persisted is None:
                    raise ResumeMismatchError(
                        f"tile {producer} is done but the context it left for tile {consumer} "
                        f"is missing from {contexts.root}; rerun with --overwrite instead of "
                        "--resume")
                table.put(producer, direction, persisted)


def run_tiles(  # noqa: C901
    grid: TileGrid,
    pool: TilePool,
    ledger: Ledger,
    dependent: bool,
    contexts: ContextStore | None = None,
    on_tile: Callable[[int], None] | None = None,
    pyramid: PyramidPlan | None = None,
    guard: Callable[[], None] | None = None,
) -> RunStats:
    """Run every tile of ``grid`` that ``ledger`` does not list as done, and every chunk
    of the ``pyramid`` levels, each as soon as the chunks below it exist.

    With ``dependent`` set, a tile starts only after its left, top and top-left
    neighbours, and receives their contexts; contexts of finished tiles whose consumers
    are not done yet are taken from ``contexts`` (the persisted store) on resume.
    Pyramid chunks go first when both are ready: they are cheap, and each done early
    keeps the tail after the last tile short. ``guard`` is called before each record and
    raises if the job may no longer write (its lease on an object store was lost).
    """
    start = time.perf_counter()
    done = ledger.done()
    strays = [t for t in done if not grid.contains(*t)]
    if strays:
        raise ResumeMismatchError(
            f"the ledger lists tile {strays[0]} outside the {grid.rows} x {grid.cols} grid; it "
            "belongs to another job, so rerun with --overwrite instead of --resume")
    window = RowsAhead.for_workers(pool.workers, dependent)
    wave = Wavefront(grid.rows, grid.cols, dependent, done, rows_ahead=window.rows)
    table: ContextTable[Any] = ContextTable(grid.rows, grid.cols)
    if dependent and contexts is not None:
        _resumed_contexts(grid, done, contexts, table)
    levels = PyramidFront(pyramid, done, ledger.done_chunks()) if pyramid else None
    tiles_run = tiles_cheap = chunks_run = peak_in_flight = steps_run = steps_total = 0
    last_tile = start if wave.finished else None
    try:
        while not wave.finished or (levels is not None and not levels.finished):
            while pool.in_flight() < pool.capacity:
                chunk = levels.pop_ready() if levels is not None else None
                if chunk is not None:
                    pool.submit(chunk, {})
                    continue
                if not wave.has_ready():
                    break
                index = wave.pop_ready()
                assert index is not None
                inbound = table.inbound(index) if dependent else {}
                pool.submit(index, {str(k): v for k, v in inbound.items() if v is not None})
            peak_in_flight = max(peak_in_flight, pool.in_flight())
            if not pool.in_flight():  # nothing runs and nothing is ready: a bug, not a hang
                raise RuntimeError("the tile DAG stalled: no tile or pyramid chunk is ready")
            finished = pool.wait()
            if guard is not None:
                guard()
            # The worker wrote the chunk and its contexts before reporting: record first,
            # then hand over and free, so a crash at any point leaves a resumable state.
            ledger.record([t.index for t in finished], [t.checksum for t in finished])
            for t in finished:
                if t.level:
                    assert levels is not None
                    levels.finish((t.level, t.row, t.col))
                    chunks_run += 1
                    continue
                if levels is not None:
                    levels.finish_tile(t.row, t.col)
                for direction, handle in t.outbound.items():
                    consumer = table.consumer((t.row, t.col), direction)
                    if consumer is not None and wave.is_done(consumer):
                        # A tile run again after --verify, whose neighbour is still done.
                        if contexts is not None:
                            contexts.remove((t.row, t.col), direction)
                        continue
                    table.put((t.row, t.col), direction, handle)
                wave.finish((t.row, t.col))
                for producer, direction in table.release((t.row, t.col)):
                    if contexts is not None:
                        contexts.remove(producer, direction)
            tiles_run += sum(not t.level for t in finished)
            tiles_cheap += sum(t.cheap for t in finished)
            steps_run += sum(t.steps[0] for t in finished if t.steps)
            steps_total += sum(t.steps[1] for t in finished if t.steps)
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
                    chunks_run=chunks_run)
