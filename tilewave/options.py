"""The options of an upscaling job, declared once.

:class:`Options` is what :func:`tilewave.upscale` takes as keywords, what ``tilewave
upscale`` takes as flags (its parser is built from the fields here) and what the plan
reads. Each field's ``metadata`` holds its flag's help and how the flag parses, so a new
option is one field here and the code that uses it.

Importing this module imports nothing beyond the standard library: ``tilewave --help``
builds its parser from it.
"""

from __future__ import annotations

import argparse
import contextvars
import difflib
import re
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal

#: Where a job's tiles run: Ray actors, this process, or the cheaper of the two for the
#: job (``auto``, the default; :func:`~tilewave.pipeline.job_plan.resolve_executor`).
Executor = Literal["ray", "local"]
EXECUTORS = ("auto", "ray", "local")
#: Set by the command line, whose users gave flags: its errors keep naming them, where the
#: API's name its keywords (:func:`in_python_terms`).
FLAGS_GIVEN: contextvars.ContextVar[bool] = contextvars.ContextVar("FLAGS_GIVEN", default=False)
DEFAULT_TILE = 256
#: Choices shown by ``--help``, kept here so that building the parser imports nothing
#: heavy; tests check they equal the modules' own (tiling modes, ramps, TIFF kinds).
TILING_MODES = ("halo", "blend", "context")
RAMPS = ("linear", "cosine")
TIFF_KINDS = ("slide", "ome", "geotiff")
TIFF_COMPRESSIONS = ("jpeg", "deflate", "zstd", "none")


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
        return value

    return parse


positive = whole_number(1)
non_negative = whole_number(0)


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} must be a finite number of at least 0")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 must be more than 0")
    return value


#: Argument groups of ``tilewave upscale --help``, by the name fields give in ``group``.
GROUPS = {
    "sampling": "multi-step models (uniba-diff-x2, sd-x4)",
    "sd": "the Stable Diffusion x4 upscaler (--model PATH of its diffusers folder)",
    "tiff": "TIFF output (OUTPUT ending in .tif/.tiff)",
}


def option(default: Any, help: str, *, flag: str | None = None, group: str | None = None,
           shorthands: dict[str, Any] | None = None, **argparse_kwargs: Any) -> Any:
    """A field of :class:`Options` with its command-line flag: ``help`` and the
    ``add_argument`` keywords (``type``, ``choices``, ``metavar``, ``action``); ``flag``
    where it is not the field's name (``--quiet`` for ``progress``); ``shorthands``, flags
    that each give the field one value (``--local`` for ``--executor local``)."""
    return field(default=default, metadata={"help": help, "flag": flag, "group": group,
                                            "shorthands": shorthands or {},
                                            "argparse": argparse_kwargs})


#: How models compute on GPUs (``--precision``).
PRECISIONS = ("auto", "fp32")
#: How a multi-step context model's steps are scheduled (``--schedule``).
SCHEDULES = ("tile", "step")


@dataclass(frozen=True, kw_only=True)
class SamplerOptions:
    """How a multi-step model samples, as the user gave it (None: the model's default);
    the plan resolves it against the model's defaults into a
    :class:`~tilewave.models.base.SamplerSettings`. Flags and keywords are flat
    (``--steps``, ``steps=``)."""

    steps: int | None = option(None, "sampler steps (default: the model's: 4 for "
                               "uniba-diff-x2, 25 for sd-x4)", group="sampling", type=positive)
    noise: float | None = option(
        None, "sampler noise in unit pixel values, 0 = deterministic (default: 0; at most the "
        "model's trained limit, 0.1)", group="sampling", type=non_negative_float,
        metavar="SIGMA")
    seed: int | None = option(None, "noise seed (default: 0); noise is keyed by position, so "
                              "tiling, workers and --resume do not change it", group="sampling",
                              type=int)
    prompt: str | None = option(None, "what the image shows (default: empty)", group="sd")
    negative_prompt: str | None = option(None, "what it should not show (default: empty)",
                                         group="sd")
    guidance: float | None = option(
        None, "classifier-free guidance scale (default: 9; above 1 with prompts that differ, "
        "the UNet runs on a batch of two)", group="sd", type=non_negative_float)
    noise_level: int | None = option(
        None, "noise added to the low-resolution input, 0 to the folder's max_noise_level "
        "(default: 20)", group="sd", type=non_negative)
    early_stop: float | None = option(
        None, "a tile stops sampling early: sd-x4 once its estimate changes by less than TOL "
        "(relative) in one step, e.g. 0.01; SR3/Diff2X checkpoints once its sample's estimated "
        "noise is below TOL times its input's (Diff2X's rule: 1) (default: 0, never)",
        group="sampling", type=non_negative_float, metavar="TOL")


