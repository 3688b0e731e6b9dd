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
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..pipeline.messages import TileDone, TileJob


class TileWorker:
    """Runs tiles of one job at a time with one loaded model; bound to the next job of a
    cohort (:meth:`bind`), it keeps the model when the next job runs the same one."""

    def __init__(self, job: TileJob, slots: int = 1, threads: int | None = None):
        """Load ``job``'s model for ``slots`` concurrent tiles, each computing on
        ``threads`` torch threads (default: this process's CPUs shared among the slots)."""
        import torch

        from .device import pick_device

        self.device = pick_device()
        # Slots times intra-op threads = the CPUs this worker was given, so that tiles
        # computing side by side do not oversubscribe the cores.
        self._threads = threads or max(1, torch.get_num_threads() // slots)
        self.slots = slots
        self._computing = ThreadPoolExecutor(slots, thread_name_prefix="compute")
        self.name = f"{socket.gethostname()}:{os.getpid()}:{self.device}"
        self._loaded: tuple[Any, Any] | None = None  # (what was loaded, the model)
        self._binding = threading.Lock()
        #: Which of the driver's jobs this worker is bound to (:meth:`bind`).
        self.token = 0
        self.bind(job)

    def _model(self, job: TileJob) -> Any:
        """``job``'s model: the loaded one again where the job asks for the same weights
        and sampler, told the job's conditions, wrapped for its bands."""
        import torch

        from ..models import load_model

        if job.guide is not None:
            from ..pipeline.consistency import BackProjection
            from ..storage.arrays import ArrayReader

            guide = functools.cache(lambda: ArrayReader(job.guide))  # type: ignore[arg-type]
            model: Any = BackProjection(lambda w: guide().read(*w), job.guide_scale, job.nodata)
            model.to(self.device, False)
            return model
        key = (job.model, job.scale, job.sampler, job.precision)
        if self._loaded is None or self._loaded[0] != key:
            # The old weights go before the new ones load: the old job's setup holds them too.
            self._loaded = None
            if hasattr(self, "setup"):
                del self.setup
            model = load_model(job.model, job.scale, job.sampler)
            model.to(self.device, self._half(job, model))
            self._loaded = (key, model)
        model = self._loaded[1]
        torch.set_num_threads(self._threads)
        if model.descriptor.positional and self.device.type == "cpu":
            # Its output promises the same bytes for any --workers, and a float reduction
            # split over more threads rounds differently (by about 1e-6, enough to flip a
            # rounded pixel): every tile computes on one thread, whatever the slots.
            torch.set_num_threads(1)
        if job.condition is not None:
            model = model.with_condition(job.condition)
        if job.mode != "context" and not model.descriptor.positional:
            from ..models.bandwise import Bandwise

            model = Bandwise(model)  # any number of bands (a satellite stack)
        return model

    def _half(self, job: TileJob, model: Any) -> bool:
        """Whether ``model`` computes in half precision: on a GPU, where it allows it,
        unless the job keeps float32 (``--precision fp32``)."""
        return (self.device.type == "cuda" and model.descriptor.supports_half
                and job.precision != "fp32")

    def bind(self, job: TileJob, token: int = 0) -> None:
        """Run ``job``'s tiles from now on (the driver's ``token`` names it)."""
        import torch

        from ..models.bicubic import Bicubic
        from ..pipeline.tile_work import States, TileSetup, to_cpu
        from ..storage.arrays import ArrayReader, ArraySpec, ArrayWriter
        from ..storage.contexts import ContextStore, StateStore
        from .device import default_batch

        device = self.device
        model = self._model(job)
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

        self.batch = min(job.batch or default_batch(device), self.slots)
        forward = None
        if self.batch > 1 and job.mode != "context" and not model.descriptor.positional:
            from .batching import Batcher

            def run(x: Any) -> Any:
                with torch.inference_mode():  # per thread: the batcher's needs its own
                    return model.forward_image(x)

            forward = Batcher(run, self.batch)
        self.setup = TileSetup(
            grid=job.grid, mode=job.mode, model=model, read=lambda w: reader().read(*w),
            write=writer.write, keep=keep if store is not None else None, ramp=job.ramp,
            device=device, half=half, cheap=Bicubic(job.scale) if job.adaptive else None,
            nodata=job.nodata, input_name=job.input_path or job.source.path, worker=self.name,
            compute=lambda work: self._computing.submit(work).result(), forward=forward,
            steps=job.sampler.steps if job.sampler else None, states=states)

        self.pyramid = None
        if job.pyramid is not None:
            from ..pipeline.pyramid_work import PyramidSetup

            levels = range(job.pyramid.levels + 1)
            readers = {k: ArrayReader(ArraySpec(job.level_array(k))) for k in levels[:-1]}
            writers = {k: ArrayWriter(job.level_array(k), job.durable) for k in levels[1:]}
            self.pyramid = PyramidSetup(plan=job.pyramid, read=lambda k, w: readers[k].read(*w),
                                        write=lambda k, y, x, data: writers[k].write(y, x, data),
                                        worker=self.name, nodata=job.nodata)
        self.token = token

    def _follow(self, token: int | None, job: TileJob | None) -> None:
        """Bind to the job a call names, if this worker is not bound to it yet: a cohort's
        next input, or (after Ray restarted this actor with the job it was created for)
        the job running now."""
        if token is None or token == self.token:
            return
        with self._binding:
            if token != self.token and job is not None:
                self.bind(job, token)

    def describe(self) -> str:
        return self.name

    def cancel_waiting(self) -> None:
        """Drop the tiles waiting for a compute slot (their calls raise CancelledError)."""
        self._computing.shutdown(wait=False, cancel_futures=True)

    def release(self) -> None:
        """Let go of the model and the job's setup (for a worker in a process that lives
        on after its job: the in-process pool's)."""
        self._computing.shutdown(wait=True)
        self._loaded = None
        for name in ("setup", "pyramid"):
            if hasattr(self, name):
                delattr(self, name)

    def process(self, row: int, col: int, inbound: Mapping[str, Any] | None = None,
                step: int | None = None, token: int | None = None,
                job: TileJob | None = None) -> TileDone:
        """Run tile ``(row, col)`` (only its sampler ``step``, if given) of the job
        ``token`` names (``job``); raises the user's error if it fails."""
        from ..pipeline.tile_work import process_tile

        self._follow(token, job)
        return process_tile(self.setup, row, col, inbound, step)

    def downsample(self, level: int, row: int, col: int, token: int | None = None,
                   job: TileJob | None = None) -> TileDone:
        """Compute chunk ``(row, col)`` of pyramid ``level`` from the level below."""
        from ..pipeline.pyramid_work import process_chunk

        self._follow(token, job)
        if self.pyramid is None:
            raise RuntimeError("this job builds no pyramid")
        return process_chunk(self.pyramid, level, row, col)
