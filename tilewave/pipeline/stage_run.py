"""One stage of a job, from its source image into its store, in explicit phases:
**lock** → **create or resume** → **start the workers** while the input is copied →
**run** tiles, and pyramid chunks as the chunks below them are written → **finish**;
:meth:`StageRun.leave_behind` is the one place that decides what a failure leaves."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import __version__
from ..errors import BadPixelsError, ResumeMismatchError, TilewaveError
from ..options import Options
from ..storage import layout, location
from ..storage.backends import backend_for
from ..storage.inputs import InputImage
from ..storage.locks import JobLock
from ..storage.manifest import Manifest
from ..storage.writable import check_writable
from .indices import WorkIndex
from .job_plan import StagePlan
from .pool import PoolLauncher
from .prepare import check_replaceable, unholdable
from .report import Counts, Progress


class StageRun:
    """One stage, from its source image into its store, in explicit phases."""

    def __init__(self, stage: StagePlan, image: InputImage, options: Options,
                 progress: Progress, label: str, guide: InputImage | None = None):
        self.stage, self.image, self.options = stage, image, options
        #: The job's input, which the back-projection stage makes its output consistent with.
        self.guide = guide
        self.progress, self.label = progress, label
        self.store = stage.output
        self.lock: JobLock | None = None
        self.created_here = False
        self.tiles_started = False
        #: This run wrote the marker of a run in progress (:func:`~..storage.layout.running_marker`).
        self.marked = False
        self.manifest = Manifest(tilewave=__version__, input=image.fingerprint(),
                                 settings=stage.settings(), grid=[stage.grid.rows, stage.grid.cols])

    # lock, create or resume -----------------------------------------------------

    def _resumable(self) -> Manifest:
        previous = Manifest.read(self.store)
        if previous is None:
            raise ResumeMismatchError(
                f"output {self.store!r} was not written by tilewave upscale, so it cannot be "
                "resumed; choose another output or pass --overwrite")
        old, new = previous.input or {}, self.manifest.input
        if old != new:
            what = (f"input {old.get('path')!r}, not {new['path']!r}" if old.get("path") != new["path"]
                    else "input, which has changed since (its size, shape or modification time differ)")
            raise ResumeMismatchError(f"output {self.store!r} was started from a different {what}; "
                                      "rerun with the original input, or with --overwrite instead "
                                      "of --resume")
        if previous.settings != self.manifest.settings:
            raise ResumeMismatchError(
                f"output {self.store!r} was started with different settings "
                f"({previous.first_difference(self.manifest)}); rerun with the original ones, "
                "or with --overwrite instead of --resume")
        if not previous.complete:
            check_writable(location.join(self.store, "0"))
        return previous

    def lock_and_open(self) -> bool:
        """Lock the store and create it, or resume it; False if it is already complete."""
        if location.exists(self.store):
            if self.options.resume:
                self.manifest = self._resumable()
                if self.manifest.complete:
                    return False
                if self.manifest.created:
                    self._lock()
            else:  # overwrite, checked in prepare()
                check_replaceable(self.store, "output")
                location.remove_tree(self.store)
        if not self.manifest.created:
            self._create()
        return True

    def _lock(self) -> None:
        self.lock = JobLock(self.store).acquire()
        if self.lock.took_over:
            self.progress.say(f"{self.label}the job that held {self.store!r} stopped renewing "
                              f"its lease ({self.lock.took_over}): taking it over")

    @functools.cached_property
    def output_metadata(self) -> dict[str, Any]:
        """The input's metadata, with ``--nodata`` in place of its own nodata tag."""
        meta = dict(self.image.metadata)
        if self.options.nodata is not None:
            meta["nodata"] = self.options.nodata
        elif "nodata" in meta and unholdable(meta["nodata"], self.image.dtype):
            # A tag no pixel can equal would, cast to the pixels' type, match real ones.
            self.progress.say(f"the input's nodata tag {meta['nodata']:g} "
                              f"{unholdable(meta['nodata'], self.image.dtype)}: ignored "
                              "(give --nodata to set one)")
            del meta["nodata"]
        return meta

    def _create(self) -> None:
        from ..storage.metadata import scaled
        from ..storage.ome import create_output

        image, grid = self.image, self.stage.grid
        # Locked before anything is written: of two jobs creating one output at once, the
        # second is refused here rather than writing into the first one's.
        self._lock()
        self.created_here = True
        create_output(self.store, (image.channels, *grid.out_shape), image.dtype, grid.out_chunk,
                      self.store.rstrip("/").rsplit("/", 1)[-1],
                      scaled(self.output_metadata, self.stage.scale),
                      {"tilewave": {"input": self.manifest.input, "settings": self.manifest.settings}})
        self.manifest.created = True
        self.manifest.save(self.store)

    # ingest ----------------------------------------------------------------------

    def working_source(self) -> tuple[Any, bool]:
        """Where workers read the input, and whether it must be copied there first: Zarr
        in place when its chunks are tile-sized or smaller, else a working copy chunked
        to the tiles (kept from an interrupted run once complete)."""
        from ..storage.arrays import ArraySpec

        image, tile = self.image, self.stage.grid.tile
        if image.array is not None and image.chunks is not None and max(image.chunks) <= 2 * tile:
            return image.array, False
        work = layout.work_copy(self.store)
        done = self.manifest.ingested and location.exists(work)
        return ArraySpec(work, "cyx"), not done

    def guide_source(self) -> tuple[Any, bool]:
        """Where the back-projection stage reads the job's input, and whether it must be
        copied first: as :meth:`working_source` decides, with tiles ``guide_scale`` times
        smaller than this stage's."""
        from ..storage.arrays import ArraySpec

        image, tile = self.guide, self.guide_tile
        assert image is not None  # a back-projection stage always has its guide
        if image.array is not None and image.chunks is not None and max(image.chunks) <= 2 * tile:
            return image.array, False
        work = layout.guide_copy(self.store)
        done = self.manifest.ingested and location.exists(work)
        return ArraySpec(work, "cyx"), not done

    @property
    def guide_tile(self) -> int:
        return max(1, self.stage.grid.tile // self.stage.guide_scale)

    def overview(self, source: Any, short_side: int) -> Any:
        """The whole input, box-averaged to about ``short_side`` pixels on its short side."""
        from ..storage.arrays import ArrayReader
        from .overview import overview

        self.progress.say(f"{self.label}reading the whole input once for the model's view of it")
        reader = ArrayReader(source)
        height, width = self.stage.grid.height, self.stage.grid.width
        return overview(reader.read, height, width, short_side,
                        nodata=self.output_metadata.get("nodata"))

    def copy_inputs(self, copies: list[tuple[InputImage, Any, int]]) -> None:
        """Copy each ``(image, spec, chunk)`` into the working copy ``spec`` names."""
        from ..storage.ingest import ingest

        for image, spec, chunk in copies:
            if location.exists(spec.path):  # a copy an earlier, interrupted run did not finish
                location.remove_tree(spec.path)
            what = "the input" if image is self.image or self.guide is None else "the job's input"
            self.progress.say(f"{self.label}copying {what} into tiles of {chunk} px")
            ingest(image, spec.path, chunk=chunk, progress=self.progress.enabled,
                   label=self.progress.prefix + self.label)
        self.manifest.ingested = True
        self.manifest.save(self.store)

    # run, pyramid, finish -----------------------------------------------------------

    def compute(self, pools: PoolLauncher) -> Counts:
        """Run the tiles and, as their chunks appear, the pyramid levels above them."""
        from ..storage.contexts import ContextStore, StateStore
        from ..storage.ledger import Ledger
        from ..storage.ome import create_levels, finish_levels
        from .messages import TileJob
        from .pyramid_plan import PyramidPlan
        from .runner import run_tiles

        stage, grid = self.stage, self.stage.grid
        pyramid = PyramidPlan.for_output(grid.out_shape, grid.out_chunk,
                                         **({} if stage.pyramid else {"smallest": 1 << 62}))
        levels = create_levels(self.store, list(pyramid.shapes), list(pyramid.chunks))
        source, copy = self.working_source()
        copies = [(self.image, source, grid.tile)] if copy else []
        guide = None
        if stage.consistency and self.guide is not None:
            guide, copy_guide = self.guide_source()
            copies += [(self.guide, guide, self.guide_tile)] if copy_guide else []
        job = TileJob(model=stage.model, scale=stage.scale, grid=grid, mode=stage.mode,
                      ramp=stage.ramp, source=source, output_array=f"{self.store}/0",
                      contexts_in=location.absolute(self.store) if stage.dependent else None,
                      input_path=self.image.path, adaptive=stage.adaptive,
                      nodata=self.output_metadata.get("nodata"), sampler=stage.sampler,
                      pyramid=pyramid if pyramid.levels else None, batch=self.options.batch,
                      durable=self.options.durable, guide=guide, guide_scale=stage.guide_scale,
                      condition=stage.condition, stepwise=stage.stepwise,
                      precision=stage.precision)
        if stage.overview:
            # The view of the whole input goes to the workers with the job, so it is made
            # before they start, from the working copy.
            self.copy_inputs(copies)
            copies = []
            job = replace(job, condition={**(job.condition or {}),
                                          "overview": self.overview(source, stage.overview)})
        ledger = Ledger(self.store)
        verified, repaired = self.read_back(ledger, pyramid)
        # Under --schedule step the progress bar counts sampler steps: no tile finishes
        # before the last step's sweep, and the bar should not stand still until then.
        steps = stage.sampler.steps if stage.stepwise and stage.sampler else 1
        location.write_bytes(self.running_marker, f"{os.getpid()}\n".encode(), durable=True)
        self.marked = True
        already = len(ledger.done()) * steps + sum(ledger.steps_done().values())
        total = grid.count * steps + pyramid.count
        # The input is copied on a thread while this one starts Ray and the workers
        # (which open the copy at their first read): Ray's daemons die with the thread
        # that started them, so that must be the one that lives as long as the job.
        copying = _Background(self.copy_inputs, copies) if copies else None
        with contextlib.ExitStack() as stack:
            if copying is not None:
                stack.push(copying.settle)
            pool = stack.enter_context(pools(job, grid.count - len(ledger.done()), self.label))
            if copying is not None:
                copying.result()
            self.tiles_started = True
            if backend_for(self.store).appendable:
                pool.on_retry = self._log_retry
            contexts = ContextStore(self.store) if stage.dependent else None
            what = "upscale (sampler steps) + pyramid" if steps > 1 else "upscale + pyramid"
            with self.progress.bar(total, already + len(ledger.done_chunks()),
                                   f"{self.label}{what}") as bar:
                stats = run_tiles(grid, pool, ledger, stage.dependent, contexts, bar.update,
                                  job.pyramid, self.lock.check if self.lock else None, steps,
                                  StateStore(self.store) if stage.stepwise else None)
            counts = replace(stats.counts(), verified=verified, repaired=repaired,
                             workers=pool.workers, processes=pool.processes, retried=pool.retried)
        finish_levels(self.store, levels)
        self.manifest.pyramid = levels[1:]
        return counts

    def _log_retry(self, index: WorkIndex, cause: str) -> None:
        """Note a tile run again after its worker was lost in ``.tilewave/events.log``,
        which outlives a driver killed before it could report (local outputs)."""
        what = f"tile {index[:2]}" if len(index) == 2 else f"pyramid chunk {index}"
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} retry {what}: {cause}\n"
        location.append_bytes(layout.events_log(self.store), line.encode())

    @property
    def running_marker(self) -> str:
        return layout.running_marker(self.store)

    def read_back(self, ledger: Any, pyramid: Any) -> tuple[int, int]:
        """Read back what the ledger lists, if asked or if the last run did not stop
        cleanly, and take back what must run again; ``(checked, taken back)``."""
        from .verify import check_recorded

        unclean = location.exists(self.running_marker)
        recorded = ledger.checksums()
        if not recorded or not (self.options.verify or unclean):
            return 0, 0
        why = "as asked" if self.options.verify else "the last run did not stop cleanly"
        self.progress.say(f"{self.label}reading back the {len(recorded)} tiles and pyramid chunks "
                          f"the ledger lists ({why})")
        with self.progress.bar(len(recorded), 0, f"{self.label}verify") as bar:
            verdict = check_recorded(self.store, self.stage.grid, pyramid if pyramid.levels else None,
                                     recorded, self.stage.dependent, bar.update,
                                     partial=ledger.steps_done())
        self.progress.say(self.label + verdict.describe())
        taken_back = sorted(verdict.rerun_tiles) + sorted(verdict.rerun_chunks)
        ledger.forget(taken_back)
        return verdict.checked, len(taken_back)

    def leave_behind(self, exc: BaseException) -> None:
        """The one place that decides what a failed stage leaves behind."""
        details = getattr(exc, "details", "") if isinstance(exc, TilewaveError) else ""
        if details:  # a failed tile or an unreadable input chunk: the traceback, for a report
            log = layout.errors_log(self.store)
            earlier = location.read_bytes(log) if location.exists(log) else b""
            location.write_bytes(log, earlier + f"{time.ctime()}: {exc}\n{details}\n".encode())
        elif self.created_here and isinstance(exc, TilewaveError) and (
                not self.tiles_started or isinstance(exc, BadPixelsError)):
            # Refused before any tile ran, or stopped by pixel values the user must change
            # (so the finished tiles cannot be resumed): an output this call made is no use.
            location.remove_tree(self.store)

    def run(self, pools: PoolLauncher) -> Counts:
        try:
            if not self.lock_and_open():
                return Counts()
            result = self.compute(pools)
            self.manifest.finish(self.store)
        except BaseException as exc:
            self.leave_behind(exc)
            raise
        finally:
            if self.lock is not None:
                # This process stops here, cleanly: the next run need not check its work
                # (unless it stopped before it finished checking an earlier run's).
                if self.marked:
                    location.remove_file(self.running_marker)
                self.lock.release()
        return result


class _Background:
    """A call running on a daemon thread, whose outcome :meth:`result` returns or raises."""

    def __init__(self, call: Callable[..., Any], *args: Any):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call, *args), daemon=True,
                                        name="tilewave-copy")
        self._thread.start()

    def _run(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except BaseException as exc:  # handed to the thread that waits for it
            self._error = exc

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def settle(self, kind: type[BaseException] | None, *_: Any) -> None:
        """Leaving the stage (an exit callback): let the copy finish, so nothing writes
        into the output afterwards, unless the user interrupted, whose process ends."""
        if kind is not KeyboardInterrupt:
            self._thread.join()
