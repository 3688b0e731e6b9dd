"""Running a job: refuse what cannot run, then each stage's phases, then the export.

:func:`run_job` reads as the job does:

1. **check** (:func:`prepare`): input readable and supported, models known, settings
   consistent (:func:`~tilewave.pipeline.job_plan.plan_job`), every output location
   creatable, existing outputs resumable or replaceable, the cluster big enough where
   that is known. Nothing has started and nothing is written.
2. for each stage (:class:`StageRun`): **lock** → **create or resume** → **start the
   workers** while the input is copied → **run** tiles, and pyramid chunks as the chunks
   below them are written → **finish**; :meth:`StageRun.leave_behind` is the one place
   that decides what a failure leaves.
3. **export** to TIFF, and removal of intermediate stores.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .. import __version__
from ..errors import (
    BadPixelsError,
    OutputExistsError,
    ResumeMismatchError,
    SettingsError,
    TilewaveError,
)
from ..models import describe_model, get_entry
from ..models.ncnn_files import require_wheel
from ..options import Options
from ..storage import job_state, location
from ..storage.associated import read_associated, write_associated
from ..storage.inputs import InputImage, open_input
from ..storage.manifest import Manifest
from ..storage.writable import check_creatable, check_writable
from .cascade import plan_stages
from .job_plan import ImageFacts, JobPlan, StagePlan, plan_job


@dataclass(frozen=True, kw_only=True)
class Report:
    """What a call to :func:`tilewave.upscale` did."""

    output: str
    array: str
    shape: tuple[int, int, int]
    dtype: str
    model: str
    scale: int
    mode: str
    tiles: int
    tiles_run: int
    seconds: float
    workers: int
    executor: str
    #: Tiles that took the cheap path (``adaptive``): easy tiles upscaled with bicubic.
    tiles_cheap: int = 0
    #: Of ``seconds``: running the tiles (workers already started; pyramid chunks run
    #: among them), and the pyramid chunks left after the last tile; the rest is
    #: starting workers, ingesting and finishing.
    tile_seconds: float = 0.0
    pyramid_seconds: float = 0.0
    #: Sampler settings (steps, noise, seed) of the multi-step stages' models.
    sampler: dict[str, Any] | None = None
    #: Worker processes the ``workers`` tiles at once ran in (0: this process).
    processes: int = 0
    #: Sampler steps the tiles of this run ran, of those asked for; fewer where tiles
    #: stopped early (``early_stop``) or were easy (``adaptive``).
    steps_run: int = 0
    steps_total: int = 0
    #: Recorded tiles and pyramid chunks read back before resuming (``verify``, or after
    #: a run that did not stop cleanly), and how many of them were taken back to run
    #: again (damaged or missing ones, and what depends on them).
    verified: int = 0
    repaired: int = 0
    #: Tiles and pyramid chunks run again because their worker process or node was lost.
    retried: int = 0
    #: The output was made consistent with the input (``--consistent``): its tiles are
    #: counted in ``tiles``, after the model's.
    consistent: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """What the user sees while a job runs: one status line per phase, and bars."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"tilewave: {text}", file=sys.stderr, flush=True)

    def bar(self, total: int, initial: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="chunk", desc=desc, disable=not self.enabled,
                    dynamic_ncols=True, smoothing=0.1)


# ----------------------------------------------------------------------------- check


def check_apart(input_path: str, output: str, what: str = "output") -> None:
    """Refuse an output that is, contains or lies inside the input."""
    if location.is_url(input_path) or location.is_url(output):
        src, dst, sep = input_path.rstrip("/"), output.rstrip("/"), "/"
    else:
        src, dst, sep = os.path.realpath(input_path), os.path.realpath(output), os.sep
    if dst == src or src.startswith(dst + sep) or dst.startswith(src + sep):
        raise SettingsError(f"{what} {output!r} overlaps the input; choose a path outside it")


def is_removable_output(path: str) -> bool:
    """Only Zarr stores and tilewave outputs are ever deleted by ``overwrite``."""
    return location.isdir(path) and (location.exists(location.join(path, "zarr.json"))
                                     or location.isdir(job_state.state_dir(path)))


def check_replaceable(path: str, what: str) -> None:
    """Refuse to ``overwrite`` anything but an earlier output."""
    if not is_removable_output(path):
        kind = "folder that is not a Zarr store" if location.isdir(path) else "file"
        raise OutputExistsError(
            f"{what} {path!r} is a {kind}; tilewave will not delete it, so choose another path")


