"""Where files live: a local path, an object-store URL (``s3://bucket/key``) or
``memory://``. Each function here hands its path to that path's backend
(:mod:`tilewave.storage.backends`), which does the work; the backends' modules say how
(fsync and atomic renames locally, fsspec with credentials never in a path or message
for URLs). Zarr stores take URLs directly.
"""

from __future__ import annotations

from typing import IO, Any

from .backends import backend_for


def is_local(path: str) -> bool:
    """Whether ``path`` is a file of this machine (``os`` and ``tifffile`` can open it)."""
    return backend_for(path).local


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of the URL ``path`` and the path within it."""
    from .backends.fsspec import filesystem as fsspec_filesystem

    return fsspec_filesystem(path)


def absolute(path: str) -> str:
    return backend_for(path).absolute(path)


def join(base: str, *parts: str) -> str:
    return backend_for(base).join(base, *parts)


def exists(path: str) -> bool:
    return backend_for(path).exists(path)


def isdir(path: str) -> bool:
    """A folder, or for URLs a prefix with objects under it (how a Zarr store looks)."""
    return backend_for(path).isdir(path)


def remove_tree(path: str) -> None:
    backend_for(path).remove_tree(path)


def remove_file(path: str) -> None:
    """Remove the file or object ``path``, if it is there."""
    backend_for(path).remove_file(path)


def read_bytes(path: str, length: int | None = None) -> bytes:
    return backend_for(path).read_bytes(path, length)


def write_bytes(path: str, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` whole: a reader sees the old content or the new, never a
    part (locally by renaming a flushed temporary file; object stores do this anyway)."""
    backend_for(path).write_bytes(path, data, durable)


def append_bytes(path: str, data: bytes, durable: bool = False) -> None:
    """Add ``data`` at the end of ``path``, where its backend can append (not objects)."""
    backend_for(path).append_bytes(path, data, durable)


def listdir(path: str) -> list[str]:
    """Names directly under ``path`` (empty if there is nothing)."""
    return backend_for(path).listdir(path)


def stat(path: str) -> tuple[int | None, int]:
    """``(size in bytes or None for folders, modification time in ns)`` of ``path``."""
    return backend_for(path).stat(path)


def open_file(path: str, mode: str = "rb") -> IO[Any]:
    return backend_for(path).open_file(path, mode)