@dataclass(frozen=True, kw_only=True)
class Options:
    """What the user asked for: the keyword arguments of :func:`tilewave.upscale` and the
    flags of ``tilewave upscale`` (in the order ``--help`` lists them)."""

    scale: int | None = option(None, "upscaling factor (default: the model's)", type=positive)
    model: str = option(
        "bicubic", "model name (see `tilewave models`; case and _/- do not matter), a weights "
        "file, or stages run one after another, each at its own scale or NAME:SCALE: "
        "span-x4,span-x2 or span-x2,bicubic:3")
    tile: int = option(DEFAULT_TILE, f"tile size in input pixels (default: {DEFAULT_TILE})",
                       type=positive, metavar="PX")
    mode: str | None = option(None, "tiling mode (default: the model's)", choices=TILING_MODES)
    halo: int | None = option(None, "input pixels read around each tile (default: the model's "
                              "receptive field)", type=non_negative, metavar="PX")
    overlap: int | None = option(None, "blend mode: overlap between tiles in input pixels "
                                 "(default: tile/8)", type=non_negative, metavar="PX")
    ramp: str = option("cosine", "blend mode: weight ramp", choices=RAMPS)
    workers: int | None = option(
        None, "tiles computed at once (default: one per CPU, or one per GPU when the cluster "
        "has GPUs); each node runs them in one worker process, on threads; with --local, "
        "in this process (default there: one, on every CPU)", type=positive)
    #: Output bytes do not depend on it, so resumes may change it.
    batch: int | None = option(
        None, "tiles a worker runs through a halo or blend model as one batch (default: 4 on "
        "GPUs, 1 on CPUs, where batches ran slower)", type=positive)
    #: Output bytes on a GPU depend on it; on CPUs models always run in float32.
    precision: str = option(
        "auto", "on GPUs: auto runs models that allow it in half precision (fp16/bf16), fp32 "
        "keeps every model in float32 (CPUs always compute in float32)", choices=PRECISIONS)
    address: str | None = option(None, "Ray cluster address (`auto` for the running one; "
                                 "default: RAY_ADDRESS, else a local instance when Ray runs)")
    executor: str = option(
        "auto", "where tiles run: ray (worker processes on a Ray cluster: a local instance "
        "unless --address), local (this process, without Ray), or auto (default): this "
        "process, a tile per CPU, on one machine without a GPU when neither --address (nor "
        "RAY_ADDRESS) nor --workers is given, as there it is faster and lighter than Ray; "
        "else Ray", choices=EXECUTORS, shorthands={"--local": "local"})
    nodata: float | None = option(
        None, "the value of pixels without data, in every channel (default: the input's "
        "nodata tag): the model never sees them and they stay VALUE", type=float,
        metavar="VALUE")
    #: A last stage, :mod:`tilewave.pipeline.consistency`.
    consistent: bool = option(
        False, "correct every tile after the model so that the output's box downsample "
        "equals the input exactly (removes a model's brightness offset; works with every "
        "model and mode)")
    adaptive: bool = option(False, "upscale easy tiles (glass, nodata, flat) with bicubic, the "
                            "rest with the model (halo and blend modes)")
    #: Sampler settings of multi-step models (None: the model's default).
    sampler: SamplerOptions = field(default_factory=SamplerOptions,
                                    metadata={"nested": True})
    #: Output bytes do not depend on it (tested).
    schedule: str | None = option(
        None, "multi-step context models: run each tile's steps in one go, handing its "
        "neighbours the contexts of every step (tile), or one step at a time across the "
        "image, holding one step's contexts (step; each tile's state waits in the output's "
        "working store between its steps: at the peak one per tile, for uniba-diff-x2 12 "
        "bytes per output pixel); default: step where one tile's contexts of all steps "
        "would exceed 256 MiB, else tile", group="sampling", choices=SCHEDULES)
    keep_stages: bool = option(False, "keep the stores of intermediate stages "
                               "(OUTPUT.stage1.zarr, ...)")
    resume: bool = option(False, "continue an interrupted run")
    #: Done anyway after a run that did not stop cleanly.
    verify: bool = option(
        False, "with --resume: read back every tile the interrupted run recorded and run again "
        "the damaged or missing ones (done anyway after a run that did not stop cleanly)")
    #: Flush every output chunk to disk before its ledger line (local outputs).
    durable: bool = option(
        True, "flush each output chunk to disk before recording its tile, so a power loss "
        "cannot undo a recorded tile (default: on; object stores are durable anyway)",
        action=argparse.BooleanOptionalAction)
    overwrite: bool = option(False, "replace an existing output")
    progress: bool = option(True, "no progress bar or summary", flag="--quiet",
                            action="store_false")
    tiff_format: str | None = option(
        None, "slide (OpenSlide), ome (OME-TIFF) or geotiff (default: geotiff for "
        "georeferenced images, ome for *.ome.tif or non-8-bit-RGB, else slide)",
        flag="--format", group="tiff", choices=TIFF_KINDS)
    compression: str | None = option(None, "default: jpeg for slides, deflate otherwise",
                                     group="tiff", choices=TIFF_COMPRESSIONS)
    quality: int = option(90, "JPEG quality (default: 90)", group="tiff", type=positive)


