"""User-facing errors, and the one place that decides what a failure means.

Every error a user can cause (or fix) subclasses :class:`TilewaveError` and the built-in
it resembles, carries its details as fields, and has a one-line message naming the file,
tile or setting at fault and what to do about it. The command line prints that line and
exits with the error's ``exit_code``: 2 for something the user must fix, 1 for a run that
failed. :func:`user_error` maps any exception onto one of them, or None for a bug, which
keeps its traceback.
"""

from __future__ import annotations

import errno
from typing import Any

#: Storage refusals that are the user's to fix (full, over quota, read-only, forbidden).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _rebuild(cls: type[TilewaveError], args: tuple[Any, ...],
             fields: dict[str, Any]) -> TilewaveError:
    exc = cls.__new__(cls, *args)
    Exception.__init__(exc, *args)
    exc.__dict__.update(fields)
    return exc


class TilewaveError(Exception):
    """Base of all errors whose message is meant for the user."""

    exit_code = 2

    def __reduce__(self) -> Any:
        # Errors cross process boundaries (a tile fails on a Ray worker): keep the fields.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class InputError(TilewaveError, ValueError):
    """The input image is missing, unreadable or of a kind tilewave cannot process."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The input path does not exist."""


class BadPixelsError(InputError):
    """The input holds values tilewave refuses to guess about (NaN, infinities)."""


class UnreadableInputError(InputError):
    """Part of the input does not decode (a damaged chunk or strip), found when a tile
    reads it. The finished tiles stay: once the input is restored, ``--resume`` goes on."""

    def __init__(self, input_name: str, row: int, col: int, window: tuple[int, int, int, int],
                 cause: str, details: str = ""):
        y0, y1, x0, x1 = window
        super().__init__(f"input {input_name!r} cannot be read at y={y0}:{y1}, x={x0}:{x1} "
                         f"(tile row {row}, col {col}: {cause}); it is damaged or truncated: "
                         "restore it from its source, then rerun with --resume to keep the "
                         "finished tiles")
        self.row, self.col, self.window, self.cause = row, col, window, cause
        #: The reader's traceback, written to the job's ``errors.log``.
        self.details = details


class StorageError(TilewaveError, OSError):
    """The output's storage refused: full, over quota, read-only, forbidden or impossible."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class OutputBusyError(TilewaveError, BlockingIOError):
    """Another tilewave job is writing the same output right now."""

    def __init__(self, output: str, holder: str):
        super().__init__(f"output {output!r} is being written by another tilewave job "
                         f"({holder}); wait for it to finish or stop it, then run again")
        self.output, self.holder = output, holder

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LeaseLostError(TilewaveError, RuntimeError):
    """Another job took over the lease of an object-store output this job was writing."""

    def __init__(self, output: str, holder: str):
        super().__init__(f"output {output!r} was taken over by another tilewave job ({holder}) "
                         "after this one failed to renew its lease in time; this job stopped. "
                         "Let that job finish, or stop it and rerun with --resume")
        self.output, self.holder = output, holder

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OutputExistsError(TilewaveError, FileExistsError):
    """The output exists and neither ``overwrite`` nor ``resume`` was asked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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

    def __init__(self, row: int, col: int, window: tuple[int, int, int, int], cause: str,
                 details: str = ""):
        y0, y1, x0, x1 = window
        super().__init__(
            f"tile (row {row}, col {col}) covering input y={y0}:{y1}, x={x0}:{x1} failed: "
            f"{cause}; fix the cause and rerun with --resume to keep the finished tiles"
        )
        self.row, self.col, self.window, self.cause = row, col, window, cause
        #: The worker's traceback, written to the job's ``errors.log``.
        self.details = details


class PyramidChunkFailedError(TilewaveError, RuntimeError):
    """A pyramid chunk raised inside a worker; resumable like a failed tile."""

    exit_code = 1

    def __init__(self, level: int, row: int, col: int, window: tuple[int, int, int, int],
                 cause: str, details: str = ""):
        y0, y1, x0, x1 = window
        super().__init__(
            f"pyramid level {level} chunk (row {row}, col {col}) covering y={y0}:{y1}, "
            f"x={x0}:{x1} of that level failed: {cause}; fix the cause and rerun with "
            "--resume to keep the finished tiles")
        self.details = details


class WorkerLostError(TilewaveError, RuntimeError):
    """A worker process died and could not be restarted."""

    exit_code = 1


def storage_error(exc: OSError, what: str = "writing") -> StorageError:
    """A storage refusal (``exc.errno`` in :data:`STORAGE_ERRNOS`) as the user's error."""
    where = f" {what} {exc.filename!r}" if exc.filename else ""
    return StorageError(f"{exc.strerror or exc}{where}; free space or choose a writable "
                        "location, then rerun with --resume to keep the finished tiles",
                        path=exc.filename)


def user_error(exc: BaseException) -> TilewaveError | None:
    """What ``exc`` means to the user: itself if it is a :class:`TilewaveError`, a
    :class:`StorageError` where the machine's storage refused, else None (a bug)."""
    if isinstance(exc, TilewaveError):
        return exc
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return storage_error(exc)
    return None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, its first line, cut to ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__
