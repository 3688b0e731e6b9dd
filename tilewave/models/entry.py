"""What a model family hands the registry: :class:`ModelEntry`.

Kept apart from :mod:`.registry` so that families can build entries without importing
the registry, which imports the families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

from .base import ModelDescriptor, TileModel


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it, and which scales it can be built for."""

    name: str
    factory: Callable[[int], TileModel]
    _: KW_ONLY  # the rest by name: inserting a field shifts no value
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
    #: The extra (``pip install 'tilewave[EXTRA]'``) that installs ``requires``.
    extra: str = "pretrained"
    #: The name stands for a family that runs from a folder given as ``--model PATH``;
    #: building or describing it by name is refused with the hint.
    folder: bool = False