def _exists_refusal(path: str) -> OutputExistsError:
    return OutputExistsError(f"output {path!r} exists; pass --overwrite to replace it or "
                             "--resume to continue an interrupted run")


def _check_store(store: str, options: Options) -> None:
    """An existing store is resumed (``resume``), replaced (``overwrite``) or refused."""
    if location.isdir(store):
        job_state.check_not_busy(store)  # before a resume or an overwrite touches it
    if not location.exists(store):
        check_creatable(store)
    elif options.resume:
        previous = Manifest.read(store)
        if previous is None or not previous.complete:
            # A finished stage is read, not written: probing it would change its folder's
            # modification time, which the next stage's record holds as its input's.
            check_writable(store)
    elif options.overwrite:
        check_replaceable(store, "output")
    else:
        raise _exists_refusal(store)


def _check_cluster(plan: JobPlan) -> None:
    """Fail fast on an address where nothing listens (Ray itself retries for minutes), and
    on more workers than a local instance, which has this machine's CPUs, can hold."""
    if plan.executor == "ray" and plan.address:
        from ..actors.cluster import probe

        probe(plan.address)
    if plan.executor == "ray" and plan.address is None and plan.workers:
        cpus = os.cpu_count() or 1
        if plan.workers > cpus:
            raise SettingsError(f"--workers {plan.workers} asks for more workers than the "
                                f"cluster's {cpus} CPUs; lower it")


def _unholdable(nodata: float, dtype: Any) -> str | None:
    """Why pixels of ``dtype`` cannot hold ``nodata``; None if they can."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        finfo = np.finfo(dtype)
        return (None if not np.isfinite(nodata) or abs(nodata) <= finfo.max
                else f"is outside what {dtype} pixels hold")
    info = np.iinfo(dtype)
    if not np.isfinite(nodata) or nodata != int(nodata):
        return f"is not a whole number, and the input holds {dtype} pixels"
    if not info.min <= nodata <= info.max:
        return f"is outside what {dtype} pixels hold ({info.min} to {info.max})"
    return None


def _check_nodata(nodata: float | None, dtype: Any) -> None:
    """``--nodata`` must be a value the input's pixels can hold."""
    why = None if nodata is None else _unholdable(nodata, dtype)
    if why is not None:
        raise SettingsError(f"--nodata {nodata:g} {why}; give one of their values")


def prepare(input_path: str, output: str, options: Options) -> tuple[InputImage, JobPlan]:
    """Everything that can be refused, refused before anything starts or is written."""
    if options.verify and not options.resume:
        raise SettingsError("--verify checks what an interrupted run recorded; give it with "
                            "--resume")
    image = open_input(input_path)
    _check_nodata(options.nodata, image.dtype)
    stages = plan_stages(options.model, options.scale)
    for stage in stages:  # else the workers would fail to start, after Ray did
        requires = get_entry(stage.model).requires
        if requires:
            require_wheel(requires, stage.model)
    descriptors = [describe_model(s.model, s.scale) for s in stages]
    compression = image.compression
    facts = ImageFacts(height=image.height, width=image.width, channels=image.channels,
                       jpeg_quality=(compression.quality if compression and compression.lossy_jpeg
                                     else None))
    check_apart(image.path, output)  # first: of all refusals, the one that guards the input
    plan = plan_job(output, options, facts, stages, descriptors)
    check_apart(image.path, plan.output)
    if plan.export is not None:
        check_apart(image.path, plan.export.store)
        if os.path.exists(plan.export.file) and not options.overwrite:
            raise OutputExistsError(f"output {plan.export.file!r} exists; add --overwrite to "
                                    "replace it")
        if os.path.exists(plan.export.file) and os.path.isdir(plan.export.file):
            raise OutputExistsError(f"output {plan.export.file!r} is a folder; choose a file name")
        from ..storage.tiff_export import check_replaceable_file, export_settings

        check_replaceable_file(plan.export.file)
        check_creatable(plan.export.file)

        # The export's own refusals (a slide TIFF of 16-bit pixels, JPEG of 4 channels, a
        # GeoTIFF without georeferencing), before hours of upscaling rather than after.
        export_settings(plan.export.file, plan.export.kind, plan.export.compression,
                        plan.export.quality, 512, image.dtype, image.channels, image.metadata)
    for planned in plan.stages:
        _check_store(planned.output, options)
    if options.resume and not any(location.exists(s.output) for s in plan.stages):
        # A mistyped output would otherwise start a whole new job without a word.
        raise ResumeMismatchError(f"nothing to resume: {output!r} does not exist (nor any stage "
                                  "of it); check the path, or drop --resume to start the job")
    _check_cluster(plan)
    return image, plan


