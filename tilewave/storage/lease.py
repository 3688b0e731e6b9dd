"""An expiring lease on an object-store output: the lock a job holds on ``s3://`` outputs.

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
from typing import Any

from . import location

#: Seconds a lease lasts without renewal (``TILEWAVE_LEASE_SECONDS`` overrides it: a
#: crashed job's output is free again this long after its last renewal).
LEASE_SECONDS = 60.0
LEASE_NAME = "lease.json"


@dataclass(frozen=True)
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


def _bucket_key(url: str) -> tuple[Any, str, str]:
    fs, path = location.filesystem(url)
    bucket, _, key = path.partition("/")
    return fs, bucket, key


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns S3's 412 into FileExistsError for If-None-Match, OSError for If-Match."""
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc).lower() or (
        "PreconditionFailed" in str(exc))


class ObjectLease:
    """The lease on one object-store output; see the module's docstring."""

    def __init__(self, state_url: str, ttl: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.url = location.join(state_url, LEASE_NAME)
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

    def _put(self, **condition: str) -> str:
        fs, bucket, key = _bucket_key(self.url)
        reply = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self._body(), **condition)
        return str(reply["ETag"])

    def read(self) -> LeaseRecord | None:
        """The lease as it stands, or None if there is none."""
        fs, bucket, key = _bucket_key(self.url)
        try:
            reply = fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        from fsspec.asyn import sync

        # s3fs's client is aiobotocore's: the body streams on s3fs's event loop.
        body = reply["Body"]
        async def whole() -> bytes:
            async with body as stream:
                return bytes(await stream.read())

        data = sync(fs.loop, whole)
        try:
            fields = json.loads(data)
            holder, expires = str(fields["holder"]), float(fields["expires"])
            host = str(fields["host"]) if "host" in fields else None
            pid = int(fields["pid"]) if "pid" in fields else None
        except (ValueError, KeyError, TypeError):
            holder, expires, host, pid = "a job that wrote an unreadable lease", 0.0, None, None
        return LeaseRecord(holder, expires, str(reply["ETag"]), host, pid)

    def live(self, record: LeaseRecord | None) -> bool:
        """Whether ``record`` still keeps other jobs out."""
        return record is not None and record.expires > self.clock() and not record.holder_gone()

    # taking, renewing, giving back ------------------------------------------------

    def acquire(self) -> ObjectLease:
        """Take the lease, or an expired one over; raises :class:`OutputBusyError`."""
        from ..errors import OutputBusyError

        output = self.url.rsplit("/", 2)[0]
        for _ in range(5):  # each round loses only to a job that won a race
            try:
                self._etag = self._put(IfNoneMatch="*")
                return self
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
            current = self.read()
            if current is None:
                continue  # released between the two calls
            if self.live(current):
                raise OutputBusyError(output, current.describe())
            try:
                self._etag = self._put(IfMatch=current.etag)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
                continue  # another job took it over first, or its holder renewed it
            self.took_over = current
            return self
        current = self.read()
        raise OutputBusyError(output, current.describe() if current else "a job racing for it")

    def renew(self) -> bool:
        """Push the expiry on; False (and :meth:`check` raises) if the lease was lost."""
        if self._lost is not None or self._etag is None:
            return False
        try:
            self._etag = self._put(IfMatch=self._etag)
            return True
        except Exception as exc:
            if not _precondition_failed(exc):
                return True  # the store did not answer: try again at the next renewal
            current = self.read()
            self._lost = current.holder if current else "nobody (it was removed)"
            return False

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

            raise LeaseLostError(self.url.rsplit("/", 2)[0], self._lost)

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._etag is None or self._lost is not None:
            return
        fs, bucket, key = _bucket_key(self.url)
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._etag)
        except Exception as exc:
            if not _precondition_failed(exc) and not isinstance(exc, FileNotFoundError):
                raise
        self._etag = None
