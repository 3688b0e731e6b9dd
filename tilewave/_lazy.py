"""Package attributes loaded on first use, so importing a package costs nothing until one
of its heavy members (torch, zarr, dask behind them) is actually needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package + where[name]`` and returns its
    ``name``; ``where`` maps each exported name to its relative module (``".plan"``)."""

    def __getattr__(name: str) -> Any:
        try:
            module = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(module, package), name)

    return __getattr__


def lazy_dir(namespace: Mapping[str, Any], where: Mapping[str, str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` that lists what the package offers (its ``__all__``, the lazy
    names) before their first use, so ``dir(tilewave)`` and completion show ``upscale``,
    and not the helpers it imports for itself."""

    def __dir__() -> list[str]:
        offered = set(namespace.get("__all__", ())) | set(where)
        return sorted(offered | {name for name in namespace if name.startswith("__")})

    return __dir__