#: The sampler settings, as :class:`~tilewave.models.base.SamplerSettings` names them.
SAMPLER_OPTIONS = tuple(f.name for f in fields(SamplerOptions))


def sampler_given(options: Options) -> dict[str, Any]:
    """The sampler settings the user gave (those not None), by name."""
    return {k: getattr(options.sampler, k) for k in SAMPLER_OPTIONS
            if getattr(options.sampler, k) is not None}


def option_fields() -> list[Field[Any]]:
    """Every option, the sampler's in its place, flat: one per flag and keyword."""
    flat: list[Field[Any]] = []
    for f in fields(Options):
        flat.extend(fields(SamplerOptions) if f.metadata.get("nested") else [f])
    return flat


def flag_of(f: Field[Any]) -> str:
    """The command-line flag of an :class:`Options` field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                  grouped: bool = True) -> None:
    """Add the flags of :class:`Options` (or of the fields ``names``) to ``parser``, in
    declaration order, each into its group (unless not ``grouped``); ``dest`` is the
    field's name."""
    groups: dict[str, Any] = {}
    for f in option_fields():
        if names is not None and f.name not in names:
            continue
        kwargs = dict(f.metadata["argparse"])
        if f.type in ("bool", bool) and "action" not in kwargs:
            kwargs["action"] = "store_true"
        target: Any = parser
        group = f.metadata["group"]
        if group is not None and grouped:
            if group not in groups:
                groups[group] = parser.add_argument_group(GROUPS[group])
            target = groups[group]
        target.add_argument(flag_of(f), dest=f.name, default=f.default,
                            help=f.metadata["help"], **kwargs)
        for shorthand, value in f.metadata["shorthands"].items():
            target.add_argument(shorthand, dest=f.name, action="store_const", const=value,
                                help=f"same as {flag_of(f)} {value}")


def from_arguments(args: argparse.Namespace) -> Options:
    """The :class:`Options` a parsed ``tilewave upscale`` command line asks for."""
    return _gather({f.name: getattr(args, f.name) for f in option_fields()})


def _gather(flat: dict[str, Any]) -> Options:
    sampler = {k: flat.pop(k) for k in SAMPLER_OPTIONS if k in flat}
    if sampler:
        flat["sampler"] = SamplerOptions(**sampler)
    return Options(**flat)


def from_keywords(where: str, keywords: dict[str, Any]) -> Options:
    """The :class:`Options` of an API call's keywords (the sampler's flat, or a
    ``sampler=SamplerOptions(...)``); an unknown one is refused in one line naming the
    nearest known one."""
    known = [f.name for f in option_fields()] + ["sampler"]
    for name in keywords:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; it takes {', '.join(known)}"
            raise TypeError(f"{where}() got an unknown option {name!r}{hint}")
    if "sampler" in keywords and any(k in keywords for k in SAMPLER_OPTIONS):
        raise TypeError(f"{where}() got sampler= and sampler settings by name; give one of them")
    return _gather(dict(keywords))


_FLAG = re.compile(r"--(no-)?([a-z][a-z0-9-]*)(?: ([\w.+-]+))?")
_NUMBER = re.compile(r"-?[0-9][0-9.e+-]*")


def in_python_terms(message: str) -> str:
    """``message`` with the command line's flags as the API's keywords: ``--overwrite`` as
    ``overwrite=True``, ``--workers 5`` as ``workers=5``, ``--mode halo`` as
    ``mode='halo'``, ``--local`` as ``executor='local'``, ``--steps`` (a value to give)
    as ``steps``."""
    by_flag = {flag_of(f): f for f in option_fields()}
    shorthands = {s: (f, v) for f in option_fields() for s, v in f.metadata["shorthands"].items()}

    def keyword(match: re.Match[str]) -> str:
        negated, name, word = match.group(1), match.group(2), match.group(3)
        after = f" {word}" if word is not None else ""
        number = word if word is not None and _NUMBER.fullmatch(word) else None
        if "--" + name in shorthands:
            of, value = shorthands["--" + name]
            return f"{of.name}={value!r}" + after
        f = by_flag.get("--" + name)
        if f is None:  # the flags of other commands (tune's --minutes) take the same name
            key = name.replace("-", "_")
            return f"{key}={number}" if number is not None else key + after
        settings = f.metadata["argparse"]
        if negated:
            value = "False"
        elif settings.get("action") == "store_const":
            value = repr(settings["const"])
        elif settings.get("action") == "store_false":
            value = "False"
        elif f.type in ("bool", bool):
            value = "True"
        elif number is not None:
            return f"{f.name}={number}"
        elif word is not None and word in settings.get("choices", ()):
            return f"{f.name}={word!r}"
        else:
            return f.name + after
        return f"{f.name}={value}" + after

    return _FLAG.sub(keyword, message)
