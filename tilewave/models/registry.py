"""Names users type, mapped to model factories.

The built-in families are the modules in :data:`BUILTIN_FAMILIES`; each exposes
``entries() -> list[ModelEntry]`` and is imported on first use, so adding a family is one
module and one line there. :func:`register` adds a model of one's own at run time.

Names are matched ignoring case and with ``_`` read as ``-`` (``SPAN_x2`` is
``span-x2``); the rest of tilewave sees only the canonical name (:func:`canonical_name`).
Listing and describing the built-in models imports neither torch nor the families'
architectures: only building a model (:func:`load_model`) does.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import os
from typing import cast

from ..errors import SettingsError, UnknownModelError
from .base import ModelDescriptor, SamplerSettings, TileModel
from .entry import ModelEntry
from .user_weights import is_weights_path

__all__ = ["BUILTIN_FAMILIES", "ModelEntry", "available_models", "canonical_name",
           "describe_model", "get_entry", "load_model", "register", "resolve_scale"]

#: Modules (relative to this package) whose ``entries()`` are the built-in models.
BUILTIN_FAMILIES: tuple[str, ...] = (".bicubic", ".prefix_sum", ".uniba", ".span", ".realesrgan",
                                     ".sd_x4", ".infdit")

#: Models added with :func:`register`, by canonical name. They take precedence over
#: built-ins of the same name, and are kept apart from them so that a test can snapshot
#: and restore exactly what was added.
_REGISTRY: dict[str, ModelEntry] = {}


def normalise(name: str) -> str:
    """``name`` in canonical spelling: lower case, ``-`` for ``_``, no surrounding blanks."""
    return name.strip().lower().replace("_", "-")


@functools.cache
def _builtins() -> dict[str, ModelEntry]:
    found: dict[str, ModelEntry] = {}
    for module in BUILTIN_FAMILIES:
        for entry in importlib.import_module(module, __package__).entries():
            if entry.name != normalise(entry.name) or entry.name in found:
                raise ValueError(f"built-in model {entry.name!r} ({module}) is not canonical "
                                 "or is registered twice")
            found[entry.name] = entry
    return found


def _models() -> dict[str, ModelEntry]:
    return {**_builtins(), **_REGISTRY}


def register(entry: ModelEntry) -> None:
    """Make a model available by name (replacing any model of that name).

    The entry is stored under its canonical name, which becomes its ``name``.
    """
    name = normalise(entry.name)
    _REGISTRY[name] = entry if entry.name == name else dataclasses.replace(entry, name=name)


def available_models() -> list[ModelEntry]:
    """All registered models, sorted by name."""
    models = _models()
    return [models[k] for k in sorted(models)]


def _unknown(name: str, known: list[str]) -> UnknownModelError:
    close = difflib.get_close_matches(normalise(name), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UnknownModelError(f"unknown model {name!r}; {hint}choose one of: {', '.join(known)} "
                             "(see `tilewave models`)")


def _is_folder(name: str) -> bool:
    """A model folder: a directory, unless it is a bare registered name (a folder named
    ``span-x2`` in the working directory does not hide the model)."""
    return os.path.isdir(name) and (os.sep in name or normalise(name) not in _models())


def _registered(name: str) -> ModelEntry:
    models = _models()
    try:
        return models[normalise(name)]
    except KeyError:
        if os.path.isfile(name):
            from .user_weights import EXTENSIONS

            raise SettingsError(f"--model {name!r} is a file but not model weights; give weights "
                                f"({', '.join(EXTENSIONS)}), a model name (see `tilewave "
                                "models`) or an upscaler folder") from None
        if os.sep in name or name.startswith("."):
            # A path, not a name: say so rather than suggest names.
            raise SettingsError(f"--model {name!r} does not exist; give a model name (see "
                                "`tilewave models`), a weights file or an upscaler folder") from None
        raise _unknown(name, sorted(models)) from None


def canonical_name(name: str) -> str:
    """The name tilewave uses for what the user typed: the registered model's own name
    (``SPAN_x2`` -> ``span-x2``), or a weights file's or model folder's absolute path
    (as :func:`get_entry` names it; the file is not read here).

    Raises :class:`~tilewave.errors.UnknownModelError` for a name nothing is registered under.
    """
    if is_weights_path(name) or _is_folder(name):
        return os.path.abspath(name)
    return _registered(name).name


def get_entry(name: str) -> ModelEntry:
    """The registered model ``name``, a weights file (tilewave's own, or any spandrel
    reads), or a model folder (an Inf-DiT checkpoint's, or the Stable Diffusion x4
    upscaler's)."""
    if _is_folder(name):
        from . import infdit, sd_x4

        if infdit.is_infdit_folder(name):
            return infdit.folder_entry(name)
        return sd_x4.folder_entry(name)
    if is_weights_path(name):
        from . import span, sr3, uniba, user_weights
        from .span.weights import is_span_file

        if name.lower().endswith(".safetensors") and uniba.is_uniba_file(name):
            return uniba.file_entry(name)
        if name.lower().endswith(".safetensors") and is_span_file(name):
            return span.file_entry(name)
        if sr3.is_sr3_file(name):
            return sr3.file_entry(name)
        return user_weights.file_entry(name)
    return _registered(name)


def resolve_scale(name: str, scale: int | None) -> int:
    """The scale to run ``name`` at: the one asked for, checked, or the model's default."""
    entry = get_entry(name)
    if scale is None:
        return entry.default_scale
    if scale < 1:
        raise SettingsError(f"--scale must be a positive integer, got {scale}")
    if entry.scales is not None and scale not in entry.scales:
        allowed = ", ".join(str(s) for s in entry.scales)
        raise SettingsError(f"model {entry.name!r} runs at scale {allowed}, not {scale}; "
                            "change --scale")
    return scale


def describe_model(name: str, scale: int | None = None) -> ModelDescriptor:
    """The descriptor of ``name`` at ``scale``, without loading weights where possible."""
    entry = get_entry(name)
    scale = resolve_scale(name, scale)
    return entry.describe(scale) if entry.describe else entry.factory(scale).descriptor


def load_model(name: str, scale: int | None = None, sampler: SamplerSettings | None = None
               ) -> TileModel:
    """Build the model ``name`` at ``scale`` (or its default scale); a multi-step model
    samples with ``sampler`` (or its defaults)."""
    model = get_entry(name).factory(resolve_scale(name, scale))
    if sampler is None:
        return model
    with_sampler = getattr(model, "with_sampler", None)
    if with_sampler is None:
        raise SettingsError(f"model {name!r} runs in one pass; it takes no --steps, --noise "
                            "or --seed")
    return cast(TileModel, with_sampler(sampler))
