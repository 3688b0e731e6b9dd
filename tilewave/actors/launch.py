"""Starting a stage's tile workers: in this process, or Ray actors placed on the job's
cluster (joined, or started locally, once for all stages) — the
:class:`~tilewave.pipeline.pool.PoolLauncher` the pipeline runs its stages with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import SettingsError
from ..pipeline.job_plan import JobPlan
from ..pipeline.messages import TileJob
from ..pipeline.pool import TilePool
from ..pipeline.report import Progress


class PoolFactory:
    """Starts a stage's workers: in this process, or Ray actors on the job's cluster,
    which is joined (or started) once for all stages.

    With ``keep``, workers outlive their stage: the next stage (of this job, or of the
    next input of a cohort) is handed the same ones, retargeted, and they keep their
    model where it runs the same one. A stage that fails discards them (calls of its
    tiles may still be running).
    """

    def __init__(self, plan: JobPlan, progress: Progress, keep: bool = False):
        self.plan, self.progress, self.keep = plan, progress, keep
        self.cluster: Any = None
        self._kept: TilePool | None = None

    def _connect(self) -> Any:
        from .cluster import connect

        if self.cluster is None:
            self.progress.say("joining the Ray cluster at " + self.plan.address if self.plan.address
                              else "starting a local Ray instance")
            self.cluster = connect(self.plan.address)
        return self.cluster

    @contextlib.contextmanager
    def __call__(self, job: TileJob, tiles: int, label: str) -> Iterator[TilePool]:
        """Workers for ``job`` (at most one per remaining tile), closed on leaving unless
        kept for the next stage."""
        if self._kept is not None:
            pool, self._kept = self._kept, None
            pool.retarget(job)
        else:
            pool = self._start(job, tiles, label)
        try:
            yield pool
        except BaseException:
            pool.close()
            raise
        if self.keep:
            self._kept = pool
        else:
            pool.close()

    def _start(self, job: TileJob, tiles: int, label: str) -> TilePool:
        from .pools import InProcessPool, RayPool

        if self.plan.executor == "local":
            import torch

            # On CPUs, --workers tiles at once (default one, on every core); on a GPU one
            # at a time (it batches them).
            slots = 1 if torch.cuda.is_available() else max(1, min(self.plan.workers or 1, tiles))
            self.progress.say(f"{label}loading {job.model} in this process, {slots} "
                              f"tile{'s' * (slots != 1)} at once")
            return InProcessPool(job, slots)
        cluster = self._connect()
        gpus = 1.0 if cluster.gpus >= 1 else 0.0
        available = int(cluster.gpus if gpus else cluster.cpus)
        workers = self.plan.workers
        if workers is not None and workers > available:
            raise SettingsError(f"--workers {workers} asks for more workers than the cluster's "
                                f"{available} {'GPUs' if gpus else 'CPUs'}; lower it")
        n = max(1, min(workers or available, tiles))
        placements = _placements(n, gpus > 0, self.plan.batch)
        at_once = sum(p.slots for p in placements)
        self.progress.say(f"{label}starting {len(placements)} worker process"
                          f"{'es' * (len(placements) != 1)} with {job.model}"
                          f"{' on GPUs' if gpus else ''}, {at_once} tile{'s' * (at_once != 1)} at once")
        return RayPool(job, placements, gpus)

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
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
