"""A cohort: many inputs upscaled in one run, each into its own output in one folder.

One Ray instance (or cluster connection) and one set of workers serve every input, and
keep their model loaded while the inputs run the same one
(:class:`~tilewave.actors.launch.PoolFactory` with ``keep``). Several inputs run at once,
each its own job on its own driver thread, in order of the inputs: their tiles share the
workers first come first served, so while one input's last tiles run, the next one's
fill the workers it leaves idle (and its input is read and copied meanwhile).
Each input is its own job, with its own output, job state and ledger, so each resumes on
its own; an input that fails is reported and the others still run.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import OutputExistsError, SettingsError, TilewaveError, first_line
from ..options import Options
from ..storage import location
from .host import usable_cpus
from .job import run_job
from .job_plan import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    JobPlan,
    in_process_notice,
    ray_address,
    resolve_executor,
    resolve_runner,
)
from .pool import PoolLauncher
from .prepare import prepare
from .report import Progress, Report

#: File names a folder given as an input contributes (a Zarr store is an input itself).
INPUT_SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg", ".zarr")
#: What an output may be named with: OME-Zarr, or a pyramidal TIFF.
OUTPUT_SUFFIXES = (".zarr", *TIFF_SUFFIXES, ".ome.tif", ".ome.tiff")
#: Seconds an interrupted cohort waits for its running inputs to stop before it leaves Ray.
STOP_WAIT_S = 30
#: Marker files of a Zarr store (v3, v2).
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def _is_zarr(path: str) -> bool:
    return any(location.exists(location.join(path, m)) for m in _ZARR_MARKERS)


def expand_inputs(specs: Sequence[str]) -> list[str]:
    """The inputs ``specs`` name: files and Zarr stores as they are, the images in a
    folder (not in its subfolders), and glob patterns (quoted, so the shell left them),
    in the order given (a folder's and a pattern's sorted), each once."""
    found: list[str] = []
    for spec in specs:
        if glob.has_magic(spec):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise SettingsError(f"no input matches {spec!r}; check the pattern")
        elif location.isdir(spec) and not _is_zarr(spec):
            matches = sorted(os.path.join(spec, name) for name in os.listdir(spec)
                             if name.lower().endswith(INPUT_SUFFIXES) and not name.startswith("."))
            if not matches:
                raise SettingsError(f"folder {spec!r} holds no image ({', '.join(INPUT_SUFFIXES)})"
                                    "; name the inputs instead")
        else:
            matches = [spec]
        found.extend(m.rstrip("/") for m in matches)
    return list(dict.fromkeys(found))


def _stem(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def outputs_for(inputs: Sequence[str], output_dir: str, suffix: str = ".zarr") -> list[str]:
    """Each input's output: ``OUTPUT_DIR/<its name without suffix><suffix>``; two inputs
    with the same name are refused (their outputs would collide)."""
    if not suffix.lower().endswith(OUTPUT_SUFFIXES) or suffix.lower().endswith(IMAGE_SUFFIXES):
        raise SettingsError(f"--suffix {suffix!r} names no output tilewave writes; use .zarr "
                            "(OME-Zarr) or .tif (pyramidal TIFF)")
    outputs = [location.join(output_dir.rstrip("/"), _stem(i) + suffix) for i in inputs]
    seen: dict[str, str] = {}
    for given, out in zip(inputs, outputs, strict=True):
        if out in seen:
            raise SettingsError(f"inputs {seen[out]!r} and {given!r} would both write {out!r}; "
                                "rename one or run them into separate --output-dir folders")
        seen[out] = given
    return outputs


@dataclass(kw_only=True)
class Outcome:
    """What became of one input of a cohort: its report, or why it failed."""

    input: str
    output: str
    report: Report | None = None
    error: str | None = None
    #: When its job began and ended, in seconds from the cohort's start (inputs overlap).
    began: float = 0.0
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.began

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output,
                "status": "failed" if self.error is not None else "done",
                "seconds": self.seconds, "began": self.began, "ended": self.ended,
                "error": self.error,
                "report": self.report.as_dict() if self.report is not None else None}


@dataclass(kw_only=True)
class CohortReport:
    """What :func:`tilewave.upscale_cohort` did, input by input."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": [o.as_dict() for o in self.outcomes], "seconds": self.seconds,
                "done": len(self.outcomes) - len(self.failed), "failed": len(self.failed)}


class SharedWorkers:
    """The one set of workers a cohort's jobs share: started by the first stage that
    asks, serving every stage of every input, closed at the end. On Ray, the instance is
    joined or started at once, from the thread that outlives the jobs (Ray's daemons die
    with the thread that started them)."""

    def __init__(self, options: Options, progress: Progress):
        from ..actors.launch import PoolFactory

        plan = JobPlan(output="", stages=(), export=None, executor=options.executor,  # type: ignore[arg-type]
                       workers=options.workers, address=ray_address(options), batch=options.batch)
        self.launcher = PoolFactory(plan, progress, keep=True)
        if options.executor == "ray":
            self.launcher.connect()

    def __call__(self, plan: JobPlan, progress: Progress) -> PoolLauncher:
        return self.launcher

    def stop(self) -> None:
        """Stop the workers: the inputs running fail at their next tile."""
        self.launcher.stop()

    def close(self) -> None:
        self.launcher.close()


