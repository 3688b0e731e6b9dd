"""The Python API: :func:`upscale` and :func:`ingest_image`, which the command line wraps."""

from __future__ import annotations

import os
import time
import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

from . import __version__
from .errors import InputError, OutputExistsError, ResumeMismatchError, SettingsError, TilewaveError
from .models import describe_model, resolve_scale
from .models.user_weights import is_weights_path
from .pipeline.blend import RAMPS, Ramp
from .pipeline.cascade import Stage, plan_stages, stage_store
from .pipeline.plan import TileGrid
from .storage import job_state
from .storage.arrays import ArraySpec
from .storage.ingest import ingest
from .storage.inputs import InputImage, open_input
from .storage import location
from .storage.metadata import scaled
from .storage.ome import create_output
from .storage.pyramid import build_pyramid

Executor = Literal["ray", "local"]
DEFAULT_TILE = 256


@dataclass(frozen=True)
class Report:
    """What a call to :func:`upscale` did."""

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
    #: Of ``seconds``: running the tiles (workers already started), and adding the
    #: pyramid levels; the rest is starting workers, ingesting and finishing.
    tile_seconds: float = 0.0
    pyramid_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    image: InputImage
    model: str
    scale: int
    mode: str
    grid: TileGrid
    ramp: Ramp
    adaptive: bool = False

    def settings(self) -> dict[str, Any]:
        g = self.grid
        return {"model": self.model, "scale": self.scale, "mode": self.mode, "tile": g.tile,
                "halo": g.halo, "overlap": g.overlap, "ramp": self.ramp,
                **({"adaptive": True} if self.adaptive else {})}


