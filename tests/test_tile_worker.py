"""The tile worker as it runs in this process: each tile computes on the torch threads
its own job asks for, on the compute thread that runs it."""

from __future__ import annotations

import torch

from tilewave.actors.worker import TileWorker
from tilewave.pipeline.messages import TileJob


def test_each_tile_computes_on_the_threads_its_job_asks_for():
    """OpenMP keeps a thread count per thread: a count set on another thread never reaches
    a compute thread that has computed already, so each tile sets its own there (a
    positional model's tiles on one thread, beside another job's on two)."""
    job = TileJob(model="bicubic", scale=2, grid=None, mode="halo", ramp=None,  # type: ignore[arg-type]
                  source=None, output_array="", contexts_in=None)  # type: ignore[arg-type]
    worker = TileWorker(job, slots=1, threads=2)
    try:
        seen = [worker._compute_on(n)(torch.get_num_threads) for n in (2, 1, 2, 1)]
    finally:
        worker.release()
    assert seen == [2, 1, 2, 1]
