"""The tile worker: a thin holder of one loaded model around
:func:`tilewave.pipeline.tile_work.process_tile`.

:class:`TileWorker` is a plain class; :mod:`tilewave.actors.pools` turns it into a Ray
actor, and the in-process pool uses it as it is. Importing this module imports no torch:
the driver needs the class to start actors, and only the actors load models.

One worker serves a whole node (or one GPU): it runs ``slots`` tiles at once on threads
that share its one model, since torch releases the GIL inside its kernels. Calls beyond
the slots are admitted too (the actor's concurrency is larger), so that while ``slots``
tiles compute, the next ones read their input and finished ones write their output.
The computing itself happens on ``slots`` dedicated threads, not on the calls' threads:
glibc gives every thread that allocates its own heap arena and keeps what is freed
there, so activations allocated by every call thread in turn held 1.7 GiB where 1.1 GiB
is enough (span-x2, 2 slots, 4 calls, over the 64 tiles of the throughput benchmark's
input, in one process).

A worker may serve several jobs at once (a cohort's inputs, whose tiles interleave): it
keeps a setup per job, named by the driver's token that every call carries with the
job, and made at the job's first call; and one loaded model per distinct model among
them. A worker is created with (and Ray restarts it with) only a model loaded, so a
restart never opens an output whose job has ended.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..pipeline.messages import TileDone, TileJob

#: Jobs a worker keeps a setup for (the least recently set up goes first; a call of a job
#: whose setup went binds it again from the job the call carries): more than a cohort
#: runs at once, two stages each. A setup holds array handles, not pixels.
KEPT_JOBS = 16
#: Distinct models a worker keeps loaded (the least recently set up goes first): three, so
#: that a cohort's inputs running at once at different stages of a cascade do not reload
#: their models in turn.
KEPT_MODELS = 3


@dataclass
class _Bound:
    """One job's setup in this worker, and which loaded model it uses (None: its own)."""

    key: Any
    setup: Any
    pyramid: Any


