"""Where files live: a local path, or an object-store URL (``s3://bucket/key``).

Local paths go through ``os`` (with fsync and atomic renames where durability matters);
URLs go through fsspec (s3fs for ``s3://``), whose credentials come from the usual
places (environment, profile, instance role) and are never part of a path, a message or
a log line. Zarr stores take URLs directly.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from typing import Any

from ..errors import SettingsError
from ..install import pip_hint


def is_url(path: str) -> bool:
    return "://" in path


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` and the path within it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as exc:
        protocol = path.split("://", 1)[0]
        raise SettingsError(f"{protocol}:// paths need an extra package ({exc}); for s3:// "
                            f"install it with: {pip_hint('s3')}") from None


def absolute(path: str) -> str:
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, key = filesystem(path)
    return bool(fs.exists(key))


def isdir(path: str) -> bool:
    """A folder, or for URLs a prefix with objects under it (how a Zarr store looks)."""
    if not is_url(path):
        return os.path.isdir(path)
    fs, key = filesystem(path)
    return bool(fs.isdir(key))


def remove_tree(path: str) -> None:
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, key = filesystem(path)
    if fs.exists(key):
        fs.rm(key, recursive=True)


def remove_file(path: str) -> None:
    """Remove the file or object ``path``, if it is there."""
    if not is_url(path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return
    fs, key = filesystem(path)
    if fs.exists(key):
        fs.rm(key)


def read_bytes(path: str, length: int | None = None) -> bytes:
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read() if length is None else f.read(length)
    fs, key = filesystem(path)
    return fs.cat_file(key, start=0, end=length) if length is not None else fs.cat_file(key)


def write_bytes(path: str, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` whole: a reader sees the old content or the new, never a
    part (locally by renaming a flushed temporary file; object stores do this anyway)."""
    if is_url(path):
        fs, key = filesystem(path)
        fs.pipe_file(key, data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def listdir(path: str) -> list[str]:
    """Names directly under ``path`` (empty if there is nothing)."""
    if not is_url(path):
        return os.listdir(path) if os.path.isdir(path) else []
    fs, key = filesystem(path)
    if not fs.exists(key):
        return []
    return [posixpath.basename(p.rstrip("/")) for p in fs.ls(key, detail=False)]


def stat(path: str) -> tuple[int | None, int]:
    """``(size in bytes or None for folders, modification time in ns)`` of ``path``."""
    if not is_url(path):
        st = os.stat(path)
        return (st.st_size if os.path.isfile(path) else None), st.st_mtime_ns
    fs, key = filesystem(path)
    info = fs.info(key)
    modified = info.get("LastModified") or info.get("mtime") or 0
    stamp = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else int(modified)
    return (info.get("size") if info.get("type") == "file" else None), stamp


def open_file(path: str, mode: str = "rb") -> Any:
    if not is_url(path):
        return open(path, mode)
    fs, key = filesystem(path)
    return fs.open(key, mode)
