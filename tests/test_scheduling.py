"""Scheduling policies and the driver loop against a fake pool: no Ray, no model.

The fake pool finishes any subset of the submitted tiles in random order and checks, as
each tile "runs", that its neighbours finished first and that the contexts it received
are the ones they left: what a real pool relies on the driver loop for.
"""

from __future__ import annotations

import random

import pytest

from tilewave.errors import WorkerLostError
from tilewave.pipeline.directions import ARRIVES_AS, INBOUND, OUTBOUND
from tilewave.pipeline.grid import TileGrid
from tilewave.pipeline.messages import TileDone
from tilewave.pipeline.runner import run_tiles
from tilewave.pipeline.scheduling import LeastLoaded, Placement, RetryLostTiles, RowsAhead, share_nodes
from tilewave.storage.ledger import Ledger


class FakePool:
    """A pool of ``workers`` whose tiles finish in random order, checked as they run."""

    def __init__(self, grid: TileGrid, workers: int, dependent: bool, seed: int,
                 fail_at: int | None = None):
        self.grid, self.workers, self.capacity = grid, workers, 2 * workers
        self.dependent = dependent
        self.rng = random.Random(seed)
        self.pending: list[tuple[tuple[int, int], dict]] = []
        self.finished: list[tuple[int, int]] = []
        self.fail_at = fail_at
        #: (tile, first unfinished row) at each submission.
        self.submitted: list[tuple[tuple[int, int], int]] = []

    def first_unfinished_row(self) -> int:
        done = set(self.finished)
        for r in range(self.grid.rows):
            if any((r, c) not in done for c in range(self.grid.cols)):
                return r
        return self.grid.rows

    def submit(self, index, inbound, step=None) -> None:
        assert step is None, "a one-pass model's tiles run whole"
        self.submitted.append((index, self.first_unfinished_row()))
        self.pending.append((index, dict(inbound)))

    def in_flight(self) -> int:
        return len(self.pending)

    def _run(self, index, inbound) -> TileDone:
        r, c = index
        expected = {}
        if self.dependent:
            for name, (dr, dc) in INBOUND.items():
                producer = (r + dr, c + dc)
                if self.grid.contains(*producer):
                    assert producer in self.finished, f"{index} ran before {producer}"
                    sent = next(d for d, arrives in ARRIVES_AS.items() if arrives == name)
                    expected[str(name)] = f"{producer}->{sent}"
        assert inbound == expected, (index, inbound, expected)
        outbound = {d: f"{index}->{d}" for d, (dr, dc) in OUTBOUND.items()
                    if self.dependent and self.grid.contains(r + dr, c + dc)}
        self.finished.append(index)
        return TileDone(row=r, col=c, seconds=0.0, worker="fake", outbound=outbound)

    def wait(self) -> list[TileDone]:
        if self.fail_at is not None and len(self.finished) >= self.fail_at:
            raise RuntimeError("a tile failed")
        self.rng.shuffle(self.pending)
        n = self.rng.randint(1, len(self.pending))
        batch, self.pending = self.pending[:n], self.pending[n:]
        return [self._run(index, inbound) for index, inbound in batch]

    def close(self) -> None:
        self.pending.clear()


