"""The driver loop: feeds ready tiles to a worker pool, records finished ones, and hands
contexts from producers to consumers, dropping each once its consumer is done.

The loop touches only tile coordinates and context handles; pixels stay with workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ResumeMismatchError
from ..storage.job_state import ContextStore, Ledger
from .directions import OUTBOUND
from .plan import TileGrid
from .scheduling import RowsAhead
from .wavefront import ContextTable, Wavefront

if TYPE_CHECKING:  # the pools import the pipeline; the loop needs only their interface
    from ..actors.pools import TilePool

Index = tuple[int, int]


@dataclass
class RunStats:
    """What one pass of the driver loop did."""

    tiles_run: int
    seconds: float
    peak_contexts: int
    peak_in_flight: int
    #: Tiles that took the cheap path (adaptive jobs).
    tiles_cheap: int = 0


def _resumed_contexts(grid: TileGrid, done: set[Index], contexts: ContextStore,
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


def run_tiles(
    grid: TileGrid,
    pool: TilePool,
    ledger: Ledger,
    dependent: bool,
    contexts: ContextStore | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> RunStats:
    """Run every tile of ``grid`` that ``ledger`` does not list as done.

    With ``dependent`` set, a tile starts only after its left, top and top-left
    neighbours, and receives their contexts; contexts of finished tiles whose consumers
    are not done yet are taken from ``contexts`` (the persisted store) on resume.
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
    tiles_run = tiles_cheap = peak_in_flight = 0
    try:
        while not wave.finished:
            while pool.in_flight() < pool.capacity and wave.has_ready():
                index = wave.pop_ready()
                assert index is not None
                inbound = table.inbound(index) if dependent else {}
                pool.submit(index, {str(k): v for k, v in inbound.items() if v is not None})
            peak_in_flight = max(peak_in_flight, pool.in_flight())
            finished = pool.wait()
            # The worker wrote the chunk and its contexts before reporting: record first,
            # then hand over and free, so a crash at any point leaves a resumable state.
            ledger.record([t.index for t in finished])
            for t in finished:
                for direction, handle in t.outbound.items():
                    table.put(t.index, direction, handle)
                wave.finish(t.index)
                for producer, direction in table.release(t.index):
                    if contexts is not None:
                        contexts.remove(producer, direction)
            tiles_run += len(finished)
            tiles_cheap += sum(t.cheap for t in finished)
            if on_tile is not None:
                on_tile(len(finished))
    finally:
        ledger.close()
    return RunStats(tiles_run, time.perf_counter() - start, table.peak, peak_in_flight, tiles_cheap)
