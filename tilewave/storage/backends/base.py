"""What tilewave asks of a place where files live, and the capabilities in which places
differ, declared rather than guessed from a path's spelling.

Every backend answers the same operations on whole files (:class:`Backend`). Where
callers must act differently, they ask a capability:

* ``local``: paths are this machine's files, so ``os``, ``tifffile`` (memory mapping) and
  write probes work on them.
* ``durable_writes``: a finished write survives a power loss as it is; where it does not
  (a local disk's page cache), durable writes are flushed with ``fsync``.
* ``appendable``: :meth:`Backend.append_bytes` works. Object stores replace objects whole,
  so logs there are folders of whole objects instead of one growing file.
* ``supports_flock``: the job lock is an advisory ``flock``. Backends without it lock
  with an expiring lease (:mod:`tilewave.storage.lease`), built on the conditional
  operations (:meth:`Backend.read_tagged` and the three after it), which they must answer.
"""

from __future__ import annotations

from typing import IO, Any, Protocol


class PreconditionFailed(OSError):
    """A conditional write or removal found the object not as it required: it exists
    already (create-only), or it is not the version named (replace and remove)."""


class Backend(Protocol):
    """Files and folders at one kind of place (a local disk, an object store, memory).

    Paths are the user's spelling (``/data/out.zarr``, ``s3://bucket/out.zarr``); a backend
    never puts credentials into a path, a message or a log line.
    """

    #: Paths are files of this machine (``os``, memory maps and write probes work).
    local: bool
    #: A finished write is durable without ``fsync``.
    durable_writes: bool
    #: :meth:`append_bytes` works (else files are only ever written whole).
    appendable: bool
    #: Jobs lock outputs with ``flock`` (else with a lease on the conditional operations).
    supports_flock: bool

    def exists(self, path: str) -> bool:
        """Whether a file, folder or object is at ``path``."""
        ...

    def isdir(self, path: str) -> bool:
        """A folder, or on object stores a prefix with objects under it (how a Zarr store
        looks there)."""
        ...

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and everything under it, if it is there."""
        ...

    def remove_file(self, path: str) -> None:
        """Remove the file or object ``path``, if it is there."""
        ...

    def read_bytes(self, path: str, length: int | None = None) -> bytes:
        """The content of ``path`` (its first ``length`` bytes, if given); raises
        :class:`FileNotFoundError` when there is none."""
        ...

    def write_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        """Write ``data`` to ``path`` whole: a reader sees the old content or the new, never
        a part. With ``durable``, it is on the storage before this returns."""
        ...

    def append_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        """Add ``data`` at the end of ``path`` (created, with its folder, if absent). Only
        where ``appendable``; a crash may leave a part of ``data`` at the end."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names directly under ``path`` (empty if there is nothing)."""
        ...

    def stat(self, path: str) -> tuple[int | None, int]:
        """``(size in bytes or None for folders, modification time in ns)`` of ``path``."""
        ...

    def open_file(self, path: str, mode: str = "rb") -> IO[Any]:
        """A file object on ``path`` (binary modes)."""
        ...

    def join(self, base: str, *parts: str) -> str:
        """``parts`` under ``base``, with this backend's separator."""
        ...

    def absolute(self, path: str) -> str:
        """``path`` as it reads from anywhere: absolute locally, without a trailing slash."""
        ...

    # conditional operations: the lease of backends without flock -----------------------

    def read_tagged(self, path: str) -> tuple[bytes, str] | None:
        """The content of ``path`` and a tag naming its version, or None if it is absent."""
        ...

    def put_new(self, path: str, data: bytes) -> str:
        """Create ``path`` only if it is absent; returns the new version's tag. Raises
        :class:`PreconditionFailed` if it exists: of two creators at once, one wins."""
        ...

    def put_replacing(self, path: str, data: bytes, tag: str) -> str:
        """Replace ``path`` only if its version is ``tag``; returns the new tag. Raises
        :class:`PreconditionFailed` if another version (or none) is there."""
        ...

    def remove_tagged(self, path: str, tag: str) -> None:
        """Remove ``path`` only if its version is ``tag``; otherwise leave it as it is."""
        ...
