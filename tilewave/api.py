"""The Python API: :func:`upscale` and :func:`ingest_image`, which the command line wraps.

Both are thin: :func:`upscale` gathers its options and hands them to
:func:`tilewave.pipeline.job.run_job`, which plans, checks and runs the job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .errors import OutputExistsError, SettingsError, TilewaveError
from .options import (
    DEFAULT_TILE,
    FLAGS_GIVEN,
    Executor,
    Options,
    from_keywords,
    in_python_terms,
    option_fields,
)
from .pipeline.cohort import CohortReport, run_cohort
from .pipeline.job import run_job
from .pipeline.prepare import check_replaceable
from .pipeline.report import Report
from .storage import location
from .storage.arrays import ArraySpec

__all__ = ["DEFAULT_TILE", "CohortReport", "Options", "Report", "ingest_image", "tune", "upscale",
           "upscale_cohort"]


@contextlib.contextmanager
def _python_terms() -> Iterator[None]:
    """Errors say ``overwrite=True`` to a caller who passed keywords, not ``--overwrite``."""
    try:
        yield
    except TilewaveError as exc:
        if not FLAGS_GIVEN.get() and exc.args and isinstance(exc.args[0], str):
            exc.args = (in_python_terms(exc.args[0]), *exc.args[1:])
        raise


def upscale(input: str | os.PathLike[str], output: str | os.PathLike[str], **options: Any) -> Report:
    """Upscale ``input`` into the OME-Zarr image ``output``, out of core.

    ``tile`` is in input pixels; each tile's output (``tile * scale`` square) is one
    chunk of the output array. ``mode`` defaults to the model's own; ``halo`` to the
    model's receptive field; ``overlap`` (blend mode) to an eighth of the tile. With
    ``executor="ray"`` tiles run on Ray actors (a local instance unless ``address`` names
    a cluster); ``"local"`` runs them in this process (``workers`` at once, default one);
    ``"auto"`` (the default) runs them in this process on one machine without a GPU, a
    tile per CPU at once, and on Ray where ``address`` (or ``RAY_ADDRESS``) names a
    cluster, ``workers`` is given or a GPU is visible.

    An ``output`` ending in ``.tif``/``.tiff`` is written as an OME-Zarr image beside it
    (``OUTPUT.zarr``, kept until the export succeeds, so ``resume`` works), then exported
    with :func:`~tilewave.storage.tiff_export.export_tiff` (``tiff_format``,
    ``compression``, ``quality``).

    ``nodata`` marks pixels without data (default: the input's nodata tag): the model never
    sees them (they take their nearest valid neighbour's value) and they stay exactly
    ``nodata`` in the output.

    With ``adaptive``, tiles that :mod:`~tilewave.pipeline.difficulty` finds easy (glass,
    nodata, no structure beyond noise) are upscaled with bicubic instead of the model.

    ``model`` may name stages, ``"span-x4,span-x2"``, and a ``scale`` one model cannot do
    in one step runs in several (x8 with span-x2: three x2 stages); see
    :mod:`~tilewave.pipeline.cascade`. Each stage writes its own store beside ``output``
    (``OUTPUT.stage1.zarr``, ...), removed at the end unless ``keep_stages``.

    ``steps``, ``noise`` and ``seed`` set how a multi-step model (``uniba-diff-x2``)
    samples; its noise is a function of ``seed`` and the pixel's position, so the output
    is the same for any tile size, worker count or resume. The Stable Diffusion x4
    upscaler (``model`` = its local diffusers folder, see :mod:`tilewave.models.sd_x4`)
    also takes ``prompt``, ``negative_prompt``, ``guidance``, ``noise_level`` and
    ``early_stop``.

    ``workers`` is how many tiles compute at once: each node runs one worker process
    with a thread per tile (one process per GPU). ``batch`` tiles of a halo or blend
    model go through the model as one batch (default: 4 on GPUs, 1 on CPUs).

    ``durable`` (the default) flushes each output chunk to disk before the ledger records
    its tile, so a power loss cannot leave a recorded tile without its pixels. With
    ``resume``, ``verify`` reads back every recorded tile and pyramid chunk, compares it
    with the checksum the ledger kept, and runs again what does not match; a resume after
    a run that did not stop cleanly (killed, crashed, power lost) does this by itself.

    ``consistent`` corrects every tile after the model so that the mean of each
    ``scale`` x ``scale`` block of the output equals the input pixel under it, exactly
    (integers) or to float rounding (float32); see :mod:`tilewave.pipeline.consistency`.
    """
    return run_upscale(input, output, from_keywords("upscale", options))


@_python_terms()
def run_upscale(input: str | os.PathLike[str], output: str | os.PathLike[str],
                options: Options) -> Report:
    """:func:`upscale` with its options gathered in an :class:`Options`."""
    return run_job(os.fspath(input), os.fspath(output), options)


def upscale_cohort(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]],
                   output_dir: str | os.PathLike[str], *, suffix: str = ".zarr",
                   **options: Any) -> CohortReport:
    """Upscale many inputs in one run, each into ``output_dir/<its name><suffix>``.

    ``inputs`` are files, Zarr stores, folders (the images in them) and glob patterns.
    ``options`` are :func:`upscale`'s, the same for every input. One Ray instance and one
    set of workers serve them all, keeping their model loaded from one input to the
    next. Each input is a job of its own (own output, job state, ledger): with
    ``resume`` a complete output is skipped, a partial one continued, a missing one run.
    An input that fails is recorded in the report (``CohortReport.failed``) and the
    others still run. Each output has the bytes the same input upscaled alone would have.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    return run_cohort_options([os.fspath(i) for i in specs], os.fspath(output_dir),
                              from_keywords("upscale", options), suffix)


@_python_terms()
def run_cohort_options(inputs: list[str], output_dir: str, options: Options,
                       suffix: str = ".zarr") -> CohortReport:
    """:func:`upscale_cohort` with its options gathered in an :class:`Options`."""
    return run_cohort(inputs, output_dir, options, suffix)


@_python_terms()
def ingest_image(input: str | os.PathLike[str], store: str | os.PathLike[str], *, chunk: int = 512,
                 overwrite: bool = False, progress: bool = True) -> ArraySpec:
    """Copy ``input`` into a chunked ``(c, y, x)`` Zarr v3 array at ``store``."""
    from .pipeline.prepare import check_apart
    from .storage.ingest import ingest
    from .storage.inputs import open_input
    from .storage.writable import check_creatable

    image = open_input(input)
    store = os.fspath(store)
    if chunk < 1:
        raise SettingsError(f"--chunk must be a positive number of pixels, got {chunk}")
    check_apart(image.path, store, "store")
    if location.exists(store):
        if not overwrite:
            raise OutputExistsError(f"store {store!r} exists; pass --overwrite to replace it")
        check_replaceable(store, "store")
        location.remove_tree(store)
    else:
        check_creatable(store, "store")
    return ingest(image, store, chunk=chunk, progress=progress)


@_python_terms()
def tune(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
         model: str = "span-x2-scan", minutes: float | None = 10.0, steps: int | None = None,
         batch: int = 8, lr: float = 5e-5, seed: int = 0, executor: Executor = "ray",
         address: str | None = None, resume: bool = False, overwrite: bool = False,
         progress: bool = True, exclude: tuple[int, int, int, int] | None = None) -> dict:
    """Fine-tune ``model`` on the image ``input`` itself and write the weights to ``output``
    (a ``.safetensors`` file that ``upscale(model=output)`` runs); returns the training
    record. See :mod:`tilewave.training.tune` for what it learns from and how it keeps
    from doing worse than ``model``.

    The budget is ``minutes`` of training or ``steps`` (whichever ends first). It runs on a
    Ray worker (a GPU if the cluster has one; a local instance unless ``address``), or in
    this process with ``executor="local"``. A checkpoint beside ``output``
    (``OUTPUT.ckpt``) lets an interrupted run continue with ``resume``. ``exclude``
    ``(y0, y1, x0, x1)`` is a region of the input never read, to measure the result on.
    """
    from .pipeline.prepare import check_apart
    from .pipeline.report import Progress
    from .storage.inputs import open_input
    from .training.tune import TuneSettings, check_input, check_output, check_tunable

    input, output = os.fspath(input), os.fspath(output)
    if executor not in ("ray", "local"):
        raise SettingsError(f"executor must be 'ray' or 'local', not {executor!r}")
    if executor == "local" and address:
        raise SettingsError("--local tunes in this process; drop --address")
    if minutes is None and steps is None:
        raise SettingsError("give --minutes or --steps (or both) to bound the tuning")
    if minutes is not None and not 0 < minutes < float("inf"):
        raise SettingsError(f"--minutes must be a positive number, not {minutes:g}")
    image = open_input(input)
    check_apart(image.path, output)
    margin = check_tunable(model)
    check_input(image, margin)
    check_output(output, overwrite, resume)
    settings = TuneSettings(model=model, minutes=minutes, steps=steps, batch=batch, lr=lr,
                            seed=seed, exclude=exclude)
    say = Progress(progress).say
    from .training.progress import progress_bar

    report, close = progress_bar("tune", progress)
    try:
        if executor == "local":
            from .training.tune import tune_weights

            say(f"tuning {model} in this process")
            return tune_weights(input, output, settings, report)
        from .actors.tuner import run_on_ray

        return run_on_ray(input, output, settings, address, report, say)
    finally:
        close()


def _options_doc() -> str:
    lines = [f"    ``{f.name}`` (default ``{f.default!r}``): {f.metadata['help']}"
             for f in option_fields()]
    return ("\n\n    Keyword options (the fields of :class:`~tilewave.options.Options`, the flags "
            "of ``tilewave upscale``)::\n\n" + "\n".join(lines) + "\n")


upscale.__doc__ = (upscale.__doc__ or "") + _options_doc()
