"""Durable state of one upscaling job, kept in ``<output>/.tilewave`` while it runs.

* ``job.json``: the settings and the input's fingerprint; ``--resume`` refuses to go on
  when they differ.
* ``ledger.log``: one line per finished tile (``row col``) or pyramid chunk (``level row
  col``), appended by the driver only after the worker has written the tile's output
  chunk and its outgoing contexts. Zarr does not
  store empty chunks by default, so the ledger, not the chunks, says what is done.
* ``contexts/``: outgoing contexts of finished tiles whose consumers have not finished,
  written by the producing worker, removed once their consumer is in the ledger.
* ``work.zarr``: the ingested input.
* ``lock``: held (``flock``) by the driver of the running job, so that a second job
  cannot resume, overwrite or write into an output that one is writing; on an object
  store, ``lease.json``, an expiring lease the driver renews (:mod:`.lease`).

When the job completes, its manifest moves into the output group's ``tilewave``
attribute and the folder is removed, so a finished output is a clean OME-Zarr image.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import location
from .manifest import STATE_DIR, Manifest

Index = tuple[int, int]


def state_dir(output: str) -> str:
    return location.join(output, STATE_DIR)


def read_manifest(output: str) -> dict[str, Any] | None:
    """The job record of ``output`` as JSON fields, or None (see :class:`Manifest`)."""
    manifest = Manifest.read(output)
    return manifest.as_dict() if manifest is not None else None


class JobLock:
    """The exclusive lock a running job holds on its output.

    On a filesystem, an advisory ``flock``: it vanishes with the process that held it, so
    a crashed job never leaves its output locked, and it holds across processes of one
    machine and on shared filesystems that support it (NFSv4, Lustre, CephFS). On an
    object store, an expiring lease (:class:`~tilewave.storage.lease.ObjectLease`) that
    the job renews while it runs; a crashed job's lease can be taken over once it expires.
    """

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(state_dir(output), "lock")
        self._fd: int | None = None
        self.lease: Any = None

    def acquire(self) -> JobLock:
        from ..errors import OutputBusyError

        if location.is_url(self.output):
            from .lease import ObjectLease

            self.lease = ObjectLease(state_dir(self.output)).acquire().start_renewing()
            return self
        os.makedirs(state_dir(self.output), exist_ok=True)
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

    @property
    def took_over(self) -> str | None:
        """Who held the expired lease this job took over, if it did."""
        record = self.lease.took_over if self.lease is not None else None
        return record.describe(self.lease.clock()) if record is not None else None

    def check(self) -> None:
        """Raise if the job lost its lock (an object-store lease taken over)."""
        if self.lease is not None:
            self.lease.check()

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_not_busy(output: str) -> None:
    """Refuse to touch ``output`` while another job holds its lock or live lease."""
    from ..errors import OutputBusyError

    if location.is_url(output):
        from .lease import ObjectLease

        lease = ObjectLease(state_dir(output))
        current = lease.read()
        if current is not None and lease.live(current):
            raise OutputBusyError(output, current.describe())
    elif os.path.isdir(state_dir(output)):
        JobLock(output).acquire().release()


class Ledger:
    """Append-only record of finished tiles; the driver is its only writer.

    On a local (or mounted) filesystem it is one file, appended and fsynced. Objects
    cannot be appended to, so on an object store every :meth:`record` writes one new
    object under ``ledger/``, whole or not at all, and :meth:`done` reads them all.

    A line is ``row col`` (a tile) or ``level row col`` (a pyramid chunk), followed by
    ``c=XXXXXXXX``, the CRC-32 of the pixels written, where the worker reported one. A
    line ``forget row col`` (or ``forget level row col``) takes an entry back: what
    ``--verify`` found damaged, to be run again.
    """

    def __init__(self, output: str):
        self.remote = location.is_url(output)
        self.path = location.join(state_dir(output), "ledger" if self.remote else "ledger.log")
        self._file: Any = None
        self._batches = 0
        #: What the ledger holds, read once: this object is the ledger's only writer.
        self._known: dict[tuple[int, ...], int | None] | None = None

    def _entries(self) -> dict[tuple[int, ...], int | None]:
        """Every recorded entry and its checksum; a line torn by a crash is ignored."""
        if self._known is None:
            self._known = self._read()
        return self._known

    def _read(self) -> dict[tuple[int, ...], int | None]:
        if self.remote:
            names = sorted(location.listdir(self.path))
            self._batches = max(self._batches, len(names))
            text = "".join(location.read_bytes(location.join(self.path, n)).decode() for n in names)
            lines = [line + "\n" for line in text.splitlines()]  # objects are whole or absent
        elif os.path.exists(self.path):
            with open(self.path) as f:
                lines = f.readlines()
        else:
            lines = []
        entries: dict[tuple[int, ...], int | None] = {}
        for line in lines:
            parsed = _parse(line) if line.endswith("\n") else None
            if parsed is None:
                continue
            entry, crc, forget = parsed
            if forget:
                entries.pop(entry, None)
            else:
                entries[entry] = crc
        return entries

    def done(self) -> set[Index]:
        """Tiles recorded as finished: ``(row, col)``."""
        return {(e[0], e[1]) for e in self._entries() if len(e) == 2}

    def done_chunks(self) -> set[tuple[int, int, int]]:
        """Pyramid chunks recorded as finished: ``(level, row, col)``."""
        return {(e[0], e[1], e[2]) for e in self._entries() if len(e) == 3}

    def checksums(self) -> dict[tuple[int, ...], int | None]:
        """The checksum recorded with each finished tile and chunk (None: none recorded)."""
        return dict(self._entries())

    def record(self, entries: Iterable[tuple[int, ...]],
               checksums: Iterable[int | None] | None = None) -> None:
        """Append finished tiles ``(row, col)`` and pyramid chunks ``(level, row, col)``
        with the checksums of what was written, flushed to disk before returning."""
        entries = list(entries)
        crcs = list(checksums) if checksums is not None else [None] * len(entries)
        lines = "".join(" ".join(map(str, e)) + (f" c={c:08x}" if c is not None else "") + "\n"
                        for e, c in zip(entries, crcs))
        if self._known is not None:
            self._known.update(zip(entries, crcs))
        self._append(lines)

    def forget(self, entries: Iterable[tuple[int, ...]]) -> None:
        """Take entries back, so that a resumed run does them again."""
        entries = list(entries)
        if self._known is not None:
            for e in entries:
                self._known.pop(e, None)
        self._append("".join("forget " + " ".join(map(str, e)) + "\n" for e in entries))

    def _append(self, lines: str) -> None:
        if self.remote:
            if lines:
                if self._batches == 0:
                    self._batches = len(location.listdir(self.path))
                # Zero-padded and never reused, so batches of a resumed job come after.
                name = f"{self._batches:09d}.log"
                location.write_bytes(location.join(self.path, name), lines.encode())
                self._batches += 1
            return
        if self._file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._drop_torn_line()
            self._file = open(self.path, "a")
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _drop_torn_line(self) -> None:
        """Cut a last line a crash left unfinished, so the next append starts clean."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _parse(line: str) -> tuple[tuple[int, ...], int | None, bool] | None:
    """``(entry, checksum, forget)`` of a ledger line, or None if it is not one."""
    words = line.split()
    forget = bool(words) and words[0] == "forget"
    if forget:
        words = words[1:]
    crc = None
    if words and words[-1].startswith("c="):
        try:
            crc = int(words.pop()[2:], 16)
        except ValueError:
            return None
    if len(words) not in (2, 3) or not all(w.isdigit() for w in words):
        return None
    return tuple(int(w) for w in words), crc, forget


@dataclass(frozen=True)
class PersistedContext:
    """A context that lives in the job's context store rather than in memory."""

    path: str

    def load(self) -> Any:
        return pickle.loads(location.read_bytes(self.path))


class ContextStore:
    """Outgoing contexts of finished tiles, one file each, for ``--resume``."""

    def __init__(self, output: str):
        self.root = location.join(state_dir(output), "contexts")

    def path(self, producer: Index, direction: str) -> str:
        return location.join(self.root, f"{producer[0]}_{producer[1]}_{direction}.pkl")

    def save(self, producer: Index, direction: str, value: Any) -> PersistedContext:
        path = self.path(producer, direction)
        location.write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
                             durable=True)
        return PersistedContext(path)

    def handle(self, producer: Index, direction: str) -> PersistedContext:
        return PersistedContext(self.path(producer, direction))

    def existing(self, producer: Index, direction: str) -> PersistedContext | None:
        path = self.path(producer, direction)
        return PersistedContext(path) if location.exists(path) else None

    def remove(self, producer: Index, direction: str) -> None:
        location.remove_file(self.path(producer, direction))