def jobs_at_once(inputs: int, workers: int) -> int:
    """How many of a cohort's inputs run at once: one more than the tiles the workers
    run at once (so that inputs of a tile each keep them all busy, with the next input
    prepared meanwhile), at least two, at most eight (each holds an output's lock and
    reads its input), and no more than there are inputs."""
    return max(1, min(inputs, 8, max(2, workers + 1)))


def _cohort_executor(paths: Sequence[str], outputs: Sequence[str], options: Options,
                     progress: Progress) -> Options:
    """``options`` with the cohort's executor: one choice for all inputs (they share the
    workers), made as for one job of all their tiles (:func:`resolve_runner`)."""
    executor = resolve_executor(options)
    if options.executor != "auto" or executor != "local":
        return dataclasses.replace(options, executor=executor)
    tiles: int | None = None
    if len(paths) < usable_cpus():  # with a tile each at least, more inputs fill every CPU
        tiles = 0
        for path, output in zip(paths, outputs, strict=True):
            mine = options if location.exists(output) else dataclasses.replace(options, resume=False)
            try:
                _, plan = prepare(path, output, mine)
            except Exception:  # refused again, and reported, in its turn
                continue
            tiles += plan.tiles
    executor, workers = resolve_runner(options, usable_cpus() if tiles is None else tiles)
    progress.say(in_process_notice("the cohort", tiles, workers or 1))
    return dataclasses.replace(options, executor=executor, workers=workers)


def run_cohort(inputs: Sequence[str], output_dir: str, options: Options,
               suffix: str = ".zarr") -> CohortReport:
    """Upscale every input of ``inputs`` (see :func:`expand_inputs`) into ``output_dir``
    with the same ``options``; see the module's docstring. With ``options.resume``, an
    input whose output is complete is skipped, a partial one resumed, a missing one run."""
    started = time.perf_counter()
    paths = expand_inputs(inputs)
    outputs = outputs_for(paths, output_dir, suffix)
    existing = [o for o in outputs if location.exists(o)]
    if existing and not (options.resume or options.overwrite):
        # Refused before anything runs, rather than once per input.
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"output {existing[0]!r} exists{more}; pass --resume to "
                                "continue the cohort or --overwrite to replace them")
    if location.is_local(output_dir):
        os.makedirs(output_dir, exist_ok=True)
    progress = Progress(options.progress)
    options = _cohort_executor(paths, outputs, options, progress)
    workers = SharedWorkers(options, progress)
    report = CohortReport()

    def run_one(number: int, path: str, output: str) -> Outcome:
        progress.say(f"input {number} of {len(paths)}: {path} -> {output}")
        mine = options
        if options.resume and not location.exists(output):
            mine = dataclasses.replace(options, resume=False)  # nothing to resume yet
        began = time.perf_counter() - started
        try:
            done = run_job(path, output, mine, workers, f"{number}/{len(paths)} {_stem(path)}: ")
            return Outcome(input=path, output=output, report=done, began=began,
                           ended=time.perf_counter() - started)
        except Exception as exc:
            # This input's failure is its own: its tiles still running end first, and
            # the other inputs go on with the workers.
            message = str(exc) if isinstance(exc, TilewaveError) else first_line(exc)
            progress.say(f"input {number} of {len(paths)} failed: {message}")
            return Outcome(input=path, output=output, error=message, began=began,
                           ended=time.perf_counter() - started)

    at_once = jobs_at_once(len(paths), options.workers or usable_cpus())
    inputs_running = ThreadPoolExecutor(at_once, thread_name_prefix="tilewave-input")
    running: list[Future[Outcome]] = []
    try:
        # Submitted in order: an input starts once one before it ended.
        running = [inputs_running.submit(run_one, number, path, output) for number, (path, output)
                   in enumerate(zip(paths, outputs, strict=True), 1)]
        report.outcomes = [job.result() for job in running]
    except BaseException:
        # Interrupted: inputs not started never start, and stopping the workers ends the
        # running ones' tiles, so their threads end too (one copying its input or writing
        # its TIFF does so first) rather than run to completion; Ray is left only after
        # they stopped calling it, or after a while.
        inputs_running.shutdown(wait=False, cancel_futures=True)
        workers.stop()
        futures.wait(running, timeout=STOP_WAIT_S)
        raise
    finally:
        workers.close()
        inputs_running.shutdown(wait=False)
    report.seconds = time.perf_counter() - started
    return report