def _plan(image: InputImage, model: str, scale: int | None, tile: int, mode: str | None,
          halo: int | None, overlap: int | None, ramp: str, adaptive: bool = False) -> _Plan:
    if is_weights_path(model):
        model = os.path.abspath(model)  # workers may run elsewhere, in another folder
    scale = resolve_scale(model, scale)
    desc = describe_model(model, scale)
    mode = mode or desc.default_mode
    if mode not in desc.modes:
        raise SettingsError(
            f"model {model!r} runs in mode {' or '.join(desc.modes)}, not {mode!r}; change --mode"
        )
    if image.channels not in desc.channels:
        raise SettingsError(
            f"model {model!r} takes {'/'.join(map(str, desc.channels))} channels but the input "
            f"has {image.channels}; choose another model"
        )
    if tile < 1:
        raise SettingsError(f"--tile must be a positive number of pixels, got {tile}")
    if tile % desc.block:
        raise SettingsError(
            f"model {model!r} works on blocks of {desc.block} pixels, so --tile must be a "
            f"multiple of {desc.block}, not {tile}"
        )
    if ramp not in RAMPS:
        raise SettingsError(f"--ramp must be one of {', '.join(RAMPS)}, not {ramp!r}")
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
    tile = min(tile, -(-max(image.height, image.width) // desc.block) * desc.block)
    if overlap is None:
        overlap = max(1, tile // 8) if mode == "blend" else 0
    if mode != "blend" and overlap:
        raise SettingsError("--overlap applies to --mode blend only; drop it or use blend")
    if adaptive and mode == "context":
        raise SettingsError(f"--adaptive routes easy tiles to bicubic, which passes no "
                            f"contexts; use it with --mode halo or blend, not with {model!r} "
                            "in context mode")
    if adaptive and halo < 2:
        raise SettingsError(f"--adaptive needs --halo of at least 2 (bicubic's reach), not {halo}")
    grid = TileGrid(image.height, image.width, tile, scale, halo, overlap)
    return _Plan(image, model, scale, mode, grid, ramp, adaptive)  # type: ignore[arg-type]


def _is_removable_output(path: str) -> bool:
    """Only Zarr stores and tilewave outputs are ever deleted by ``overwrite``."""
    return location.isdir(path) and (location.exists(location.join(path, "zarr.json"))
                                     or location.isdir(job_state.state_dir(path)))


def _check_apart(input_path: str, output: str, what: str = "output") -> None:
    """Refuse an output that is, contains or lies inside the input."""
    if location.is_url(input_path) or location.is_url(output):
        src, dst, sep = input_path.rstrip("/"), output.rstrip("/"), "/"
    else:
        src, dst, sep = os.path.realpath(input_path), os.path.realpath(output), os.sep
    if dst == src or src.startswith(dst + sep) or dst.startswith(src + sep):
        raise SettingsError(f"{what} {output!r} overlaps the input; choose a path outside it")


def _replace(path: str, what: str) -> None:
    """Delete an earlier output at ``path`` for ``overwrite``, refusing anything else."""
    if not _is_removable_output(path):
        kind = "folder that is not a Zarr store" if location.isdir(path) else "file"
        raise OutputExistsError(
            f"{what} {path!r} is a {kind}; tilewave will not delete it, so choose another path"
        )
    location.remove_tree(path)


def _prepare_output(plan: _Plan, output: str, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Check the output location and return the job manifest to run under."""
    _check_apart(plan.image.path, output)
    manifest = {"tilewave": __version__, "input": plan.image.fingerprint(),
                "settings": plan.settings(), "grid": [plan.grid.rows, plan.grid.cols]}
    if location.exists(output):
        if resume:
            previous = job_state.read_manifest(output)
            if previous is None:
                raise ResumeMismatchError(
                    f"output {output!r} was not written by tilewave upscale, so it cannot be "
                    "resumed; choose another output or pass --overwrite"
                )
            old_input = previous.get("input") or {}
            if old_input != manifest["input"]:
                if old_input.get("path") != manifest["input"]["path"]:
                    what = f"input {old_input.get('path')!r}, not {manifest['input']['path']!r}"
                else:
                    what = "input, which has changed since (its size, shape or modification time differ)"
                raise ResumeMismatchError(
                    f"output {output!r} was started from a different {what}; rerun with the "
                    "original input, or with --overwrite instead of --resume"
                )
            if previous.get("settings") != manifest["settings"]:
                diff = _first_difference(previous.get("settings") or {}, manifest["settings"])
                raise ResumeMismatchError(
                    f"output {output!r} was started with different settings ({diff}); rerun "
                    "with the original ones, or with --overwrite instead of --resume"
                )
            if not location.is_url(output) and (
                    not os.access(output, os.W_OK) or not os.access(os.path.join(output, "0"), os.W_OK)):
                raise SettingsError(f"output {output!r} is not writable, so it cannot be resumed; "
                                    "check its permissions")
            return previous
        if not overwrite:
            raise OutputExistsError(
                f"output {output!r} exists; pass --overwrite to replace it or --resume to "
                "continue an interrupted run"
            )
        _replace(output, "output")
    if location.is_url(output):
        return manifest  # object stores have no folders to create or permissions to check
    parent = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot create the output's folder {parent!r} ({exc.strerror}); "
                            "choose a writable location") from None
    if not os.access(parent, os.W_OK):
        raise SettingsError(f"output folder {parent!r} is not writable; choose a writable location")
    return manifest


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: was {old.get(key)!r}, now {new.get(key)!r}"
    return "unknown"


def upscale(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    scale: int | None = None,
    model: str = "bicubic",
    tile: int = DEFAULT_TILE,
    mode: str | None = None,
    halo: int | None = None,
    overlap: int | None = None,
    ramp: str = "cosine",
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor = "ray",
    progress: bool = True,
    tiff_format: str | None = None,
    compression: str | None = None,
    quality: int = 90,
    adaptive: bool = False,
    keep_stages: bool = False,
) -> Report:
    """Upscale ``input`` into the OME-Zarr image ``output``, out of core.

    ``tile`` is in input pixels; each tile's output (``tile * scale`` square) is one
    chunk of the output array. ``mode`` defaults to the model's own; ``halo`` to the
    model's receptive field; ``overlap`` (blend mode) to an eighth of the tile. With
    ``executor="ray"`` tiles run on Ray actors (a local instance unless ``address`` names
    a cluster); ``"local"`` runs them in this process, one after another.

    An ``output`` ending in ``.tif``/``.tiff`` is written as an OME-Zarr image beside it
    (``OUTPUT.zarr``, kept until the export succeeds, so ``resume`` works), then exported
    with :func:`~tilewave.storage.tiff_export.export_tiff` (``tiff_format``,
    ``compression``, ``quality``).

    With ``adaptive``, tiles that :mod:`~tilewave.pipeline.difficulty` finds easy (glass,
    nodata, no structure beyond noise) are upscaled with bicubic instead of the model.

    ``model`` may name stages, ``"span-x4,span-x2"``, and a ``scale`` one model cannot do
    in one step runs in several (x8 with span-x2: three x2 stages); see
    :mod:`~tilewave.pipeline.cascade`. Each stage writes its own store beside ``output``
    (``OUTPUT.stage1.zarr``, ...), removed at the end unless ``keep_stages``.
    """
    output = os.fspath(output)
    if output.lower().endswith((".tif", ".tiff")):
        return _upscale_to_tiff(input, output, tiff_format, compression, quality, overwrite,
                                progress, scale=scale, model=model, tile=tile, mode=mode,
                                halo=halo, overlap=overlap, ramp=ramp, workers=workers,
                                address=address, resume=resume, executor=executor,
                                adaptive=adaptive)
    if tiff_format or compression:
        raise SettingsError("--format and --compression apply to a .tif/.tiff output; "
                            "for an OME-Zarr output use `tilewave export` afterwards")
    stages = plan_stages(model, scale)
    if len(stages) > 1:
        return _cascade(os.fspath(input), output.rstrip("/"), stages, keep_stages, resume,
                        overwrite, tile=tile, mode=mode, halo=halo, overlap=overlap, ramp=ramp,
                        workers=workers, address=address, executor=executor,
                        progress=progress, adaptive=adaptive)
    model, scale = stages[0].model, stages[0].scale
    from tqdm.auto import tqdm

    from .actors.pools import InProcessPool, RayPool
    from .actors.worker import WorkerJob
    from .pipeline.runner import run_tiles

    input, output = os.fspath(input), os.fspath(output).rstrip("/")
    if executor not in ("ray", "local"):
        raise SettingsError(f"executor must be 'ray' or 'local', not {executor!r}")
    if workers is not None and workers < 1:
        raise SettingsError(f"--workers must be at least 1, got {workers}")
    if executor == "local" and (workers or address):
        raise SettingsError("--local runs tiles in this process; drop --workers and --address")
    image = open_input(input)
    plan = _plan(image, model, scale, tile, mode, halo, overlap, ramp, adaptive)
    if location.isdir(output):
        job_state.check_not_busy(output)  # before a resume or an overwrite touches it
    manifest = _prepare_output(plan, output, resume, overwrite)
    started = time.perf_counter()
    grid = plan.grid
    array_path = f"{output}/0"
    if manifest.get("complete"):
        return Report(output, array_path, (image.channels, *grid.out_shape), str(image.dtype),
                      plan.model, plan.scale, plan.mode, grid.count, 0, 0.0, 0, executor)
    # Blend strips and model contexts make tiles wait for their neighbours.
    dependent = plan.mode == "context" or (plan.mode == "blend" and grid.overlap > 0)
    created_here = not manifest.get("created")
    cluster: Any = None
    pool: Any = None
    lock: job_state.JobLock | None = None
    try:
        if not created_here:
            lock = job_state.JobLock(output).acquire()
        if executor == "ray":
            from .actors.cluster import connect

            cluster = connect(address)
            gpus = 1.0 if cluster.gpus >= 1 else 0.0
            available = int(cluster.gpus if gpus else cluster.cpus)
            if workers is not None and workers > available:
                raise SettingsError(
                    f"--workers {workers} asks for more workers than the cluster's {available} "
                    f"{'GPUs' if gpus else 'CPUs'}; lower it"
                )
            n = min(workers or max(1, available), grid.count)
        if created_here:
            create_output(output, (image.channels, *grid.out_shape), image.dtype, grid.out_chunk,
                          output.rstrip("/").rsplit("/", 1)[-1], scaled(image.metadata, plan.scale),
                          {"tilewave": {"input": manifest["input"], "settings": manifest["settings"]}})
            manifest["created"] = True
            job_state.write_manifest(output, manifest)
            lock = job_state.JobLock(output).acquire()
        source = _working_source(image, output, manifest, grid.tile, progress)
        job = WorkerJob(plan.model, plan.scale, grid, plan.mode, plan.ramp, source, array_path,  # type: ignore[arg-type]
                        location.absolute(output) if dependent else None, input,
                        plan.adaptive, image.metadata.get("nodata"))
        ledger = job_state.Ledger(output)
        contexts = job_state.ContextStore(output) if dependent else None
        already = len(ledger.done())
        pool = InProcessPool(job) if executor == "local" else RayPool(job, n, gpus)
        with tqdm(total=grid.count, initial=already, unit="tile", desc="upscale",
                  disable=not progress, dynamic_ncols=True, smoothing=0.1) as bar:
            stats = run_tiles(grid, pool, ledger, dependent, contexts, bar.update)
        pool.close()
        pyramid_started = time.perf_counter()
        _build_pyramid(output, manifest, progress)
        pyramid_seconds = time.perf_counter() - pyramid_started
    except Exception as exc:
        details = getattr(exc, "details", "")
        if details:
            log = location.join(job_state.state_dir(output), "errors.log")
            earlier = location.read_bytes(log) if location.exists(log) else b""
            location.write_bytes(log, earlier + f"{time.ctime()}: {exc}\n{details}\n".encode())
        elif created_here and isinstance(exc, TilewaveError) and (pool is None or
                                                                isinstance(exc, InputError)):
            # Refused before any tile ran, or stopped by pixels the user must fix first (so
            # the finished tiles cannot be resumed): an output this call made is no use.
            location.remove_tree(output)
        if lock is not None:
            lock.release()
        raise
    finally:
        if pool is not None:
            pool.close()
        if cluster is not None:
            from .actors.cluster import disconnect

            disconnect(cluster)
    try:
        job_state.finish(output, manifest)
    finally:
        if lock is not None:
            lock.release()
    return Report(output, array_path, (image.channels, *grid.out_shape), str(image.dtype),
                  plan.model, plan.scale, plan.mode, grid.count, stats.tiles_run,
                  time.perf_counter() - started, pool.workers, executor, stats.tiles_cheap,
                  stats.seconds, pyramid_seconds)


def _cascade(input: str, output: str, stages: list[Stage], keep_stages: bool, resume: bool,
             overwrite: bool, **common: Any) -> Report:
    """Run ``stages`` one after another, each from the previous stage's store into its own."""
    if location.exists(output) and not (resume or overwrite):
        raise OutputExistsError(f"output {output!r} exists; pass --overwrite to replace it or "
                                "--resume to continue an interrupted run")
    reports: list[Report] = []
    source = input
    for i, stage in enumerate(stages):
        dest = output if i == len(stages) - 1 else stage_store(output, i)
        again = resume and location.exists(dest)
        reports.append(upscale(source, dest, model=stage.model, scale=stage.scale, resume=again,
                               overwrite=overwrite and not again, **common))
        source = dest
    if not keep_stages:
        for i in range(len(stages) - 1):
            location.remove_tree(stage_store(output, i))
    last = reports[-1]
    total = 1
    for stage in stages:
        total *= stage.scale
    return Report(output, last.array, last.shape, last.dtype,
                  " then ".join(f"{s.model} x{s.scale}" for s in stages), total, last.mode,
                  sum(r.tiles for r in reports), sum(r.tiles_run for r in reports),
                  sum(r.seconds for r in reports), max(r.workers for r in reports),
                  last.executor, sum(r.tiles_cheap for r in reports),
                  sum(r.tile_seconds for r in reports), sum(r.pyramid_seconds for r in reports))


def _upscale_to_tiff(input: str | os.PathLike[str], output: str, tiff_format: str | None,
                     compression: str | None, quality: int, overwrite: bool, progress: bool,
                     **settings: Any) -> Report:
    from .storage.tiff_export import export_tiff

    if location.is_url(output):
        raise SettingsError(f"a TIFF output is written to a local file, not {output!r}; write "
                            "the OME-Zarr output there and `tilewave export` it locally")
    if os.path.exists(output) and not overwrite:
        raise OutputExistsError(f"output {output!r} exists; add --overwrite to replace it")
    _check_apart(os.fspath(input), output)
    work = output + ".zarr"
    resume = settings.pop("resume")
    report = upscale(input, work, overwrite=overwrite and not resume, resume=resume,
                     progress=progress, **settings)
    export_tiff(work, output, kind=tiff_format, compression=compression,  # type: ignore[arg-type]
                quality=quality, overwrite=overwrite, progress=progress)
    location.remove_tree(work)
    return dataclasses.replace(report, output=output, array=output)


def _build_pyramid(output: str, manifest: dict[str, Any], progress: bool) -> None:
    """Add the output's pyramid levels, recording each in the manifest so a resumed job
    builds only the ones still missing."""
    done = manifest.setdefault("pyramid", [])

    def record(path: str) -> None:
        done.append(path)
        job_state.write_manifest(output, manifest)

    build_pyramid(output, progress=progress, on_level=record, done=tuple(done))


def _working_source(image: InputImage, output: str, manifest: dict[str, Any], tile: int,
                    progress: bool) -> ArraySpec:
    """Where workers read the input: Zarr in place when its chunks are tile-sized or
    smaller, else an ingested working copy chunked to the tiles."""
    if image.array is not None and image.chunks is not None and max(image.chunks) <= 2 * tile:
        return image.array
    work = location.join(job_state.state_dir(output), "work.zarr")
    if manifest.get("ingested") and location.exists(work):
        return ArraySpec(work, "cyx")
    if location.exists(work):  # a copy an earlier, interrupted run did not finish
        location.remove_tree(work)
    spec = ingest(image, work, chunk=tile, progress=progress)
    manifest["ingested"] = True
    job_state.write_manifest(output, manifest)
    return spec


def ingest_image(input: str | os.PathLike[str], store: str | os.PathLike[str], *, chunk: int = 512,
                 overwrite: bool = False, progress: bool = True) -> ArraySpec:
    """Copy ``input`` into a chunked ``(c, y, x)`` Zarr v3 array at ``store``."""
    image = open_input(input)
    store = os.fspath(store)
    if chunk < 1:
        raise SettingsError(f"--chunk must be a positive number of pixels, got {chunk}")
    _check_apart(image.path, store, "store")
    if os.path.exists(store):
        if not overwrite:
            raise OutputExistsError(f"store {store!r} exists; pass --overwrite to replace it")
        _replace(store, "store")
    return ingest(image, store, chunk=chunk, progress=progress)
