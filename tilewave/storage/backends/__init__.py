"""Where files live, one backend per kind of place: local paths (``os``), URLs (fsspec:
``s3://`` and the other object stores) and ``memory://`` (a dictionary of this process).

:func:`backend_for` reads a path once and answers with its backend; callers then ask the
backend's capabilities (:class:`~.base.Backend`) rather than the path's spelling.
"""

from __future__ import annotations

from .base import Backend, PreconditionFailed
from .local import LocalBackend
from .memory import MemoryBackend

__all__ = ["Backend", "LocalBackend", "MemoryBackend", "PreconditionFailed", "backend_for"]

#: One instance each: backends keep no per-path state (memory's files are the one store).
_LOCAL = LocalBackend()
_MEMORY = MemoryBackend()


def backend_for(path: str) -> Backend:
    """The backend of ``path``: local unless it is a URL (``scheme://...``); ``memory://``
    is this process's memory, every other scheme goes through fsspec."""
    scheme, sep, _ = path.partition("://")
    if not sep:
        return _LOCAL
    if scheme == "memory":
        return _MEMORY
    # Imported here: fsspec (and s3fs behind it) only load once a URL is used.
    from .fsspec import URLS

    return URLS
