"""Pools of tile workers behind one small interface: Ray actors, and an in-process pool
that runs the same :class:`TileWorker` in this process (``--local``, and small jobs).

Workers are started once (:class:`InProcessWorkers`, :class:`RayWorkers`) and run the
tiles of one job or of several at once: each job submits through its own lane (the
:class:`~tilewave.pipeline.pool.TilePool` its driver loop sees), and all lanes share the
workers' capacity (:class:`SharedCapacity`), first come first served, so a second job's
tiles fill what the first leaves idle at its end.

A pool only moves references: the driver submits tile coordinates and context handles
and gets back :class:`~tilewave.pipeline.messages.TileDone` reports, which carry handles
to the contexts the tile left. Contexts live in the job's context store, written by the
producing worker and read by the consuming one, never passing through the driver.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from ..errors import WorkerLostError
from ..pipeline.indices import WorkIndex
from ..pipeline.messages import TileDone, TileJob
from ..pipeline.pool import Inbound, TilePool
from ..pipeline.scheduling import LeastLoaded, Placement, RetryLostTiles
from .worker import TileWorker

#: How long workers may take to be scheduled and load their model.
STARTUP_TIMEOUT_S = 900
#: Seconds a call an actor refused while restarting waits before it is submitted again.
RESTART_POLL_S = 0.5


class SharedCapacity:
    """How many tiles all the lanes of one set of workers may have submitted and not yet
    collected; a lane with none of its own waits here for the others to free one. Each
    lane holds its part through a :class:`Lease`, given back whole when it closes,
    whatever failed."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._taken = 0
        self._changed = threading.Condition()
        self._closed = False

    def free(self) -> int:
        with self._changed:
            return max(0, self.capacity - self._taken)

    def take(self) -> None:
        with self._changed:
            self._taken += 1

    def give(self, count: int) -> None:
        if count:
            with self._changed:
                self._taken -= count
                self._changed.notify_all()

    def wait_free(self) -> None:
        """Until some capacity is free; raises once the workers stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._taken < self.capacity)
            if self._closed:
                raise WorkerLostError("the tile workers were stopped")

    def close(self) -> None:
        """The workers stopped: nobody waits for room any longer (their next call fails)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def lease(self) -> Lease:
        return Lease(self)


class Lease:
    """One lane's part of a :class:`SharedCapacity`: what it has taken and not given back."""

    def __init__(self, shared: SharedCapacity):
        self.shared, self.held = shared, 0

    def take(self) -> None:
        self.shared.take()
        self.held += 1

    def give(self, count: int = 1) -> None:
        self.shared.give(count)
        self.held -= count

    def give_all(self) -> None:
        self.give(self.held)


class InProcessWorkers:
    """Runs tiles in this process as one Ray worker runs them in its own: ``slots`` tiles
    computing at once on threads that share one model, each on CPUs / ``slots`` torch
    threads, and as many calls again reading their input or writing their output.

    With one slot a tile computes on every CPU; with one per CPU, tiles compute side by
    side on one thread each, which on 2 cores ran SPAN 1.27x faster than one tile at a
    time on both (298 x 298 windows; convolutions of such maps do not split well over
    threads)."""

    def __init__(self, job: TileJob, slots: int = 1, queue_depth: int | None = None):
        import torch

        # The worker sets torch's (process-wide) thread count for its model; this process
        # gets its own back at close(), so later work here computes as it did before.
        self._threads = torch.get_num_threads()
        self.worker = TileWorker(job, slots)
        self.workers = slots
        self.processes = 0
        # One slot runs tiles strictly one after another, in the wavefront's order, so
        # that a failure leaves exactly the tiles before it recorded (tests and debugging
        # rely on it); several also read and write beside their computing.
        self.shared = SharedCapacity(slots * (queue_depth or (1 if slots == 1 else 2)))
        self.calls = ThreadPoolExecutor(self.shared.capacity, thread_name_prefix="tile-call")
        self._tokens = itertools.count(1)

    def lane(self, job: TileJob) -> InProcessPool:
        """Where ``job``'s driver loop submits its tiles."""
        return InProcessPool(self, job, next(self._tokens))

    def close(self) -> None:
        import torch

        # Calls not started are dropped, and so are tiles waiting for a compute slot; those
        # computing finish first (a thread cannot be stopped), so nothing writes into the
        # output after the stage ends. Then the model goes: this process may live on.
        self.shared.close()
        self.worker.cancel_waiting()
        self.calls.shutdown(wait=True, cancel_futures=True)
        self.worker.release()
        torch.set_num_threads(self._threads)


