"""An expiring lease on an output: the lock a job holds where there is no ``flock``
(object stores such as ``s3://``, and ``memory://``).

Object stores have no ``flock``. The lease is one object, ``.tilewave/lease.json``,
created with a conditional put (``If-None-Match: *``): of two jobs creating it at once,
exactly one succeeds. Its holder rewrites it every ``ttl / 4`` seconds with ``If-Match``
on the version it wrote last, pushing its expiry on; a job whose holder stopped renewing
(a crash, a lost machine) can take it over once it has expired, or at once when the
holder ran on the same machine and its process is gone, again with ``If-Match`` on the
version it read, so of two jobs taking over at once one wins. A holder that finds
its lease taken (it was paused past the expiry) stops.

Expiry is judged on the clock of the machine that reads the lease against the time its
holder wrote in it: clocks must agree to well within ``ttl`` (NTP does).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backends import PreconditionFailed, backend_for
from .layout import LEASE, state_dir

#: Seconds a lease lasts without renewal (``TILEWAVE_LEASE_SECONDS`` overrides it: a
#: crashed job's output is free again this long after its last renewal).
LEASE_SECONDS = 60.0


@dataclass(kw_only=True, frozen=True)
class LeaseRecord:
    """What a lease object says: who holds it and until when."""

    holder: str
    expires: float
    etag: str
    host: str | None = None
    pid: int | None = None

    def holder_gone(self) -> bool:
        """The holder ran on this machine and its process no longer exists: it crashed,
        and its lease need not be waited out."""
        import psutil

        return (self.host == socket.gethostname() and self.pid is not None
                and not psutil.pid_exists(self.pid))

    def describe(self, now: float | None = None) -> str:
        ended = now is not None and self.expires <= now
        return f"{self.holder}; its lease {'ran' if ended else 'runs'} until {_clock(self.expires)}"


def _default_ttl() -> float:
    from ..errors import SettingsError

    text = os.environ.get("TILEWAVE_LEASE_SECONDS")
    if text is None:
        return LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 86400:
        raise SettingsError(f"TILEWAVE_LEASE_SECONDS must be a number of seconds from 1 to 86400, "
                            f"not {text!r}")
    return value


def _clock(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


class ObjectLease:
    """The lease on one output without ``flock``; see the module's docstring. Its backend
    answers the conditional writes (S3's through fsspec, or ``memory://``)."""

    def __init__(self, state_url: str, ttl: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.backend = backend_for(state_url)
        self.url = self.backend.join(state_url, LEASE)
        #: The output the lease locks, for messages: the parent of its state folder.
        self.output = state_url.rstrip("/").rsplit("/", 1)[0]
        self.ttl = ttl if ttl is not None else _default_ttl()
        self.clock = clock
        self.holder = f"pid {os.getpid()} on {socket.gethostname()}, since {_clock(clock())}"
        #: The expired lease this one replaced, if it took one over.
        self.took_over: LeaseRecord | None = None
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the object ------------------------------------------------------------------

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "expires": self.clock() + self.ttl,
                           "ttl": self.ttl, "host": socket.gethostname(),
                           "pid": os.getpid()}).encode()

    def _put(self, IfMatch: str | None = None) -> str:
        """Write this job's lease: created only if there is none, or (named as S3's
        header) replacing only the version ``IfMatch``; raises
        :class:`~tilewave.storage.backends.PreconditionFailed` otherwise."""
        if IfMatch is None:
            return self.backend.put_new(self.url, self._body())
        return self.backend.put_replacing(self.url, self._body(), IfMatch)

    def read(self) -> LeaseRecord | None:
        """The lease as it stands, or None if there is none."""
        tagged = self.backend.read_tagged(self.url)
        if tagged is None:
            return None
        data, etag = tagged
        try:
            fields = json.loads(data)
            holder, expires = str(fields["holder"]), float(fields["expires"])
            host = str(fields["host"]) if "host" in fields else None
            pid = int(fields["pid"]) if "pid" in fields else None
        except (ValueError, KeyError, TypeError):
            holder, expires, host, pid = "a job that wrote an unreadable lease", 0.0, None, None
        return LeaseRecord(holder=holder, expires=expires, etag=etag, host=host, pid=pid)

    def live(self, record: LeaseRecord | None) -> bool:
        """Whether ``record`` still keeps other jobs out."""
        return record is not None and record.expires > self.clock() and not record.holder_gone()

    # taking, renewing, giving back ------------------------------------------------

    def acquire(self) -> ObjectLease:
        """Take the lease, or an expired one over; raises :class:`OutputBusyError`."""
        from ..errors import OutputBusyError

        for _ in range(5):  # each round loses only to a job that won a race
            try:
                self._etag = self._put()
                return self
            except PreconditionFailed:
                pass
            current = self.read()
            if current is None:
                continue  # released between the two calls
            if self.live(current):
                raise OutputBusyError(self.output, current.describe())
            try:
                self._etag = self._put(IfMatch=current.etag)
            except PreconditionFailed:
                continue  # another job took it over first, or its holder renewed it
            self.took_over = current
            return self
        current = self.read()
        raise OutputBusyError(self.output, current.describe() if current else "a job racing for it")

    def renew(self) -> bool:
        """Push the expiry on; False (and :meth:`check` raises) if the lease was lost."""
        if self._lost is not None or self._etag is None:
            return False
        try:
            self._etag = self._put(IfMatch=self._etag)
            return True
        except PreconditionFailed:
            current = self.read()
            self._lost = current.holder if current else "nobody (it was removed)"
            return False
        except Exception:
            return True  # the store did not answer: try again at the next renewal

    def start_renewing(self) -> ObjectLease:
        """Renew every ``ttl / 4`` seconds on a daemon thread until :meth:`release`."""
        def loop() -> None:
            while not self._stop.wait(self.ttl / 4):
                if not self.renew():
                    return

        self._thread = threading.Thread(target=loop, daemon=True, name="tilewave-lease")
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise :class:`~tilewave.errors.LeaseLostError` if another job holds the lease now."""
        if self._lost is not None:
            from ..errors import LeaseLostError

            raise LeaseLostError(self.output, self._lost)

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._etag is None or self._lost is not None:
            return
        self.backend.remove_tagged(self.url, self._etag)
        self._etag = None


class LeaseLock:
    """The job lock where there is no ``flock``: an :class:`ObjectLease` on the output,
    renewed on a thread while the job runs (:class:`~.locks.OutputLock`)."""

    def __init__(self, output: str):
        self.output = output
        self.lease = ObjectLease(state_dir(output))
        self._held = False

    def acquire(self) -> LeaseLock:
        self.lease.acquire().start_renewing()
        self._held = True
        return self

    @property
    def took_over(self) -> str | None:
        """Who held the expired lease this job took over, if it did."""
        record = self.lease.took_over
        return record.describe(self.lease.clock()) if record is not None else None

    def check(self) -> None:
        self.lease.check()

    def release(self) -> None:
        if self._held:
            self.lease.release()
            self._held = False

    def check_free(self) -> None:
        """Refuse the output while another job holds a live lease on it."""
        from ..errors import OutputBusyError

        current = self.lease.read()
        if current is not None and self.lease.live(current):
            raise OutputBusyError(self.output, current.describe())
