"""Durable state of one upscaling job, kept in ``<output>/.tilewave`` while it runs.

* ``job.json``: the settings and the input's fingerprint; ``--resume`` refuses to go on
  when they differ.
* ``ledger.log``: one line per finished tile, appended by the driver only after the
  worker has written the tile's output chunk and its outgoing contexts. Zarr does not
  store empty chunks by default, so the ledger, not the chunks, says what is done.
* ``contexts/``: outgoing contexts of finished tiles whose consumers have not finished,
  written by the producing worker, removed once their consumer is in the ledger.
* ``work.zarr``: the ingested input.
* ``lock``: held (``flock``) by the driver of the running job, so that a second job
  cannot resume, overwrite or write into an output that one is writing.

When the job completes, its manifest moves into the output group's ``tilewave``
attribute and the folder is removed, so a finished output is a clean OME-Zarr image.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

Index = tuple[int, int]
STATE_DIR = ".tilewave"


def state_dir(output: str) -> str:
    return os.path.join(output, STATE_DIR)


def write_manifest(output: str, manifest: dict[str, Any]) -> None:
    os.makedirs(state_dir(output), exist_ok=True)
    path = os.path.join(state_dir(output), "job.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JobLock:
    """The exclusive advisory lock a running job holds on its output.

    ``flock`` locks vanish with the process that held them, so a crashed job never
    leaves its output locked; they hold across processes of one machine and on shared
    filesystems that support them (NFSv4, Lustre, CephFS).
    """

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(state_dir(output), "lock")
        self._fd: int | None = None

    def acquire(self) -> "JobLock":
        from ..errors import OutputBusyError

        os.makedirs(state_dir(self.output), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise OutputBusyError(
                f"output {self.output!r} is being written by another tilewave job ({holder}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_not_busy(output: str) -> None:
    """Refuse to touch ``output`` while another job holds its lock."""
    if os.path.isdir(state_dir(output)):
        JobLock(output).acquire().release()


def read_manifest(output: str) -> dict[str, Any] | None:
    """The running job's manifest, or a completed job's from the group attributes."""
    path = os.path.join(state_dir(output), "job.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    try:
        with open(os.path.join(output, "zarr.json")) as f:
            attrs = json.load(f).get("attributes", {})
    except (OSError, ValueError):
        return None
    job = attrs.get("tilewave")
    return job if isinstance(job, dict) and job.get("complete") else None


def finish(output: str, manifest: dict[str, Any]) -> None:
    """Record the job as complete in the output group and remove its working state."""
    import zarr

    manifest = {**manifest, "complete": True}
    manifest.pop("created", None)
    manifest.pop("ingested", None)
    manifest.pop("pyramid", None)
    group = zarr.open_group(output, mode="r+")
    # The inherited image metadata lives beside the job record; keep it.
    previous = group.attrs.get("tilewave", {})
    if isinstance(previous, dict) and "metadata" in previous:
        manifest["metadata"] = previous["metadata"]
    group.attrs["tilewave"] = manifest
    shutil.rmtree(state_dir(output), ignore_errors=True)


class Ledger:
    """Append-only record of finished tiles; the driver is its only writer."""

    def __init__(self, output: str):
        self.path = os.path.join(state_dir(output), "ledger.log")
        self._file: Any = None

    def done(self) -> set[Index]:
        """Tiles recorded as finished; a line torn by a crash is ignored."""
        if not os.path.exists(self.path):
            return set()
        out: set[Index] = set()
        with open(self.path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and line.endswith("\n"):
                    out.add((int(parts[0]), int(parts[1])))
        return out

    def record(self, tiles: Iterable[Index]) -> None:
        """Append ``tiles`` and flush them to disk before returning."""
        if self._file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._drop_torn_line()
            self._file = open(self.path, "a")
        self._file.write("".join(f"{r} {c}\n" for r, c in tiles))
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


@dataclass(frozen=True)
class PersistedContext:
    """A context that lives in the job's context store rather than in memory."""

    path: str

    def load(self) -> Any:
        with open(self.path, "rb") as f:
            return pickle.load(f)


class ContextStore:
    """Outgoing contexts of finished tiles, one file each, for ``--resume``."""

    def __init__(self, output: str):
        self.root = os.path.join(state_dir(output), "contexts")

    def path(self, producer: Index, direction: str) -> str:
        return os.path.join(self.root, f"{producer[0]}_{producer[1]}_{direction}.pkl")

    def save(self, producer: Index, direction: str, value: Any) -> PersistedContext:
        os.makedirs(self.root, exist_ok=True)
        path = self.path(producer, direction)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return PersistedContext(path)

    def handle(self, producer: Index, direction: str) -> PersistedContext:
        return PersistedContext(self.path(producer, direction))

    def existing(self, producer: Index, direction: str) -> PersistedContext | None:
        path = self.path(producer, direction)
        return PersistedContext(path) if os.path.exists(path) else None

    def remove(self, producer: Index, direction: str) -> None:
        try:
            os.remove(self.path(producer, direction))
        except FileNotFoundError:
            pass

