"""Pools of tile workers behind one small interface: a Ray actor pool, and an in-process
pool that runs the same :class:`TileWorker` code serially (for tests, debugging and
benchmark baselines).

A pool only moves references: the driver submits tile coordinates and context handles,
and gets back small reports plus handles to the contexts the tile emitted. The handles
name files of the job's context store, which the producing worker wrote and the
consuming worker reads, so contexts never pass through the driver.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InputError, StorageError, TileFailedError, TilewaveError, WorkerLostError
from ..storage.job_state import ContextStore
from .worker import TileDone, TileError, TileWorker, WorkerJob

Index = tuple[int, int]
#: How long workers may take to be scheduled and load their model.
STARTUP_TIMEOUT_S = 900


@dataclass
class Completion:
    """A finished tile: its report and handles to its outgoing contexts."""

    index: Index
    done: TileDone
    outbound: dict[str, Any]


class TilePool(Protocol):
    workers: int
    #: How many tiles may be submitted and not yet completed.
    capacity: int

    def submit(self, index: Index, inbound: dict[str, Any]) -> None: ...

    def wait(self) -> list[Completion]:
        """Block until at least one submitted tile finished; raise if one failed."""
        ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


def _completion(job: WorkerJob, done: TileDone) -> Completion:
    store = ContextStore(job.contexts_in) if job.contexts_in else None
    outbound = {d: store.handle((done.row, done.col), d) for d in done.contexts} if store else {}
    return Completion((done.row, done.col), done, outbound)


def _failed(job: WorkerJob, index: Index, error: TileError | None, cause: str) -> TilewaveError:
    if error is not None and error.bad_input:
        return InputError(f"input {job.input_path or job.source.path!r} {error.cause}")
    if error is not None and error.storage_full:
        return StorageError(f"{error.cause} into {job.output_array!r}; free space or choose a "
                            "writable location, then rerun with --resume to keep the finished tiles")
    exc = TileFailedError(index[0], index[1], job.grid[index].core, cause)
    exc.details = error.details if error is not None else ""  # type: ignore[attr-defined]
    return exc


class InProcessPool:
    """Runs tiles one after another in this process."""

    def __init__(self, job: WorkerJob):
        self.job = job
        self.worker = TileWorker(job)
        self.workers = 1
        self.capacity = 1
        self._queue: collections.deque[tuple[Index, dict[str, Any]]] = collections.deque()

    def submit(self, index: Index, inbound: dict[str, Any]) -> None:
        self._queue.append((index, inbound))

    def in_flight(self) -> int:
        return len(self._queue)

    def wait(self) -> list[Completion]:
        index, inbound = self._queue.popleft()
        try:
            done = self.worker.process(*index, **inbound)
        except TileError as err:
            raise _failed(self.job, index, err, err.cause) from None
        return [_completion(self.job, done)]

    def close(self) -> None:
        self._queue.clear()


#: Times a tile may lose its worker (process or node death) before the run gives up.
MAX_TILE_ATTEMPTS = 4


class RayPool:
    """Ray actors, one model each, fed by least-loaded dispatch."""

    def __init__(self, job: WorkerJob, workers: int, gpus_per_worker: float = 0.0,
                 queue_depth: int = 2):
        import ray

        self.job = job
        self.workers = workers
        self.capacity = workers * queue_depth
        # A restarted actor reloads its model; its unfinished calls are retried, which is
        # safe because a tile only ever (re)writes its own chunk and its own contexts.
        self._actor_cls = ray.remote(TileWorker).options(
            num_cpus=1, num_gpus=gpus_per_worker, max_restarts=3, max_task_retries=3
        )
        self._actors = [self._actor_cls.remote(job) for _ in range(workers)]
        self._load = [0] * workers
        self._pending: dict[Any, tuple[Index, int, dict[str, Any]]] = {}
        self._attempts: dict[Index, int] = {}
        # Surfaces model-loading errors now, as one clear failure, rather than per tile.
        try:
            ray.get([a.describe.remote() for a in self._actors], timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise WorkerLostError(
                f"{workers} tile workers did not start within {STARTUP_TIMEOUT_S // 60} minutes; "
                "the cluster lacks the CPUs or GPUs they ask for"
            ) from None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            raise WorkerLostError(f"tile workers failed to start: {_cause(exc)}") from None

    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, index: Index, inbound: dict[str, Any]) -> None:
        k = min(range(self.workers), key=self._load.__getitem__)
        ref = self._actors[k].process.remote(index[0], index[1], **inbound)
        self._pending[ref] = (index, k, inbound)
        self._load[k] += 1

    def wait(self) -> list[Completion]:
        import ray

        ready, _ = ray.wait(list(self._pending), num_returns=1)
        rest = [r for r in self._pending if r not in ready]
        more = ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        out = []
        for ref in [*ready, *more]:
            index, k, inbound = self._pending.pop(ref)
            self._load[k] -= 1
            try:
                done = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                err = exc.cause if isinstance(exc.cause, TileError) else None
                raise _failed(self.job, index, err, err.cause if err else _cause(exc)) from None
            except ray.exceptions.RayActorError as exc:
                self._retry(index, k, inbound, exc)
                continue
            out.append(_completion(self.job, done))
        return out

    def _retry(self, index: Index, k: int, inbound: dict[str, Any], exc: Exception) -> None:
        """Run a tile again whose worker died or became unreachable (its node went away).

        A tile only ever writes its own chunk and its own context files, so running it
        again is safe whether or not the first attempt got as far as writing.
        """
        import ray

        self._attempts[index] = self._attempts.get(index, 0) + 1
        if self._attempts[index] > MAX_TILE_ATTEMPTS:
            raise WorkerLostError(
                f"tile {index} lost its worker {MAX_TILE_ATTEMPTS} times ({_cause(exc)}); the "
                "cluster is failing: rerun with --resume to keep the finished tiles"
            ) from None
        if isinstance(exc, ray.exceptions.ActorDiedError):
            # Out of restarts (or its node is gone for good): a fresh actor takes its place,
            # wherever the scheduler finds room.
            self._actors[k] = self._actor_cls.remote(self.job)
        self.submit(index, inbound)

    def close(self) -> None:
        import ray

        for ref in list(self._pending):
            ray.cancel(ref, force=False)
        self._pending.clear()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__
