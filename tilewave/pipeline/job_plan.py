"""Planning a job: options, facts about the image and model descriptors in, a plan out.

:func:`plan_job` is a pure function (no I/O, no Ray, no torch): it decides every stage's
grid and mode, whether tiles depend on their neighbours, where each stage writes, and
whether a TIFF export follows, and refuses inconsistent settings, so that a job that
cannot run is refused before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import SettingsError
from ..models.base import ModelDescriptor, SamplerSettings, TilingMode, runs_bandwise
from ..options import EXECUTORS, SAMPLER_OPTIONS, Executor, Options, sampler_given
from ..storage import location
from .blend import RAMPS, Ramp
from .cascade import Stage, stage_store
from .consistency import ITERATIONS, MARGIN, NAME
from .grid import TileGrid

TIFF_SUFFIXES = (".tif", ".tiff")
#: Flat image formats an output is never written as (a gigapixel output does not fit one).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def depends_on_neighbours(mode: str, overlap: int) -> bool:
    """Whether a tile waits for its left, top and top-left neighbours: it receives model
    contexts (``context`` mode) or their blend strips (``blend`` with an overlap)."""
    return mode == "context" or (mode == "blend" and overlap > 0)


@dataclass(frozen=True, kw_only=True)
class ImageFacts:
    """What planning needs to know about the input image."""

    height: int
    width: int
    channels: int
    #: The JPEG quality the image was compressed at (None: not JPEG-compressed).
    jpeg_quality: int | None = None


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """One out-of-core pass: ``model`` at ``scale`` from the previous stage (or the input)
    into the OME-Zarr store ``output``."""

    index: int
    model: str
    scale: int
    mode: TilingMode
    grid: TileGrid
    ramp: Ramp
    output: str
    adaptive: bool = False
    #: How a multi-step model samples; None for one-pass models.
    sampler: SamplerSettings | None = None
    #: ``--nodata``, where given (the input's own tag is part of the input's fingerprint).
    nodata: float | None = None
    #: Whether the stage builds its store's pyramid (the last stage only).
    pyramid: bool = True
    #: What a conditioned model is told about its input (:mod:`tilewave.models.conditions`).
    condition: dict[str, Any] | None = None
    #: For the back-projection stage of ``--consistent``: the job's scale (its input is
    #: that much smaller than this stage's), and the settings of the stage it corrects.
    guide_scale: int = 0
    corrects: dict[str, Any] | None = None
    #: A multi-step context model's tiles run one sampler step at a time
    #: (``--schedule step``), their states kept between steps.
    stepwise: bool = False
    #: The short side of the view of its whole input the model is shown (0: none).
    overview: int = 0
    #: ``fp32``: no half precision on GPUs (``--precision``); bytes on a GPU depend on it.
    precision: str = "auto"

    @property
    def dependent(self) -> bool:
        return depends_on_neighbours(self.mode, self.grid.overlap)

    @property
    def consistency(self) -> bool:
        """This is the back-projection stage of ``--consistent``."""
        return self.guide_scale > 0

    def settings(self) -> dict[str, Any]:
        """The settings a resumed job must repeat (kept in its manifest). The
        back-projection stage's are those of the stage it corrects, marked consistent, so
        the final output's record names the model."""
        if self.corrects is not None:
            return {**self.corrects, "consistent": {"iterations": ITERATIONS,
                                                    "scale": self.guide_scale}}
        g = self.grid
        return {"model": self.model, "scale": self.scale, "mode": self.mode, "tile": g.tile,
                "halo": g.halo, "overlap": g.overlap, "ramp": self.ramp,
                **({"adaptive": True} if self.adaptive else {}),
                # As text: NaN is not equal to itself, nor valid JSON.
                **({"nodata": repr(self.nodata)} if self.nodata is not None else {}),
                **({"condition": self.condition} if self.condition else {}),
                # A resumed job finds the ledger and contexts of the same schedule.
                **({"schedule": "step"} if self.stepwise else {}),
                **({"precision": self.precision} if self.precision != "auto" else {}),
                **(self.sampler.as_dict() if self.sampler else {})}


@dataclass(frozen=True, kw_only=True)
class ExportStep:
    """Write the last stage's store as the TIFF ``file``, then remove the store."""

    store: str
    file: str
    kind: str | None
    compression: str | None
    quality: int


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """Stages to run in order, then an optional export."""

    output: str
    stages: tuple[StagePlan, ...]
    export: ExportStep | None
    executor: Executor
    workers: int | None
    address: str | None
    batch: int | None = None

    @property
    def scale(self) -> int:
        total = 1
        for stage in self.stages:
            total *= stage.scale
        return total

    @property
    def tiles(self) -> int:
        """Tiles of every stage."""
        return sum(s.grid.count for s in self.stages)

    @property
    def intermediate_stores(self) -> list[str]:
        """Stores of every stage but the last."""
        return [s.output for s in self.stages[:-1]]