class InProcessPool:
    """One job's lane into :class:`InProcessWorkers`."""

    def __init__(self, workers: InProcessWorkers, job: TileJob, token: int):
        self._workers, self._job, self._token = workers, job, token
        self.workers = workers.workers
        self.processes = 0
        # A tile in this process fails with it, and is never retried.
        self.on_retry: Callable[[WorkIndex, str], None] | None = None
        self._pending: set[Future[TileDone]] = set()
        self._lease = workers.shared.lease()

    @property
    def capacity(self) -> int:
        return len(self._pending) + self._lease.shared.free()

    def submit(self, index: WorkIndex, inbound: Inbound, step: int | None = None) -> None:
        worker, calls = self._workers.worker, self._workers.calls
        if len(index) == 3:
            call = calls.submit(worker.downsample, *index, self._token, self._job)
        else:
            call = calls.submit(worker.process, index[0], index[1], inbound, step, self._token,
                                self._job)
        self._lease.take()
        self._pending.add(call)

    @property
    def retried(self) -> int:
        return 0  # a tile in this process fails with it, and is never retried

    def in_flight(self) -> int:
        return len(self._pending)

    def wait(self) -> list[TileDone]:
        if not self._pending:  # other jobs' tiles hold the workers: wait for room
            self._lease.shared.wait_free()
            return []
        done, _ = futures.wait(self._pending, return_when=futures.FIRST_COMPLETED)
        self._pending -= done
        self._lease.give(len(done))
        # A failed tile raises its error here; a tile that finished beside it goes
        # unrecorded and runs again on --resume, as after any stop.
        return [call.result() for call in done]

    def close(self, drain: bool = True) -> None:
        """Leave the workers; with ``drain``, after this job's tiles still running ended
        (so nothing writes into its output afterwards), the others' tiles going on."""
        for call in self._pending:
            call.cancel()  # those not started yet
        if drain and self._pending:
            futures.wait(self._pending)
        self._pending.clear()
        self._lease.give_all()


