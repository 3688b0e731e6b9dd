"""Running a job: refuse what cannot run, then each stage's phases, then the export.

:func:`run_job` reads as the job does:

1. **check** (:func:`~tilewave.pipeline.prepare.prepare`): input readable and supported,
   models known, settings consistent (:func:`~tilewave.pipeline.job_plan.plan_job`),
   every output location creatable, existing outputs resumable or replaceable, the
   cluster big enough where that is known. Nothing has started and nothing is written.
2. for each stage (:class:`~tilewave.pipeline.stage_run.StageRun`): **lock** → **create
   or resume** → **start the workers** (:mod:`tilewave.actors.launch`) while the input
   is copied → **run** tiles, and pyramid chunks as the chunks below them are written →
   **finish**; :meth:`~tilewave.pipeline.stage_run.StageRun.leave_behind` is the one
   place that decides what a failure leaves.
3. **export** to TIFF, and removal of intermediate stores.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..models import describe_model
from ..options import Options
from ..storage import location
from ..storage.associated import read_associated, write_associated
from ..storage.inputs import InputImage, open_input
from .job_plan import JobPlan, in_process_notice
from .pool import PoolLauncher
from .prepare import prepare
from .report import Counts, Progress, Report
from .stage_run import StageRun

__all__ = ["Report", "run_job", "scan_hint"]


def _report(plan: JobPlan, image: InputImage, results: list[Counts], seconds: float,
            output: str) -> Report:
    models = [s for s in plan.stages if not s.consistency]
    last = plan.stages[-1]
    grid = last.grid
    model = (models[0].model if len(models) == 1
             else " then ".join(f"{s.model} x{s.scale}" for s in models))
    counts = Counts.total(results)
    return Report(**vars(counts), output=output,
                  array=output if plan.export else f"{last.output}/0",
                  shape=(image.channels, *grid.out_shape), dtype=str(image.dtype), model=model,
                  scale=plan.scale, mode=models[-1].mode, tiles=plan.tiles, seconds=seconds,
                  executor=plan.executor,
                  sampler=next((s.sampler.as_dict() for s in plan.stages if s.sampler), None),
                  schedule=next(("step" if s.stepwise else "tile" for s in plan.stages
                                 if s.sampler and s.mode == "context"), None),
                  consistent=last.consistency)


#: Gives a job the launcher of the workers it shares with other jobs (a cohort's).
SharedPools = Callable[[JobPlan, Progress], PoolLauncher]


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


def run_job(input_path: str, output: str, options: Options,
            shared: SharedPools | None = None, name: str = "") -> Report:
    """Check, then run every stage of the job, then export; see the module's docstring.
    ``shared`` (a cohort's) hands the job workers that outlive it; ``name`` starts the
    job's lines and bars (a cohort's input)."""
    image, plan = prepare(input_path, output, options)
    started = time.perf_counter()
    progress = Progress(options.progress, name)
    hint = scan_hint(image, plan)
    if hint is not None:
        progress.say(hint)
    if options.executor == "auto" and plan.executor == "local":
        progress.say(in_process_notice("the job", plan.tiles, plan.workers or 1))
    from ..actors.launch import PoolFactory

    pools: PoolLauncher = shared(plan, progress) if shared is not None else PoolFactory(plan, progress)
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
        if shared is None:
            pools.close()
    write_associated(plan.stages[-1].output, read_associated(image.path))
    if plan.export is not None:
        from ..storage.tiff_export import export_tiff

        export_tiff(plan.export.store, plan.export.file, kind=plan.export.kind,  # type: ignore[arg-type]
                    compression=plan.export.compression, quality=plan.export.quality,
                    overwrite=options.overwrite, progress=options.progress,
                    label=progress.prefix)
        location.remove_tree(plan.export.store)
    if not options.keep_stages:
        for store in plan.intermediate_stores:
            location.remove_tree(store)
    return _report(plan, image, results, time.perf_counter() - started, output)