def _check_runner(options: Options) -> None:
    if options.executor not in EXECUTORS:
        raise SettingsError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, "
                            f"not {options.executor!r}")
    if options.workers is not None and options.workers < 1:
        raise SettingsError(f"--workers must be at least 1, got {options.workers}")
    if options.batch is not None and options.batch < 1:
        raise SettingsError(f"--batch must be at least 1, got {options.batch}")
    if options.executor == "local" and options.address:
        raise SettingsError("--local runs tiles in this process; drop --address")


def resolve_executor(options: Options) -> Executor:
    """Where a job (or a cohort) runs its tiles. ``auto`` picks this process on
    one machine without a GPU: its workers are threads beside the driver, one per CPU, so
    a job pays neither Ray's start and stop (about 4 s on 2 cores) nor its daemons' memory
    (about 220 MiB), and on 2 cores it ran span-x2 at 67 MP in 0.98-0.99x dask's time and
    0.94-1.03x its memory, where Ray took 1.04-1.08x and 1.35-1.62x. A cluster (``--address``, or
    ``RAY_ADDRESS`` set), an explicit ``--workers`` or a GPU asks for Ray: Ray places
    workers across nodes, gives each GPU one that batches tiles, and restarts a worker
    that dies, where a crash here ends the job (``--resume`` continues it)."""
    from .host import has_nvidia_gpu

    if options.executor != "auto":
        return options.executor  # type: ignore[return-value]
    if ray_address(options) or options.workers or has_nvidia_gpu():
        return "ray"
    return "local"


def ray_address(options: Options) -> str | None:
    """The Ray cluster a job names: ``--address``, else ``RAY_ADDRESS`` (as Ray reads it);
    none for a job run in this process (``--local`` takes no ``--address``)."""
    if options.executor == "local":
        return None
    return options.address or os.environ.get("RAY_ADDRESS") or None


def resolve_runner(options: Options, tiles: int) -> tuple[Executor, int | None]:
    """Where ``tiles`` tiles run (:func:`resolve_executor`) and how many at once: ``auto``
    choosing this process runs one per CPU (each on one core), or every one at once
    where there are fewer (each on its share of the cores)."""
    from .host import usable_cpus

    executor = resolve_executor(options)
    if executor == "local" and options.executor == "auto":
        return executor, max(1, min(tiles, usable_cpus()))
    return executor, options.workers


def in_process_notice(what: str, tiles: int | None, workers: int) -> str:
    """The line saying that ``auto`` runs ``what`` (the job, the cohort) in this process,
    ``workers`` of its ``tiles`` (None: not counted) at once."""
    counted = "" if tiles is None else f"{tiles} tile{'s' * (tiles != 1)}"
    return (f"running {what}'s {counted or 'tiles'} in this process, {workers} at once: on "
            "one machine without a GPU that is faster and lighter than Ray "
            "(--executor ray runs them on Ray workers, restarted if one dies)")


def _export_step(output: str, options: Options) -> tuple[str, ExportStep | None]:
    """Where the last stage writes, and the export that follows it, if any."""
    if output.lower().rstrip("/").endswith(IMAGE_SUFFIXES):
        stem, suffix = os.path.splitext(output.rstrip("/"))
        raise SettingsError(f"output {output!r} names a {suffix[1:].upper()} image, which tilewave "
                            f"does not write; name it {stem}.zarr (OME-Zarr) or {stem}.tif "
                            "(pyramidal TIFF)")
    if not output.lower().endswith(TIFF_SUFFIXES):
        if options.tiff_format or options.compression:
            raise SettingsError("--format and --compression apply to a .tif/.tiff output; "
                                "for an OME-Zarr output use `tilewave export` afterwards")
        return output, None
    if not location.is_local(output):
        raise SettingsError(f"a TIFF output is written to a local file, not {output!r}; write "
                            "the OME-Zarr output there and `tilewave export` it locally")
    store = output + ".zarr"  # kept until the export succeeds, so --resume works
    return store, ExportStep(store=store, file=output, kind=options.tiff_format,
                             compression=options.compression, quality=options.quality)