class RayWorkers:
    """Ray actors, one per node (or GPU), each running several tiles at once on threads,
    fed by least-loaded dispatch from every lane; an actor that died for good is
    replaced by a fresh one wherever there is room."""

    def __init__(self, job: TileJob, placements: list[Placement], gpus_per_worker: float = 0.0,
                 queue_depth: int = 2):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.placements = placements
        #: Tiles computing at once, over all worker processes.
        self.workers = sum(p.slots for p in placements)
        self.processes = len(placements)
        # Each slot has one tile computing and ``queue_depth - 1`` reading or writing.
        self.shared = SharedCapacity(self.workers * queue_depth)
        # A restarted actor reloads its model. Its unfinished calls fail, and the driver
        # submits them again (RetryLostTiles: one retry policy, which counts what it
        # retries) rather than Ray retrying them out of sight. Ray's type stubs do not
        # model an actor's methods (``.process.remote``): typed Any.
        remote = cast(Any, ray.remote(TileWorker))

        def start(place: Placement) -> Any:
            # Soft affinity: a restart after its node died goes wherever there is room. And
            # a node busy with another job's workers is not waited for (Ray's soft
            # affinity alone would queue there): the worker spills to one with room.
            where = (NodeAffinitySchedulingStrategy(place.node, soft=True,
                                                    _spill_on_unavailable=True)
                     if place.node else "DEFAULT")
            gpus = gpus_per_worker
            return remote.options(
                num_cpus=0 if gpus else place.slots, num_gpus=gpus, max_restarts=3,
                max_task_retries=0, max_concurrency=place.slots * queue_depth,
                scheduling_strategy=where,
            ).remote(job, place.slots, 1 if not gpus else None)

        self._start_actor = start
        self._lock = threading.Lock()  # lanes dispatch from their own threads
        self._actors = [start(p) for p in placements]
        self._dispatch = LeastLoaded(len(placements), [p.slots for p in placements])
        self._tokens = itertools.count(1)
        self.closed = False
        # Surfaces model-loading errors now, as one clear failure, rather than per tile.
        try:
            ray.get([a.describe.remote() for a in self._actors], timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise WorkerLostError(
                f"{self.processes} tile workers did not start within {STARTUP_TIMEOUT_S // 60} "
                "minutes; the cluster lacks the CPUs or GPUs they ask for") from None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            raise WorkerLostError(f"tile workers failed to start: {_cause(exc)}") from None

    def lane(self, job: TileJob) -> RayPool:
        """Where ``job``'s driver loop submits its tiles."""
        return RayPool(self, job, next(self._tokens))

    def pick(self) -> tuple[int, Any]:
        """The actor to give the next call to, and its place; counts it as queued there."""
        with self._lock:
            if self.closed:
                raise WorkerLostError("the tile workers were stopped")
            k = self._dispatch.pick()
            return k, self._actors[k]

    def finished(self, k: int) -> None:
        with self._lock:
            self._dispatch.finished(k)

    def replace(self, k: int, actor: Any) -> None:
        """Put a fresh actor in place ``k`` if ``actor`` still holds it (out of restarts,
        or its node gone for good). All its calls fail alike; the first replaces it."""
        with self._lock:
            if not self.closed and self._actors[k] is actor:
                self._actors[k] = self._start_actor(self.placements[k])

    def close(self) -> None:
        import ray

        with self._lock:
            self.closed = True
            actors, self._actors = self._actors, []
        self.shared.close()
        for actor in actors:
            ray.kill(actor)


class RayPool:
    """One job's lane into :class:`RayWorkers`: a tile whose worker died runs again, on
    a restarted or new actor."""

    def __init__(self, workers: RayWorkers, job: TileJob, token: int):
        import ray

        self._workers = workers
        #: The job, named by a token that every call carries with a reference to the job,
        #: so that an actor binds itself to it at its first call (one that Ray restarted
        #: with the job it was created for too).
        self._token = token
        self._job_ref = ray.put(job)
        self.workers = workers.workers
        self.processes = workers.processes
        #: Told of every tile or chunk submitted again after its worker was lost.
        self.on_retry: Callable[[WorkIndex, str], None] | None = None
        self._retry = RetryLostTiles()
        self._pending: dict[Any, tuple[WorkIndex, int, Any, Inbound, int | None]] = {}
        #: Calls refused by an actor that was restarting, each with when to try again.
        self._later: list[tuple[float, WorkIndex, Inbound, int | None]] = []
        #: Tiles and chunks lost since they were submitted, and how many such losses.
        self._unsettled: set[WorkIndex] = set()
        self._retried = 0
        self._lease = workers.shared.lease()

    @property
    def capacity(self) -> int:
        return self.in_flight() + self._lease.shared.free()

    def in_flight(self) -> int:
        return len(self._pending) + len(self._later)

    @property
    def retried(self) -> int:
        return self._retried

    def _lost(self, index: WorkIndex, cause: str) -> None:
        """Count ``index`` as retried once per loss: a call refused again while its actor
        restarts is the same retry."""
        if index not in self._unsettled:
            self._unsettled.add(index)
            self._retried += 1
            if self.on_retry is not None:
                self.on_retry(index, cause)

    def _submit_due(self) -> None:
        """Submit the calls put off while an actor restarted, waiting for the first one
        if nothing else runs."""
        if self._later and not self._pending:
            time.sleep(max(0.0, min(item[0] for item in self._later) - time.monotonic()))
        now = time.monotonic()
        due = [(index, inbound, step) for t, index, inbound, step in self._later if t <= now]
        self._later = [item for item in self._later if item[0] > now]
        for index, inbound, step in due:
            self._call(index, inbound, step)

    def submit(self, index: WorkIndex, inbound: Inbound, step: int | None = None) -> None:
        self._lease.take()
        self._call(index, inbound, step)

    def _call(self, index: WorkIndex, inbound: Inbound, step: int | None) -> None:
        """Send one call (a first one, or one again) to the least loaded actor."""
        k, actor = self._workers.pick()
        ref = (actor.downsample.remote(*index, self._token, self._job_ref) if len(index) == 3
               else actor.process.remote(index[0], index[1], inbound, step, self._token,
                                         self._job_ref))
        self._pending[ref] = (index, k, actor, inbound, step)

    def wait(self) -> list[TileDone]:
        import ray

        if not self.in_flight():  # other jobs' tiles hold the workers: wait for room
            self._lease.shared.wait_free()
            return []
        self._submit_due()
        ready, _ = ray.wait(list(self._pending), num_returns=1,
                            timeout=RESTART_POLL_S if self._later else None)
        rest = [r for r in self._pending if r not in ready]
        more = ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        out = []
        for ref in [*ready, *more]:
            index, k, actor, inbound, step = self._pending.pop(ref)
            self._workers.finished(k)
            try:
                out.append(ray.get(ref))
                self._unsettled.discard(index)
                self._lease.give()
            except ray.exceptions.RayTaskError as exc:
                # The worker raised the user's error already (process_tile): pass it on.
                raise exc.cause if isinstance(exc.cause, Exception) else exc from None
            except ray.exceptions.ActorUnavailableError as exc:
                # The actor is restarting (it reloads its model): the call runs again, but
                # no attempt was lost. It is put off for a moment rather than spinning on
                # the refusal.
                self._lost(index, _cause(exc))
                self._later.append((time.monotonic() + RESTART_POLL_S, index, inbound, step))
            except ray.exceptions.RayActorError as exc:
                if self._workers.closed:
                    raise WorkerLostError("the tile workers were stopped") from None
                # Each sampler step of a tile is an attempt of its own (--schedule step).
                self._retry.record_loss(index if step is None else (*index, step), _cause(exc))
                self._lost(index, _cause(exc))
                if isinstance(exc, ray.exceptions.ActorDiedError):
                    self._workers.replace(k, actor)
                self._call(index, inbound, step)
        return out

    def close(self, drain: bool = True) -> None:
        """Leave the workers; with ``drain``, after this job's tiles still running ended
        (so nothing writes into its output afterwards), the others' tiles going on."""
        import ray

        refs = list(self._pending)
        for ref in refs:
            ray.cancel(ref, force=False)  # those not started yet; a running one goes on
        if drain and refs and not self._workers.closed:
            # Until they end, however long: an actor that dies ends them too.
            ray.wait(refs, num_returns=len(refs))
        for _, k, *_ in self._pending.values():
            self._workers.finished(k)
        self._pending.clear()
        self._later.clear()
        self._lease.give_all()


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


__all__ = ["InProcessPool", "InProcessWorkers", "RayPool", "RayWorkers", "TilePool"]
