"""Whether an output can be created where the user asked, found out before any job
starts (before Ray, before a byte is written): a folder that cannot take new entries
(read-only mounts, /proc, /sys, no permission), a file standing where a folder must be.
"""

from __future__ import annotations

import os
import tempfile

from ..errors import SettingsError, StorageError
from . import location
from .layout import PROBE_PREFIX


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_creatable(path: str, what: str = "output") -> None:
    """Refuse ``path`` unless a folder can be created there; leaves nothing behind.

    Only local paths are probed: object stores have no folders, and their permissions
    show on the first write, which removes nothing of the user's.
    """
    if not location.is_local(path):
        return
    path = os.path.abspath(path)
    base = _nearest_existing(path if not os.path.lexists(path) else os.path.dirname(path))
    if not os.path.isdir(base):
        raise SettingsError(f"{base!r} is a file, not a folder, so the {what} {path!r} cannot "
                            "be created inside it; choose another path")
    try:
        # The only honest test: access() says yes to root on read-only and virtual file
        # systems, where creating anything fails.
        os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=base))
    except OSError as exc:
        raise StorageError(f"cannot create the {what} {path!r}: {base!r} takes no new files "
                           f"({exc.strerror}); choose a writable location", path=base) from None


def check_writable(path: str, what: str = "output") -> None:
    """Refuse an existing ``path`` (to resume or replace) that cannot be written into
    (local paths; object stores, as above, answer at the first write)."""
    if not location.is_local(path):
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=path))
    except OSError as exc:
        raise StorageError(f"the {what} {path!r} is not writable ({exc.strerror}); check "
                           "its permissions or choose a writable location", path=path) from None
