"""Starting a stage's tile workers: in this process, or Ray actors placed on the job's
cluster (joined, or started locally, once for all stages) — the
:class:`~tilewave.pipeline.pool.PoolLauncher` the pipeline runs its stages with."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import SettingsError, WorkerLostError
from ..pipeline.job_plan import JobPlan
from ..pipeline.messages import TileJob
from ..pipeline.pool import TilePool
from ..pipeline.report import Progress


class PoolFactory:
    """Starts a stage's workers: in this process, or Ray actors on the job's cluster,
    which is joined (or started) once for all stages.

    With ``keep``, workers outlive their stage and serve every stage asked of them, of
    this job or of a cohort's other inputs, several at once from their own threads
    (each stage a lane into them); they keep their model where the stages run the same
    one. A stage that fails leaves them to the others once its tiles still running
    ended. Without ``keep``, each stage starts its own, and a failed stage discards them
    at once (calls of its tiles may still be running).
    """

    def __init__(self, plan: JobPlan, progress: Progress, keep: bool = False):
        self.plan, self.progress, self.keep = plan, progress, keep
        self.cluster: Any = None
        self._kept: Any = None  # the workers, with ``keep``
        self._starting = threading.Lock()
        self._stopped = threading.Event()

    def connect(self) -> Any:
        """Join the plan's cluster, or start a local instance, once. Ray's daemons die
        with the thread that started them: call it from one that outlives the job."""
        from .cluster import connect

        if self.cluster is None:
            self.progress.say("joining the Ray cluster at " + self.plan.address if self.plan.address
                              else "starting a local Ray instance")
            self.cluster = connect(self.plan.address)
        return self.cluster

    @contextlib.contextmanager
    def __call__(self, job: TileJob, tiles: int, label: str) -> Iterator[TilePool]:
        """A lane for ``job`` into workers (at most one per remaining tile, unless kept
        for other stages), closed on leaving."""
        if self.keep:
            with self._starting:  # a cohort's inputs ask from their own threads
                if self._kept is None and not self._stopped.is_set():
                    self._kept = self._start(job, None, label)
                workers = self._kept
            if self._stopped.is_set():  # the cohort stopped, maybe while these started
                self.stop()
                raise WorkerLostError("the tile workers were stopped")
        else:
            workers = self._start(job, tiles, label)
        pool = workers.lane(job)
        try:
            yield pool
        except BaseException:
            pool.close(drain=self.keep)
            if not self.keep:
                workers.close()
            raise
        pool.close()
        if not self.keep:
            workers.close()

    def _start(self, job: TileJob, tiles: int | None, label: str) -> Any:
        """Workers for ``job``, as many as its ``tiles`` can use (None: the plan's, or
        every CPU or GPU, for stages to come)."""
        from .pools import InProcessWorkers, RayWorkers

        if self.plan.executor == "local":
            import torch

            # On CPUs, --workers tiles at once (default one, on every core); on a GPU one
            # at a time (it batches them).
            slots = 1 if torch.cuda.is_available() else max(1, min(self.plan.workers or 1,
                                                                    tiles or 1 << 30))
            self.progress.say(f"{label}loading {job.model} in this process, {slots} "
                              f"tile{'s' * (slots != 1)} at once")
            return InProcessWorkers(job, slots)
        cluster = self.connect()
        gpus = 1.0 if cluster.gpus >= 1 else 0.0
        available = int(cluster.gpus if gpus else cluster.cpus)
        workers = self.plan.workers
        if workers is not None and workers > available:
            raise SettingsError(f"--workers {workers} asks for more workers than the cluster's "
                                f"{available} {'GPUs' if gpus else 'CPUs'}; lower it")
        n = max(1, min(workers or available, tiles or available))
        placements = _placements(n, gpus > 0, self.plan.batch)
        at_once = sum(p.slots for p in placements)
        self.progress.say(f"{label}starting {len(placements)} worker process"
                          f"{'es' * (len(placements) != 1)} with {job.model}"
                          f"{' on GPUs' if gpus else ''}, {at_once} tile{'s' * (at_once != 1)} at once")
        return RayWorkers(job, placements, gpus)

    def stop(self) -> None:
        """Stop the kept workers (tiles running on them fail), and start none again."""
        self._stopped.set()
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()

    def close(self) -> None:
        """Stop the kept workers, then leave the cluster joined or started, if any."""
        self.stop()
        if self.cluster is not None:
            from .cluster import disconnect

            disconnect(self.cluster)
            self.cluster = None


def _placements(workers: int, gpus: bool, batch: int | None) -> list[Any]:
    """One worker process per GPU (``workers`` GPUs, a batch of tiles at a time each), or
    per CPU node (``workers`` tiles at once, a tile per CPU)."""
    import ray

    from ..pipeline.scheduling import GPU_BATCH, Placement, share_nodes

    if gpus:
        return [Placement(None, batch or GPU_BATCH) for _ in range(workers)]
    nodes = {n["NodeID"]: int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]}
    try:
        return share_nodes(workers, nodes)
    except ValueError:  # fractional CPUs per node: one tile per process, anywhere
        return [Placement(None, 1) for _ in range(workers)]
