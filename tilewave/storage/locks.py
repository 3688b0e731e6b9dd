"""The lock that keeps a second job out of an output while one writes it: a ``flock``
where the output's backend supports one (released by the operating system when its
holder dies, even by a crash), an expiring lease elsewhere (:mod:`.lease`, on object
stores). :func:`lock_for` chooses once, from the backend."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from typing import Protocol, Self

from . import layout
from .backends import backend_for
from .lease import LeaseLock


class OutputLock(Protocol):
    """An exclusive lock on one output, of the kind its backend supports."""

    @property
    def took_over(self) -> str | None:
        """Who held the expired lock this one took over, if it did."""
        ...

    def acquire(self) -> Self:
        """Take the lock; raises :class:`~tilewave.errors.OutputBusyError` if it is held."""
        ...

    def check(self) -> None:
        """Raise :class:`~tilewave.errors.LeaseLostError` if the lock was taken away."""
        ...

    def release(self) -> None:
        """Give the lock back (nothing, if it was not taken)."""
        ...

    def check_free(self) -> None:
        """Raise :class:`~tilewave.errors.OutputBusyError` if another job holds the lock."""
        ...


class FlockLock:
    """An advisory ``flock`` on ``.tilewave/lock``: it vanishes with the process that held
    it, so a crashed job never leaves its output locked, and it holds across processes of
    one machine and on shared filesystems that support it (NFSv4, Lustre, CephFS)."""

    #: A flock is never taken over: it is free only once its holder is gone.
    took_over: str | None = None

    def __init__(self, output: str):
        self.output = output
        self.path = layout.lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> Self:
        from ..errors import OutputBusyError

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise OutputBusyError(self.output, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def check(self) -> None:
        """Nothing to check: a flock cannot be taken from its holder."""

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def check_free(self) -> None:
        """Refuse the output while another process holds its lock (taking it for a moment
        is the only way to ask)."""
        if os.path.isdir(layout.state_dir(self.output)):
            self.acquire().release()


def lock_for(output: str) -> OutputLock:
    """The lock of ``output``: a flock where its backend supports one, else a lease."""
    return FlockLock(output) if backend_for(output).supports_flock else LeaseLock(output)


class JobLock:
    """The exclusive lock a running job holds on its output (:func:`lock_for` chooses
    which), so that a second job cannot resume, overwrite or write into an output that
    one is writing. A crashed job's lock frees itself: a flock with its process, a lease
    once it expires (or at once when its holder ran on this machine)."""

    def __init__(self, output: str):
        self.output = output
        self._lock = lock_for(output)

    def acquire(self) -> JobLock:
        self._lock.acquire()
        return self

    @property
    def took_over(self) -> str | None:
        """Who held the expired lease this job took over, if it did."""
        return self._lock.took_over

    def check(self) -> None:
        """Raise if the job lost its lock (an object-store lease taken over)."""
        self._lock.check()

    def release(self) -> None:
        self._lock.release()


def check_not_busy(output: str) -> None:
    """Refuse to touch ``output`` while another job holds its lock or live lease."""
    lock_for(output).check_free()