# ------------------------------------------------------------------------- one stage


@dataclass
class StageResult:
    tiles_run: int = 0
    tiles_cheap: int = 0
    workers: int = 0
    processes: int = 0
    tile_seconds: float = 0.0
    pyramid_seconds: float = 0.0
    steps_run: int = 0
    steps_total: int = 0
    verified: int = 0
    repaired: int = 0
    retried: int = 0


#: Present in a job's state folder while a run writes it: found by the next run, it says
#: the last one did not stop cleanly (killed, crashed, power lost).
RUNNING = "running"


class StageRun:
    """One stage, from its source image into its store, in explicit phases."""

    def __init__(self, stage: StagePlan, image: InputImage, options: Options,
                 progress: Progress, label: str, guide: InputImage | None = None):
        self.stage, self.image, self.options = stage, image, options
        #: The job's input, which the back-projection stage makes its output consistent with.
        self.guide = guide
        self.progress, self.label = progress, label
        self.store = stage.output
        self.lock: job_state.JobLock | None = None
        self.created_here = False
        self.tiles_started = False
        #: This run wrote the marker of a run in progress (RUNNING).
        self.marked = False
        self.manifest = Manifest(__version__, image.fingerprint(), stage.settings(),
                                 [stage.grid.rows, stage.grid.cols])

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
        self.lock = job_state.JobLock(self.store).acquire()
        if self.lock.took_over:
            self.progress.say(f"{self.label}the job that held {self.store!r} stopped renewing "
                              f"its lease ({self.lock.took_over}): taking it over")

    @functools.cached_property
    def output_metadata(self) -> dict[str, Any]:
        """The input's metadata, with ``--nodata`` in place of its own nodata tag."""
        meta = dict(self.image.metadata)
        if self.options.nodata is not None:
            meta["nodata"] = self.options.nodata
        elif "nodata" in meta and _unholdable(meta["nodata"], self.image.dtype):
            # A tag no pixel can equal would, cast to the pixels' type, match real ones.
            self.progress.say(f"the input's nodata tag {meta['nodata']:g} "
                              f"{_unholdable(meta['nodata'], self.image.dtype)}: ignored "
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
        work = location.join(job_state.state_dir(self.store), "work.zarr")
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
        work = location.join(job_state.state_dir(self.store), "guide.zarr")
        done = self.manifest.ingested and location.exists(work)
        return ArraySpec(work, "cyx"), not done

    @property
    def guide_tile(self) -> int:
        return max(1, self.stage.grid.tile // self.stage.guide_scale)

    def copy_inputs(self, copies: list[tuple[InputImage, Any, int]]) -> None:
        """Copy each ``(image, spec, chunk)`` into the working copy ``spec`` names."""
        from ..storage.ingest import ingest

        for image, spec, chunk in copies:
            if location.exists(spec.path):  # a copy an earlier, interrupted run did not finish
                location.remove_tree(spec.path)
            what = "the input" if image is self.image or self.guide is None else "the job's input"
            self.progress.say(f"{self.label}copying {what} into tiles of {chunk} px")
            ingest(image, spec.path, chunk=chunk, progress=self.progress.enabled)
        self.manifest.ingested = True
        self.manifest.save(self.store)

    # run, pyramid, finish -----------------------------------------------------------

    def run_tiles(self, pools: PoolFactory, result: StageResult) -> None:
        """Run the tiles and, as their chunks appear, the pyramid levels above them."""
        from ..storage.job_state import ContextStore, Ledger
        from ..storage.ome import create_levels, finish_levels
        from .pyramid_plan import PyramidPlan
        from .runner import run_tiles
        from .tile_job import TileJob

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
                      condition=stage.condition)
        ledger = Ledger(self.store)
        result.verified, result.repaired = self.check_recorded(ledger, pyramid)
        location.write_bytes(self.running_marker, f"{os.getpid()}\n".encode(), durable=True)
        self.marked = True
        already = len(ledger.done())
        total = grid.count + pyramid.count
        # The input is copied on a thread while this one starts Ray and the workers
        # (which open the copy at their first read): Ray's daemons die with the thread
        # that started them, so that must be the one that lives as long as the job.
        copying = _Background(self.copy_inputs, copies) if copies else None
        with contextlib.ExitStack() as stack:
            if copying is not None:
                stack.push(copying.settle)
            pool = stack.enter_context(pools(job, grid.count - already, self.label))
            if copying is not None:
                copying.result()
            self.tiles_started = True
            result.workers, result.processes = pool.workers, pool.processes
            if hasattr(pool, "on_retry") and not location.is_url(self.store):
                pool.on_retry = self._log_retry
            contexts = ContextStore(self.store) if stage.dependent else None
            with self.progress.bar(total, already + len(ledger.done_chunks()),
                                   f"{self.label}upscale + pyramid") as bar:
                try:
                    stats = run_tiles(grid, pool, ledger, stage.dependent, contexts, bar.update,
                                      job.pyramid, self.lock.check if self.lock else None)
                finally:
                    result.retried = pool.retried
        finish_levels(self.store, levels)
        self.manifest.pyramid = levels[1:]
        result.tiles_run, result.tiles_cheap = stats.tiles_run, stats.tiles_cheap
        result.steps_run, result.steps_total = stats.steps_run, stats.steps_total
        result.tile_seconds = stats.seconds - stats.pyramid_tail_seconds
        result.pyramid_seconds = stats.pyramid_tail_seconds

    def _log_retry(self, index: tuple[int, ...], cause: str) -> None:
        """Note a tile run again after its worker was lost in ``.tilewave/events.log``,
        which outlives a driver killed before it could report (local outputs)."""
        what = f"tile {index[:2]}" if len(index) == 2 else f"pyramid chunk {index}"
        with open(location.join(job_state.state_dir(self.store), "events.log"), "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} retry {what}: {cause}\n")

    @property
    def running_marker(self) -> str:
        return location.join(job_state.state_dir(self.store), RUNNING)

    def check_recorded(self, ledger: Any, pyramid: Any) -> tuple[int, int]:
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
                                     recorded, self.stage.dependent, bar.update)
        self.progress.say(self.label + verdict.describe())
        taken_back = sorted(verdict.rerun_tiles) + sorted(verdict.rerun_chunks)
        ledger.forget(taken_back)
        return verdict.checked, len(taken_back)

    def leave_behind(self, exc: BaseException) -> None:
        """The one place that decides what a failed stage leaves behind."""
        details = getattr(exc, "details", "") if isinstance(exc, TilewaveError) else ""
        if details:  # a failed tile or an unreadable input chunk: the traceback, for a report
            log = location.join(job_state.state_dir(self.store), "errors.log")
            earlier = location.read_bytes(log) if location.exists(log) else b""
            location.write_bytes(log, earlier + f"{time.ctime()}: {exc}\n{details}\n".encode())
        elif self.created_here and isinstance(exc, TilewaveError) and (
                not self.tiles_started or isinstance(exc, BadPixelsError)):
            # Refused before any tile ran, or stopped by pixel values the user must change
            # (so the finished tiles cannot be resumed): an output this call made is no use.
            location.remove_tree(self.store)

    def run(self, pools: PoolFactory) -> StageResult:
        result = StageResult()
        try:
            if not self.lock_and_open():
                return result
            self.run_tiles(pools, result)
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