class TileWorker:
    """Runs tiles of the jobs it is bound to (:meth:`bind`) with one loaded model per
    distinct model among them; a cohort's next input that runs the same model finds it
    loaded."""

    def __init__(self, job: TileJob, slots: int = 1, threads: int | None = None):
        """Load ``job``'s model for ``slots`` concurrent tiles, each computing on
        ``threads`` torch threads (default: this process's CPUs shared among the slots).
        Jobs are set up at their first call (:meth:`process`)."""
        import torch

        from .device import pick_device

        self.device = pick_device()
        # Slots times intra-op threads = the CPUs this worker was given, so that tiles
        # computing side by side do not oversubscribe the cores.
        self._threads = threads or max(1, torch.get_num_threads() // slots)
        torch.set_num_threads(self._threads)  # what else computes here (tiles set their own)
        self.slots = slots
        self._computing = ThreadPoolExecutor(slots, thread_name_prefix="compute")
        self.name = f"{socket.gethostname()}:{os.getpid()}:{self.device}"
        self._models: OrderedDict[Any, Any] = OrderedDict()  # what was loaded -> the model
        self._bound: OrderedDict[int, _Bound] = OrderedDict()
        self._binding = threading.Lock()
        self._model(job)  # a model that cannot load fails the worker's start, not a tile

    def _unload(self, key: Any) -> None:
        """Let go of the model loaded for ``key`` and of the jobs' setups that use it."""
        self._models.pop(key, None)
        for token in [t for t, b in self._bound.items() if b.key == key]:
            del self._bound[token]

    def _model(self, job: TileJob) -> tuple[Any, Any, int]:
        """``job``'s model, what it was loaded for, and the torch threads its tiles compute
        on: the loaded one again where the job asks for the same weights and sampler, told
        the job's conditions, wrapped for its bands."""
        from ..models import load_model

        if job.guide is not None:
            from ..pipeline.consistency import BackProjection
            from ..storage.arrays import ArrayReader

            guide = functools.cache(lambda: ArrayReader(job.guide))  # type: ignore[arg-type]
            model: Any = BackProjection(lambda w: guide().read(*w), job.guide_scale, job.nodata)
            model.to(self.device, False)
            return None, model, self._threads
        key = (job.model, job.scale, job.sampler, job.precision)
        if key not in self._models:
            # The least recently used weights go before new ones load (with the setups of
            # the jobs using them; tiles of theirs still computing keep them until done).
            while len(self._models) >= KEPT_MODELS:
                self._unload(next(iter(self._models)))
            model = load_model(job.model, job.scale, job.sampler)
            model.to(self.device, self._half(job, model))
            self._models[key] = model
        self._models.move_to_end(key)
        model = self._models[key]
        # A positional model's output promises the same bytes for any --workers, and a
        # float reduction split over more threads rounds differently (by about 1e-6,
        # enough to flip a rounded pixel): its tiles compute on one thread, whatever the
        # slots.
        threads = 1 if model.descriptor.positional and self.device.type == "cpu" else self._threads
        if job.condition is not None:
            model = model.with_condition(job.condition)
        if job.mode != "context" and not model.descriptor.positional:
            from ..models.bandwise import Bandwise

            model = Bandwise(model)  # any number of bands (a satellite stack)
        return key, model, threads

    def _half(self, job: TileJob, model: Any) -> bool:
        """Whether ``model`` computes in half precision: on a GPU, where it allows it,
        unless the job keeps float32 (``--precision fp32``)."""
        return (self.device.type == "cuda" and model.descriptor.supports_half
                and job.precision != "fp32")

    def bind(self, job: TileJob, token: int) -> None:
        """Set up ``job``, which calls carrying ``token`` run."""
        import torch

        from ..models.bicubic import Bicubic
        from ..pipeline.tile_work import States, TileSetup, to_cpu
        from ..storage.arrays import ArrayReader, ArraySpec, ArrayWriter
        from ..storage.contexts import ContextStore, StateStore
        from .device import default_batch

        device = self.device
        key, model, threads = self._model(job)
        half = self._half(job, model)
        # Opened at the first read: a worker may start while the driver still copies the
        # input into the working copy it reads. Two threads racing here open it twice,
        # read-only, which is harmless.
        reader = functools.cache(lambda: ArrayReader(job.source))
        writer = ArrayWriter(job.output_array, job.durable)
        store = ContextStore(job.contexts_in) if job.contexts_in else None

        def keep(producer: tuple[int, int], direction: str, value: Any, step: int | None) -> Any:
            # Files rather than the object store carry contexts, so a row of them waiting
            # for the next row costs disk (and page cache), not memory that grows with
            # the image's width.
            return store.save(producer, direction, to_cpu(value), step)  # type: ignore[union-attr]

        states = None
        if job.stepwise and job.contexts_in:
            kept = StateStore(job.contexts_in)
            states = States(load=kept.load, save=kept.save)

        batch = min(job.batch or default_batch(device), self.slots)
        forward = None
        if batch > 1 and job.mode != "context" and not model.descriptor.positional:
            from .batching import Batcher

            def run(x: Any) -> Any:
                with torch.inference_mode():  # per thread: the batcher's needs its own
                    return model.forward_image(x)

            forward = Batcher(run, batch)
        setup = TileSetup(
            grid=job.grid, mode=job.mode, model=model, read=lambda w: reader().read(*w),
            write=writer.write, keep=keep if store is not None else None, ramp=job.ramp,
            device=device, half=half, cheap=Bicubic(job.scale) if job.adaptive else None,
            nodata=job.nodata, input_name=job.input_path or job.source.path, worker=self.name,
            compute=self._compute_on(threads), forward=forward,
            steps=job.sampler.steps if job.sampler else None, states=states)

        pyramid = None
        if job.pyramid is not None:
            from ..pipeline.pyramid_work import PyramidSetup

            levels = range(job.pyramid.levels + 1)
            readers = {k: ArrayReader(ArraySpec(job.level_array(k))) for k in levels[:-1]}
            writers = {k: ArrayWriter(job.level_array(k), job.durable) for k in levels[1:]}
            pyramid = PyramidSetup(plan=job.pyramid, read=lambda k, w: readers[k].read(*w),
                                   write=lambda k, y, x, data: writers[k].write(y, x, data),
                                   worker=self.name, nodata=job.nodata)
        self._bound[token] = _Bound(key=key, setup=setup, pyramid=pyramid)
        self._bound.move_to_end(token)
        while len(self._bound) > KEPT_JOBS:
            self._bound.popitem(last=False)

    def _compute_on(self, threads: int) -> Any:
        """Runs a tile's computation on a compute thread with ``threads`` torch threads.
        Set there, before each tile: torch's count (OpenMP's) belongs to each thread, and
        the jobs a worker serves may ask for different ones."""
        import torch

        def compute(work: Any) -> Any:
            def counted() -> Any:
                torch.set_num_threads(threads)
                return work()

            return self._computing.submit(counted).result()

        return compute

    def _follow(self, token: int, job: TileJob) -> _Bound:
        """The setup of the job a call names, made at its first call here (after Ray
        restarted this actor too). A job set up already is found without waiting for
        another one's setup, which may be loading a model."""
        bound = self._bound.get(token)
        if bound is not None:
            return bound
        with self._binding:
            bound = self._bound.get(token)
            if bound is None:
                self.bind(job, token)
                bound = self._bound[token]
            return bound

    def describe(self) -> str:
        return self.name

    def cancel_waiting(self) -> None:
        """Drop the tiles waiting for a compute slot (their calls raise CancelledError)."""
        self._computing.shutdown(wait=False, cancel_futures=True)

    def release(self) -> None:
        """Let go of the model and the job's setup (for a worker in a process that lives
        on after its job: the in-process pool's)."""
        self._computing.shutdown(wait=True)
        self._bound.clear()
        self._models.clear()

    def process(self, row: int, col: int, inbound: Mapping[str, Any] | None, step: int | None,
                token: int, job: TileJob) -> TileDone:
        """Run tile ``(row, col)`` (only its sampler ``step``, if given) of the job
        ``token`` names (``job``); raises the user's error if it fails."""
        from ..pipeline.tile_work import process_tile

        return process_tile(self._follow(token, job).setup, row, col, inbound, step)

    def downsample(self, level: int, row: int, col: int, token: int, job: TileJob) -> TileDone:
        """Compute chunk ``(row, col)`` of pyramid ``level`` from the level below."""
        from ..pipeline.pyramid_work import process_chunk

        pyramid = self._follow(token, job).pyramid
        if pyramid is None:
            raise RuntimeError("this job builds no pyramid")
        return process_chunk(pyramid, level, row, col)