@pytest.mark.parametrize("dependent", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_every_tile_runs_once_after_its_neighbours(tmp_path, dependent, seed):
    rng = random.Random(seed)
    grid = TileGrid(rng.randint(1, 200), rng.randint(1, 200), rng.choice([16, 32, 48]), 2)
    pool = FakePool(grid, rng.randint(1, 4), dependent, seed)
    stats = run_tiles(grid, pool, Ledger(str(tmp_path)), dependent)
    assert sorted(pool.finished) == [t.index for t in grid]
    assert stats.tiles_run == grid.count
    assert Ledger(str(tmp_path)).done() == {t.index for t in grid}
    if dependent:  # the window: never more than workers + 1 rows below the first unfinished
        assert all(r <= first + pool.workers + 1 for (r, _), first in pool.submitted)
        assert stats.peak_contexts <= 3 * grid.cols * (pool.workers + 2)


def test_a_failed_run_resumes_with_only_the_missing_tiles(tmp_path):
    grid = TileGrid(100, 100, 16, 2)
    failing = FakePool(grid, 2, False, seed=1, fail_at=20)
    with pytest.raises(RuntimeError, match="a tile failed"):
        run_tiles(grid, failing, Ledger(str(tmp_path)), dependent=False)
    recorded = Ledger(str(tmp_path)).done()
    assert recorded == set(failing.finished) and len(recorded) >= 20
    rest = FakePool(grid, 2, False, seed=2)
    stats = run_tiles(grid, rest, Ledger(str(tmp_path)), dependent=False)
    assert stats.tiles_run == grid.count - len(recorded)
    assert not set(rest.finished) & recorded


def test_least_loaded_dispatch_fills_the_emptiest_worker_first():
    dispatch = LeastLoaded(3)
    assert [dispatch.pick() for _ in range(5)] == [0, 1, 2, 0, 1]
    dispatch.finished(2)
    dispatch.finished(0)
    assert dispatch.load == [1, 2, 0]
    assert dispatch.pick() == 2


def test_least_loaded_dispatch_weighs_load_by_slots():
    dispatch = LeastLoaded(2, [3, 1])  # a 3-slot node worker and a 1-slot one
    picks = [dispatch.pick() for _ in range(8)]
    assert picks.count(0) == 6 and picks.count(1) == 2, picks


def test_one_worker_process_per_node_with_a_slot_per_cpu():
    assert share_nodes(2, {"a": 2}) == [Placement("a", 2)]
    # Largest nodes first, the last one partly used, nodes without CPUs never.
    assert share_nodes(5, {"head": 0, "small": 1, "big": 4}) == [Placement("big", 4), Placement("small", 1)]
    assert share_nodes(2, {"n1": 1, "n2": 1, "n3": 1}) == [Placement("n1", 1), Placement("n2", 1)]
    with pytest.raises(ValueError, match="more than the nodes' 3 CPUs"):
        share_nodes(4, {"n1": 1, "n2": 2})


def test_a_tile_may_lose_its_worker_a_bounded_number_of_times():
    retry = RetryLostTiles(attempts=2)
    retry.record_loss((0, 1), "node gone")
    retry.record_loss((0, 1), "node gone")
    retry.record_loss((3, 3), "node gone")  # counted per tile
    with pytest.raises(WorkerLostError, match=r"tile \(0, 1\) lost its worker 2 times \(node gone\)"):
        retry.record_loss((0, 1), "node gone")


def test_rows_ahead_window():
    assert RowsAhead.for_workers(3, dependent=True) == RowsAhead(4)
    assert RowsAhead.for_workers(3, dependent=False).allows(1000, 0)
    window = RowsAhead(2)
    assert window.allows(7, 5) and not window.allows(8, 5)


def test_errors_keep_their_fields_across_processes_and_resemble_built_ins():
    """Errors cross from Ray workers to the driver pickled: their fields must survive, and
    callers may catch them as the built-ins they resemble."""
    import pickle

    from tilewave.errors import (
        OutputBusyError,
        StorageError,
        TileFailedError,
        UnreadableInputError,
        user_error,
    )

    failed = pickle.loads(pickle.dumps(TileFailedError(2, 3, (0, 8, 8, 16), "boom", "Traceback")))
    assert (failed.row, failed.col, failed.window, failed.cause, failed.details) == \
        (2, 3, (0, 8, 8, 16), "boom", "Traceback")
    assert isinstance(failed, RuntimeError) and str(failed).startswith("tile (row 2, col 3)")
    unreadable = pickle.loads(pickle.dumps(UnreadableInputError("in.zarr", 1, 0, (0, 4, 0, 4), "bad")))
    assert isinstance(unreadable, ValueError) and unreadable.exit_code == 2 and unreadable.row == 1
    busy = pickle.loads(pickle.dumps(OutputBusyError("out.zarr", "pid 7 on host")))
    assert isinstance(busy, BlockingIOError) and busy.holder == "pid 7 on host"
    assert "out.zarr" in str(busy)
    full = user_error(OSError(28, "No space left on device", "/out/0/c/0/0"))
    assert isinstance(full, StorageError) and isinstance(full, OSError)
    assert full.path == "/out/0/c/0/0" and str(full).startswith("No space left on device writing")
    assert user_error(ValueError("a bug")) is None