# ------------------------------------------------------------------------ the workers


class PoolFactory:
    """Starts a stage's workers: in this process, or Ray actors on the job's cluster,
    which is joined (or started) once for all stages."""

    def __init__(self, plan: JobPlan, progress: Progress):
        self.plan, self.progress = plan, progress
        self.cluster: Any = None

    def _connect(self) -> Any:
        from ..actors.cluster import connect

        if self.cluster is None:
            self.progress.say("joining the Ray cluster at " + self.plan.address if self.plan.address
                              else "starting a local Ray instance")
            self.cluster = connect(self.plan.address)
        return self.cluster

    @contextlib.contextmanager
    def __call__(self, job: Any, tiles: int, label: str) -> Iterator[Any]:
        """Workers for ``job`` (at most one per remaining tile), closed on leaving."""
        pool = self._start(job, tiles, label)
        try:
            yield pool
        finally:
            pool.close()

    def _start(self, job: Any, tiles: int, label: str) -> Any:
        from ..actors.pools import InProcessPool, RayPool

        if self.plan.executor == "local":
            self.progress.say(f"{label}loading {job.model} in this process")
            return InProcessPool(job)
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
        if self.cluster is not None:
            from ..actors.cluster import disconnect

            disconnect(self.cluster)
            self.cluster = None


