"""Names users type, mapped to model factories.

Adding a model family is one module and one :func:`register` line at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import SettingsError, UnknownModelError
from .base import ModelDescriptor, TileModel


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it, and which scales it can be built for."""

    name: str
    factory: Callable[[int], TileModel]
    #: Scales the model can run at; None means any integer scale >= 1.
    scales: tuple[int, ...] | None
    default_scale: int
    summary: str
    #: Builds the descriptor without loading weights; None builds the model to ask it.
    describe: Callable[[int], ModelDescriptor] | None = None
    #: The distribution (pip package) the weights come from, when it is not tilewave.
    requires: str | None = None
    #: A model that checks the machinery rather than upscaling images well.
    diagnostic: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    """Make a model available by name (replacing any model of that name)."""
    _REGISTRY[entry.name] = entry


def available_models() -> list[ModelEntry]:
    """All registered models, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_entry(name: str) -> ModelEntry:
    """The registered model ``name``, or a weights file (tilewave's own, or any spandrel reads)."""
    from . import user_weights

    if user_weights.is_weights_path(name):
        from . import uniba

        if name.lower().endswith(".safetensors") and uniba.is_uniba_file(name):
            return uniba.file_entry(name)
        return user_weights.file_entry(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {known} (see `tilewave models`)"
        ) from None


def resolve_scale(name: str, scale: int | None) -> int:
    """The scale to run ``name`` at: the one asked for, checked, or the model's default."""
    entry = get_entry(name)
    if scale is None:
        return entry.default_scale
    if scale < 1:
        raise SettingsError(f"--scale must be a positive integer, got {scale}")
    if entry.scales is not None and scale not in entry.scales:
        allowed = ", ".join(str(s) for s in entry.scales)
        raise SettingsError(f"model {name!r} runs at scale {allowed}, not {scale}; change --scale")
    return scale


def describe_model(name: str, scale: int | None = None) -> ModelDescriptor:
    """The descriptor of ``name`` at ``scale``, without loading weights where possible."""
    entry = get_entry(name)
    scale = resolve_scale(name, scale)
    return entry.describe(scale) if entry.describe else entry.factory(scale).descriptor


def load_model(name: str, scale: int | None = None) -> TileModel:
    """Build the model ``name`` at ``scale`` (or its default scale)."""
    return get_entry(name).factory(resolve_scale(name, scale))


def _register_builtins() -> None:
    from . import realesrgan, span, uniba
    from .bicubic import Bicubic
    from .prefix_sum import PrefixSum

    register(ModelEntry("bicubic", Bicubic, None, 2, "bicubic interpolation, any integer scale"))
    register(ModelEntry("prefix-sum", PrefixSum, None, 2, "diagnostic context-mode model",
                        diagnostic=True))
    register(ModelEntry("uniba-x2", uniba.load_uniba, (2,), 2, "UniBA transformer x2",
                        describe=uniba.describe_shipped))
    for entry in span.entries() + realesrgan.entries():
        register(entry)


_register_builtins()