def _plan_stage(index: int, stage: Stage, desc: ModelDescriptor, facts: ImageFacts,
           options: Options, output: str) -> StagePlan:
    """Check ``options`` against one stage's model and image, and cut its grid."""
    model = stage.model
    mode = options.mode or desc.default_mode
    if mode not in desc.modes:
        raise SettingsError(
            f"model {model!r} runs in mode {' or '.join(desc.modes)}, not {mode!r}; change --mode")
    if facts.channels not in desc.channels and not (
            runs_bandwise(desc, facts.channels) and mode != "context" and not desc.positional):
        raise SettingsError(
            f"model {model!r} takes {'/'.join(map(str, desc.channels))} channels but the input "
            f"has {facts.channels}, and it runs band by band only in halo or blend mode; "
            "choose --mode halo or another model")
    tile = options.tile
    if tile < 1:
        raise SettingsError(f"--tile must be a positive number of pixels, got {tile}")
    if mode == "context" and tile < desc.min_tile:
        raise SettingsError(f"model {model!r} shares {desc.min_tile} pixels with each "
                            f"neighbour in context mode, so --tile must be at least "
                            f"{desc.min_tile}, not {tile}")
    if tile % desc.block:
        raise SettingsError(
            f"model {model!r} works on blocks of {desc.block} pixels, so --tile must be a "
            f"multiple of {desc.block}, not {tile}")
    if options.ramp not in RAMPS:
        raise SettingsError(f"--ramp must be one of {', '.join(RAMPS)}, not {options.ramp!r}")
    halo = options.halo
    if halo is None:
        if mode == "halo" and not desc.halo_measured:
            raise SettingsError(
                f"the receptive field of {model!r} is unknown, so --mode halo needs --halo N "
                "(measure it with tilewave.models.receptive_field), or use --mode blend")
        halo = desc.halo
    elif mode == "context" and halo != desc.halo:
        raise SettingsError(f"model {model!r} sets its own halo ({desc.halo}) in context mode; "
                            "drop --halo")
    # A tile larger than the image would only make the output chunks larger.
    tile = min(tile, -(-max(facts.height, facts.width) // desc.block) * desc.block)
    overlap = options.overlap
    if overlap is None:
        overlap = max(1, tile // 8) if mode == "blend" else 0
    if mode != "blend" and overlap:
        raise SettingsError("--overlap applies to --mode blend only; drop it or use blend")
    if options.adaptive and mode == "context" and not desc.tolerates_missing_contexts:
        raise SettingsError(f"--adaptive routes easy tiles to bicubic, which passes no "
                            f"contexts; use it with --mode halo or blend, not with {model!r} "
                            "in context mode")
    if options.adaptive and halo < 2:
        raise SettingsError(f"--adaptive needs --halo of at least 2 (bicubic's reach), not {halo}")
    grid = TileGrid(facts.height, facts.width, tile, stage.scale, halo, overlap)
    condition = ({name: facts.jpeg_quality for name in desc.conditions}
                 if desc.conditions else None)
    sampler = _sampler(desc, options)
    return StagePlan(index=index, model=model, scale=stage.scale, mode=mode, grid=grid,
                     ramp=options.ramp, output=output, adaptive=options.adaptive,
                     sampler=sampler, nodata=options.nodata, condition=condition,
                     stepwise=_stepwise(desc, mode, grid, sampler, options),
                     overview=desc.overview, precision=options.precision)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _sampler(desc: ModelDescriptor, options: Options) -> SamplerSettings | None:
    """The stage's sampler settings: the model's defaults, with what the user gave."""
    if desc.sampler is None:
        return None
    defaults = desc.sampler.as_dict()
    given = sampler_given(options)
    foreign = [_flag(k) for k in given if k not in defaults]
    if foreign:
        takes = ", ".join(_flag(k) for k in defaults)
        raise SettingsError(f"model {desc.name!r} has no {' or '.join(foreign)}; it takes "
                            f"{takes}: drop the others")
    sampler = SamplerSettings(**{**{k: None for k in SAMPLER_OPTIONS}, **defaults,
                                 **{k: v for k, v in given.items() if k in defaults}})
    if sampler.steps < 1:
        raise SettingsError(f"--steps must be at least 1, got {sampler.steps}")
    if desc.steps_max and sampler.steps > desc.steps_max:
        raise SettingsError(f"--steps for {desc.name!r} must be at most {desc.steps_max} (its "
                            f"scheduler's timesteps), not {sampler.steps}")
    if sampler.noise is not None and not 0 <= sampler.noise <= desc.noise_max:
        raise SettingsError(f"--noise for {desc.name!r} must be between 0 and "
                            f"{desc.noise_max:g} (what it was trained for), not {sampler.noise:g}")
    if sampler.noise_level is not None and not 0 <= sampler.noise_level <= desc.noise_level_max:
        raise SettingsError(f"--noise-level for {desc.name!r} must be between 0 and "
                            f"{desc.noise_level_max} (its max_noise_level), not {sampler.noise_level}")
    for name in ("guidance", "early_stop"):
        value = getattr(sampler, name)
        if value is not None and not 0 <= value < float("inf"):
            raise SettingsError(f"{_flag(name)} must be a finite number of at least 0, not {value:g}")
    return sampler


#: Under ``--schedule`` unset, a multi-step context model runs one step at a time when
#: one tile's outgoing contexts of all its steps would be larger than this.
TILE_CONTEXT_BUDGET = 256 << 20


def tile_context_bytes(desc: ModelDescriptor, tile: int, steps: int) -> int:
    """About how many bytes one tile's outgoing contexts of all ``steps`` take."""
    per_pixel, constant = desc.step_context_bytes
    return steps * (per_pixel * tile + constant)


def _stepwise(desc: ModelDescriptor, mode: str, grid: TileGrid, sampler: SamplerSettings | None,
              options: Options) -> bool:
    """Whether the stage's tiles run one sampler step at a time (``--schedule``)."""
    can = desc.stepwise and mode == "context" and sampler is not None
    if not can:
        return False  # a stage without such steps; refused if no stage has them (plan_job)
    if options.schedule == "step" and options.adaptive:
        raise SettingsError("--adaptive upscales easy tiles in one bicubic pass, which has no "
                            "steps to interleave; drop --adaptive or use --schedule tile")
    if options.schedule is not None or options.adaptive:
        return options.schedule == "step"
    assert sampler is not None
    return tile_context_bytes(desc, grid.tile, sampler.steps) > TILE_CONTEXT_BUDGET


def _check_sampler_options(options: Options, descriptors: Sequence[ModelDescriptor]) -> None:
    given = [_flag(k) for k in sampler_given(options)] + (
        ["--schedule"] if options.schedule is not None else [])
    if given and all(d.sampler is None for d in descriptors):
        names = ", ".join(d.name for d in descriptors)
        raise SettingsError(f"{' and '.join(given)} apply to multi-step models (such as "
                            f"uniba-diff-x2 or sd-x4); {names} runs in one pass: drop them")


def plan_job(output: str, options: Options, facts: ImageFacts, stages: Sequence[Stage],
             descriptors: Sequence[ModelDescriptor]) -> JobPlan:
    """The plan for upscaling an image described by ``facts`` into ``output``.

    ``stages`` (from :func:`~tilewave.pipeline.cascade.plan_stages`) and their
    ``descriptors`` say which models run; every stage is checked here, so a cascade
    whose second stage cannot run is refused before its first starts.
    """
    _check_runner(options)
    _check_sampler_options(options, descriptors)
    output = output.rstrip("/")
    last_store, export = _export_step(output, options)
    planned: list[StagePlan] = []
    last = len(stages) - (0 if options.consistent else 1)
    for i, (stage, desc) in enumerate(zip(stages, descriptors, strict=True)):
        store = last_store if i == last else stage_store(last_store, i)
        plan = _plan_stage(i, stage, desc, facts, options, store)
        planned.append(replace(plan, pyramid=i == last))
        # A later stage reads the stage before's output, which no JPEG compressed.
        facts = ImageFacts(height=facts.height * stage.scale, width=facts.width * stage.scale,
                           channels=facts.channels)
    if options.schedule == "step" and not any(p.stepwise for p in planned):
        names = ", ".join(f"{d.name!r} ({d.default_mode if options.mode is None else options.mode})"
                          for d in descriptors)
        raise SettingsError(
            f"--schedule step runs the sampler steps of a multi-step model in context mode one "
            f"at a time; {names} has no such steps: drop --schedule, or give --mode context "
            "where the model has it")
    if options.consistent:
        planned.append(_consistency_stage(planned, last_store))
    executor, workers = resolve_runner(options, sum(p.grid.count for p in planned))
    return JobPlan(output=output, stages=tuple(planned), export=export, executor=executor,
                   workers=workers, address=ray_address(options), batch=options.batch)


def _consistency_stage(planned: Sequence[StagePlan], output: str) -> StagePlan:
    """The back-projection stage that makes the model stages' output consistent with the
    job's input: scale 1, in halo mode over their output, chunked as they chunked it."""
    before = planned[-1]
    total = 1
    for stage in planned:
        total *= stage.scale
    height, width = before.grid.out_shape
    grid = TileGrid(height, width, before.grid.tile * before.scale, 1, MARGIN * total, 0)
    return StagePlan(index=len(planned), model=NAME, scale=1, mode="halo", grid=grid,
                     ramp=before.ramp, output=output, nodata=before.nodata, guide_scale=total, corrects=before.settings())