def _placements(workers: int, gpus: bool, batch: int | None) -> list[Any]:
    """One worker process per GPU (``workers`` GPUs, a batch of tiles at a time each), or
    per CPU node (``workers`` tiles at once, a tile per CPU)."""
    import ray

    from .scheduling import GPU_BATCH, Placement, share_nodes

    if gpus:
        return [Placement(None, batch or GPU_BATCH) for _ in range(workers)]
    nodes = {n["NodeID"]: int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]}
    try:
        return share_nodes(workers, nodes)
    except ValueError:  # fractional CPUs per node: one tile per process, anywhere
        return [Placement(None, 1) for _ in range(workers)]


# ------------------------------------------------------------------------------ a job


def _report(plan: JobPlan, image: InputImage, results: list[StageResult], seconds: float,
            output: str) -> Report:
    models = [s for s in plan.stages if not s.consistency]
    last = plan.stages[-1]
    grid = last.grid
    model = (models[0].model if len(models) == 1
             else " then ".join(f"{s.model} x{s.scale}" for s in models))
    return Report(output=output, array=output if plan.export else f"{last.output}/0",
                  shape=(image.channels, *grid.out_shape), dtype=str(image.dtype), model=model,
                  scale=plan.scale, mode=models[-1].mode,
                  tiles=sum(s.grid.count for s in plan.stages),
                  tiles_run=sum(r.tiles_run for r in results), seconds=seconds,
                  workers=max(r.workers for r in results), executor=plan.executor,
                  tiles_cheap=sum(r.tiles_cheap for r in results),
                  tile_seconds=sum(r.tile_seconds for r in results),
                  pyramid_seconds=sum(r.pyramid_seconds for r in results),
                  sampler=next((s.sampler.as_dict() for s in plan.stages if s.sampler), None),
                  processes=max(r.processes for r in results),
                  steps_run=sum(r.steps_run for r in results),
                  steps_total=sum(r.steps_total for r in results),
                  verified=sum(r.verified for r in results),
                  repaired=sum(r.repaired for r in results),
                  retried=sum(r.retried for r in results), consistent=last.consistency)


def scan_hint(image: InputImage, plan: JobPlan) -> str | None:
    """One line for a JPEG-compressed input met by a model trained on clean images only:
    the scan-aware model to use instead. None when there is nothing to say."""
    compression = image.compression
    first = plan.stages[0]
    if compression is None or not compression.lossy_jpeg:
        return None
    variant = describe_model(first.model, first.scale).scan_variant
    if variant is None:
        return None
    quality = f", quality {compression.quality}" if compression.quality else ""
    return (f"the input is JPEG-compressed{quality}; {first.model} was trained on clean images "
            f"and sharpens JPEG blocks into a visible grid: --model {variant} is trained for "
            "such scans")


def run_job(input_path: str, output: str, options: Options) -> Report:
    """Check, then run every stage of the job, then export; see the module's docstring."""
    image, plan = prepare(input_path, output, options)
    started = time.perf_counter()
    progress = Progress(options.progress)
    hint = scan_hint(image, plan)
    if hint is not None:
        progress.say(hint)
    pools = PoolFactory(plan, progress)
    results = []
    source = image
    try:
        models = sum(not s.consistency for s in plan.stages)
        for stage in plan.stages:
            label = ("consistency with the input: " if stage.consistency else
                     f"stage {stage.index + 1} of {models}: " if models > 1 else "")
            results.append(StageRun(stage, source, options, progress, label,
                                    image if stage.consistency else None).run(pools))
            source = open_input(stage.output) if stage is not plan.stages[-1] else source
    finally:
        pools.close()
    write_associated(plan.stages[-1].output, read_associated(image.path))
    if plan.export is not None:
        from ..storage.tiff_export import export_tiff

        export_tiff(plan.export.store, plan.export.file, kind=plan.export.kind,  # type: ignore[arg-type]
                    compression=plan.export.compression, quality=plan.export.quality,
                    overwrite=options.overwrite, progress=options.progress)
        location.remove_tree(plan.export.store)
    if not options.keep_stages:
        for store in plan.intermediate_stores:
            location.remove_tree(store)
    return _report(plan, image, results, time.perf_counter() - started, output)
