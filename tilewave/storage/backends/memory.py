"""Files held in a dictionary of this process (``memory://name/...``): the backend on which
the job state (ledger, lease) runs in tests without a disk or an object store.

It behaves as an object store that can also append: no ``flock`` (jobs lease), folders
exist only as the prefixes of what is under them, and versions carry tags for the
conditional writes. Only tilewave's own files live here; Zarr opens ``memory://`` paths
with fsspec's memory filesystem, which is another store.
"""

from __future__ import annotations

import errno
import io
import itertools
import posixpath
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from .base import PreconditionFailed


@dataclass(frozen=True)
class _Version:
    """One file's content, the tag naming this version and when it was written."""

    data: bytes
    tag: str
    mtime_ns: int


def _key(path: str) -> str:
    """``memory://a/b/`` as ``a/b``: the scheme and the slashes around it dropped."""
    _, sep, rest = path.partition("://")
    return (rest if sep else path).strip("/")


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such file", path)


class _Writer(io.BytesIO):
    """A file opened for writing: its content replaces the file's when it is closed, as an
    object store's upload does."""

    def __init__(self, commit: Any, initial: bytes = b""):
        super().__init__(initial)
        self.seek(0, io.SEEK_END)
        self._commit = commit

    def close(self) -> None:
        if not self.closed:
            self._commit(self.getvalue())
        super().close()


class MemoryBackend:
    """The :class:`~tilewave.storage.backends.base.Backend` of ``memory://`` paths."""

    local = False
    # Nothing to flush (and nothing outlives the process).
    durable_writes = True
    appendable = True
    supports_flock = False

    def __init__(self) -> None:
        # The lease renews on a thread of its own while the job's thread records tiles.
        self._lock = threading.Lock()
        self._files: dict[str, _Version] = {}
        self._versions = itertools.count(1)

    def _store(self, key: str, data: bytes) -> str:
        """Put a new version of ``key`` (the caller holds the lock); returns its tag."""
        tag = f'"{next(self._versions)}"'
        self._files[key] = _Version(data, tag, time.time_ns())
        return tag

    def _under(self, key: str) -> list[str]:
        prefix = key + "/" if key else ""
        return [k for k in self._files if k.startswith(prefix)]

    def exists(self, path: str) -> bool:
        key = _key(path)
        with self._lock:
            return key in self._files or bool(self._under(key))

    def isdir(self, path: str) -> bool:
        with self._lock:
            return bool(self._under(_key(path)))

    def remove_tree(self, path: str) -> None:
        key = _key(path)
        with self._lock:
            for k in [key, *self._under(key)]:
                self._files.pop(k, None)

    def remove_file(self, path: str) -> None:
        with self._lock:
            self._files.pop(_key(path), None)

    def read_bytes(self, path: str, length: int | None = None) -> bytes:
        key = _key(path)
        with self._lock:
            version = self._files.get(key)
            if version is None:
                if self._under(key):
                    raise IsADirectoryError(errno.EISDIR, "a folder", path)
                raise _missing(path)
        return version.data if length is None else version.data[:length]

    def write_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        with self._lock:
            self._store(_key(path), bytes(data))

    def append_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        key = _key(path)
        with self._lock:
            earlier = self._files.get(key)
            self._store(key, (earlier.data if earlier is not None else b"") + bytes(data))

    def listdir(self, path: str) -> list[str]:
        key = _key(path)
        start = len(key) + 1 if key else 0
        with self._lock:
            return sorted({k[start:].split("/", 1)[0] for k in self._under(key)})

    def stat(self, path: str) -> tuple[int | None, int]:
        key = _key(path)
        with self._lock:
            version = self._files.get(key)
            if version is not None:
                return len(version.data), version.mtime_ns
            under = [self._files[k].mtime_ns for k in self._under(key)]
        if not under:
            raise _missing(path)
        return None, max(under)  # a folder changes when what is under it does

    def open_file(self, path: str, mode: str = "rb") -> IO[Any]:
        if mode in ("r", "rb"):
            return io.BytesIO(self.read_bytes(path))
        if mode in ("w", "wb", "a", "ab"):
            initial = self.read_bytes(path) if mode.startswith("a") and self.exists(path) else b""
            return _Writer(lambda data: self.write_bytes(path, data), initial)
        raise ValueError(f"memory files open in binary read, write or append modes, not {mode!r}")

    def join(self, base: str, *parts: str) -> str:
        return posixpath.join(base, *parts)

    def absolute(self, path: str) -> str:
        return path.rstrip("/")

    # conditional operations -----------------------------------------------------------

    def read_tagged(self, path: str) -> tuple[bytes, str] | None:
        with self._lock:
            version = self._files.get(_key(path))
        return (version.data, version.tag) if version is not None else None

    def put_new(self, path: str, data: bytes) -> str:
        key = _key(path)
        with self._lock:
            if key in self._files:
                raise PreconditionFailed(f"{path}: the pre-condition of the write did not hold "
                                         "(the object exists)")
            return self._store(key, bytes(data))

    def put_replacing(self, path: str, data: bytes, tag: str) -> str:
        key = _key(path)
        with self._lock:
            version = self._files.get(key)
            if version is None:  # as S3 answers an If-Match on a missing key
                raise _missing(path)
            if version.tag != tag:
                raise PreconditionFailed(f"{path}: the pre-condition of the write did not hold "
                                         "(another version of the object is there)")
            return self._store(key, bytes(data))

    def remove_tagged(self, path: str, tag: str) -> None:
        key = _key(path)
        with self._lock:
            version = self._files.get(key)
            if version is not None and version.tag == tag:
                del self._files[key]
