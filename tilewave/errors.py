"""User-facing errors.

Every error a user can cause (or fix) subclasses :class:`TilewaveError` and a matching
built-in, and its message is one line that names the file, tile or setting at fault and
what to do about it. The command line prints that line and exits with code 2 (bad input)
or 1 (a run that failed). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class TilewaveError(Exception):
    """Base of all errors whose message is meant for the user."""

    exit_code = 2


class InputError(TilewaveError, ValueError):
    """The input image is missing, unreadable or of a kind tilewave cannot process."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The input path does not exist."""


class StorageError(TilewaveError):
    """The output's storage refused a write: full, over quota, read-only or forbidden."""


class OutputBusyError(TilewaveError):
    """Another tilewave job is writing the same output right now."""


class OutputExistsError(TilewaveError, FileExistsError):
    """The output exists and neither ``overwrite`` nor ``resume`` was asked for."""


class SettingsError(TilewaveError, ValueError):
    """An option is out of range or inconsistent with the model or the input."""


class ResumeMismatchError(TilewaveError, ValueError):
    """``resume`` was asked for against an output started from other input or settings."""


class UnknownModelError(TilewaveError, KeyError):
    """No model of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TileFailedError(TilewaveError, RuntimeError):
    """A tile raised inside a worker; the run stopped and can be resumed after a fix."""

    exit_code = 1

    def __init__(self, row: int, col: int, window: tuple[int, int, int, int], cause: str):
        self.row, self.col, self.window, self.cause = row, col, window, cause
        y0, y1, x0, x1 = window
        super().__init__(
            f"tile (row {row}, col {col}) covering input y={y0}:{y1}, x={x0}:{x1} failed: "
            f"{cause}; fix the cause and rerun with --resume to keep the finished tiles"
        )


class WorkerLostError(TilewaveError, RuntimeError):
    """A worker process died and could not be restarted."""

    exit_code = 1


#: Storage refusals that are the user's to fix (full, over quota, read-only, forbidden).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
