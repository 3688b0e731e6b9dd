"""Local (and mounted) filesystems, through ``os``: whole writes by renaming a flushed
temporary file, durability by ``fsync``, the job lock by ``flock``."""

from __future__ import annotations

import os
import shutil
from typing import IO, Any

#: Why local paths refuse the conditional operations: only leases use them.
_NO_LEASE = "local files are locked with flock, not with a lease"


class LocalBackend:
    """The :class:`~tilewave.storage.backends.base.Backend` of local paths."""

    local = True
    # A write sits in the page cache until it is flushed: durable ones need fsync.
    durable_writes = False
    appendable = True
    supports_flock = True

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove_file(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def read_bytes(self, path: str, length: int | None = None) -> bytes:
        with open(path, "rb") as f:
            return f.read() if length is None else f.read(length)

    def write_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        # Atomic on POSIX: a reader sees the old file or the new one.
        os.replace(tmp, path)

    def append_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path) if os.path.isdir(path) else []

    def stat(self, path: str) -> tuple[int | None, int]:
        st = os.stat(path)
        return (st.st_size if os.path.isfile(path) else None), st.st_mtime_ns

    def open_file(self, path: str, mode: str = "rb") -> IO[Any]:
        return open(path, mode)

    def join(self, base: str, *parts: str) -> str:
        return os.path.join(base, *parts)

    def absolute(self, path: str) -> str:
        return os.path.abspath(path)

    def read_tagged(self, path: str) -> tuple[bytes, str] | None:
        raise NotImplementedError(_NO_LEASE)

    def put_new(self, path: str, data: bytes) -> str:
        raise NotImplementedError(_NO_LEASE)

    def put_replacing(self, path: str, data: bytes, tag: str) -> str:
        raise NotImplementedError(_NO_LEASE)

    def remove_tagged(self, path: str, tag: str) -> None:
        raise NotImplementedError(_NO_LEASE)
