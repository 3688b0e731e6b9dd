"""Everything a job refuses, refused before anything starts or is written
(:func:`prepare`): the input readable and supported, the models known and installed, the
settings consistent (:func:`~tilewave.pipeline.job_plan.plan_job`), every output location
creatable, existing outputs resumable or replaceable and never the input, the cluster
big enough where that is known."""

from __future__ import annotations

import os
from typing import Any

from ..errors import OutputExistsError, ResumeMismatchError, SettingsError
from ..models import describe_model, get_entry
from ..models.ncnn_files import require_wheel
from ..options import Options
from ..storage import layout, location
from ..storage.inputs import InputImage, open_input
from ..storage.locks import check_not_busy
from ..storage.manifest import Manifest
from ..storage.writable import check_creatable, check_writable
from .cascade import plan_stages
from .host import usable_cpus
from .job_plan import ImageFacts, JobPlan, plan_job


def check_apart(input_path: str, output: str, what: str = "output") -> None:
    """Refuse an output that is, contains or lies inside the input."""
    if not (location.is_local(input_path) and location.is_local(output)):
        src, dst, sep = input_path.rstrip("/"), output.rstrip("/"), "/"
    else:
        src, dst, sep = os.path.realpath(input_path), os.path.realpath(output), os.sep
    if dst == src or src.startswith(dst + sep) or dst.startswith(src + sep):
        raise SettingsError(f"{what} {output!r} overlaps the input; choose a path outside it")


def is_removable_output(path: str) -> bool:
    """Only Zarr stores and tilewave outputs are ever deleted by ``overwrite``."""
    return location.isdir(path) and (location.exists(location.join(path, "zarr.json"))
                                     or location.isdir(layout.state_dir(path)))


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
        check_not_busy(store)  # before a resume or an overwrite touches it
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
    if plan.address is None and plan.workers:
        cpus = usable_cpus()
        if plan.workers > cpus:
            where = "the cluster's" if plan.executor == "ray" else "this machine's"
            raise SettingsError(f"--workers {plan.workers} asks for more workers than "
                                f"{where} {cpus} CPUs; lower it")


def unholdable(nodata: float, dtype: Any) -> str | None:
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
    why = None if nodata is None else unholdable(nodata, dtype)
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
