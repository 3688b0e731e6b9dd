"""Storage backends: the in-memory one behaves as local files do, and the job state built
on them (ledger, contexts, the flock and the lease) runs on ``memory://`` as it does on
a disk or an object store, without an S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import memory_root

from tilewave.errors import LeaseLostError, OutputBusyError
from tilewave.storage import layout, location
from tilewave.storage.backends import (
    LocalBackend,
    MemoryBackend,
    PreconditionFailed,
    backend_for,
)
from tilewave.storage.contexts import ContextStore
from tilewave.storage.ledger import AppendLog, BatchLog, Ledger, ledger_log
from tilewave.storage.locks import JobLock, check_not_busy


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path) -> str:
    """An empty folder, on a local disk or in memory."""
    return str(tmp_path / "root") if request.param == "local" else memory_root()


# the backends --------------------------------------------------------------------------


def test_each_path_gets_its_backend_and_its_capabilities(tmp_path):
    local, memory, s3 = (backend_for(str(tmp_path)), backend_for("memory://a/b"),
                         backend_for("s3://bucket/key"))
    assert isinstance(local, LocalBackend) and isinstance(memory, MemoryBackend)
    assert (local.local, local.durable_writes, local.appendable, local.supports_flock) == (
        True, False, True, True)
    assert (memory.local, memory.durable_writes, memory.appendable, memory.supports_flock) == (
        False, True, True, False)
    assert (s3.local, s3.durable_writes, s3.appendable, s3.supports_flock) == (
        False, True, False, False)
    assert location.is_local(str(tmp_path)) and not location.is_local("s3://bucket/key")


def test_files_are_written_whole_read_listed_and_removed(root):
    b = backend_for(root)
    path = b.join(root, "sub", "deeper", "f.bin")
    assert not b.exists(path) and not b.isdir(root)
    b.write_bytes(path, b"first version", durable=True)  # its folders appear with it
    assert b.read_bytes(path) == b"first version" and b.read_bytes(path, 5) == b"first"
    b.write_bytes(path, b"second")  # replaced whole, not overwritten in place
    assert b.read_bytes(path) == b"second"
    assert b.exists(path) and not b.isdir(path)
    assert b.isdir(b.join(root, "sub")) and b.exists(b.join(root, "sub"))
    b.write_bytes(b.join(root, "sub", "g.txt"), b"g")
    assert sorted(b.listdir(b.join(root, "sub"))) == ["deeper", "g.txt"]
    assert b.listdir(b.join(root, "nothing here")) == []
    b.remove_file(path)
    b.remove_file(path)  # gone already: nothing to do
    assert not b.exists(path)
    b.remove_tree(b.join(root, "sub"))
    assert not b.exists(b.join(root, "sub")) and not b.exists(b.join(root, "sub", "g.txt"))
    b.remove_tree(b.join(root, "sub"))  # gone already


def test_missing_files_are_not_found(root):
    b = backend_for(root)
    with pytest.raises(FileNotFoundError):
        b.read_bytes(b.join(root, "missing"))
    with pytest.raises(FileNotFoundError):
        b.stat(b.join(root, "missing"))


def test_appends_go_at_the_end(root):
    b = backend_for(root)
    path = b.join(root, "state", "log")
    b.append_bytes(path, b"one\n", durable=True)
    b.append_bytes(path, b"two\n")
    assert b.read_bytes(path) == b"one\ntwo\n"


def test_stat_gives_sizes_of_files_and_none_for_folders(root):
    b = backend_for(root)
    path = b.join(root, "d", "f")
    before = time.time_ns()
    b.write_bytes(path, b"12345")
    size, mtime = b.stat(path)
    assert size == 5 and mtime >= before - 2_000_000_000  # file systems round their times
    folder_size, _ = b.stat(b.join(root, "d"))
    assert folder_size is None


def test_open_file_reads_and_writes(root):
    b = backend_for(root)
    path = b.join(root, "opened.bin")
    b.write_bytes(path, b"")  # local open() wants its folder to exist
    with b.open_file(path, "wb") as f:
        f.write(b"abc")
    with b.open_file(path, "rb") as f:
        f.seek(1)
        assert f.read() == b"bc"


def test_paths_join_and_read_the_same_from_anywhere(root):
    b = backend_for(root)
    assert b.absolute(root + "/") == b.absolute(root) == root
    assert location.join(root, "a", "b") == b.join(root, "a", "b") == root + "/a/b"


def test_conditional_writes_let_one_writer_win():
    path = memory_root() + "/lease"
    b = backend_for(path)
    tag = b.put_new(path, b"first")
    with pytest.raises(PreconditionFailed, match="pre-condition"):
        b.put_new(path, b"second")
    newer = b.put_replacing(path, b"renewed", tag)
    assert newer != tag and b.read_tagged(path) == (b"renewed", newer)
    with pytest.raises(PreconditionFailed):
        b.put_replacing(path, b"stale", tag)  # a version that is gone
    b.remove_tagged(path, tag)  # not the version there: left as it is
    assert b.read_tagged(path) == (b"renewed", newer)
    b.remove_tagged(path, newer)
    assert b.read_tagged(path) is None


@pytest.mark.subprocess
def test_local_paths_never_load_fsspec(tmp_path):
    code = ("import sys\nfrom tilewave.storage import layout, location\n"
            f"location.write_bytes(layout.manifest_path({str(tmp_path)!r}), b'{{}}')\n"
            f"assert location.exists(layout.state_dir({str(tmp_path)!r}))\n"
            "location.exists('memory://x')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 's3fs')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# the layout ----------------------------------------------------------------------------


def test_the_ledger_is_a_file_where_files_append_and_a_folder_elsewhere(tmp_path):
    out = str(tmp_path / "o.zarr")
    assert layout.ledger_path(out) == os.path.join(out, ".tilewave", "ledger.log")
    assert layout.ledger_path("memory://o.zarr") == "memory://o.zarr/.tilewave/ledger.log"
    assert layout.ledger_path("s3://b/o.zarr") == "s3://b/o.zarr/.tilewave/ledger"
    assert layout.lease_path("s3://b/o.zarr/") == "s3://b/o.zarr/.tilewave/lease.json"


# the ledger ----------------------------------------------------------------------------


def test_the_ledger_records_forgets_and_reads_back(root):
    ledger = Ledger(root)
    assert ledger.done() == set()
    ledger.record([(0, 0), (0, 1), (1, 2, 3)], [0xDEADBEEF, None, 7])
    ledger.forget([(0, 1)])
    ledger.close()
    again = Ledger(root)
    assert again.done() == {(0, 0)} and again.done_chunks() == {(1, 2, 3)}
    assert again.checksums() == {(0, 0): 0xDEADBEEF, (1, 2, 3): 7}
    data = location.read_bytes(ledger.path).decode()
    assert data == "0 0 c=deadbeef\n0 1\n1 2 3 c=00000007\nforget 0 1\n"


def test_a_torn_ledger_line_is_dropped_not_merged(root):
    ledger = Ledger(root)
    ledger.record([(0, 0)])
    ledger.close()
    location.append_bytes(ledger.path, b"1 ")  # a crash in the middle of a line
    assert Ledger(root).done() == {(0, 0)}
    again = Ledger(root)
    again.record([(1, 0)])
    assert Ledger(root).done() == {(0, 0), (1, 0)}
    assert location.read_bytes(ledger.path) == b"0 0\n1 0\n"


def test_a_ledger_without_appends_keeps_whole_batches_in_order():
    out = memory_root()
    backend = backend_for(out)
    folder = backend.join(layout.state_dir(out), layout.LEDGER_FOLDER)
    ledger = Ledger(out, BatchLog(backend, folder))
    ledger.record([(0, 0), (0, 1)])
    ledger.record([(1, 1)], [5])
    ledger.forget([(0, 1)])
    # A resumed job numbers its batches on from what is there.
    resumed = Ledger(out, BatchLog(backend, folder))
    assert resumed.done() == {(0, 0), (1, 1)} and resumed.checksums()[(1, 1)] == 5
    resumed.record([(2, 0)])
    assert backend.listdir(folder) == [f"{n:09d}.log" for n in range(4)]
    assert Ledger(out, BatchLog(backend, folder)).done() == {(0, 0), (1, 1), (2, 0)}


def test_each_backend_gets_the_ledger_log_it_can_keep(tmp_path):
    assert isinstance(ledger_log(str(tmp_path)), AppendLog)
    assert isinstance(ledger_log(memory_root()), AppendLog)
    assert isinstance(ledger_log("s3://bucket/o.zarr"), BatchLog)


# contexts ------------------------------------------------------------------------------


def test_contexts_are_saved_found_loaded_and_removed(root):
    store = ContextStore(root)
    assert store.existing((0, 0), "right") is None
    store.save((0, 0), "right", {"pixels": [1, 2, 3]})
    found = store.existing((0, 0), "right")
    assert found is not None and found.load() == {"pixels": [1, 2, 3]}
    assert found.path == layout.context_path(root, (0, 0), "right")
    store.remove((0, 0), "right")
    assert store.existing((0, 0), "right") is None


# locks ---------------------------------------------------------------------------------


def test_a_flock_keeps_a_second_job_out_until_released(tmp_path):
    out = str(tmp_path / "o.zarr")
    check_not_busy(out)  # no job state: nothing to ask
    lock = JobLock(out).acquire()
    assert lock.took_over is None
    with pytest.raises(OutputBusyError, match=rf"pid {os.getpid()} on"):
        JobLock(out).acquire()
    with pytest.raises(OutputBusyError):
        check_not_busy(out)
    lock.check()  # a flock is never lost
    lock.release()
    check_not_busy(out)
    JobLock(out).acquire().release()


def test_a_job_lock_on_memory_is_a_renewed_lease(monkeypatch):
    monkeypatch.setenv("TILEWAVE_LEASE_SECONDS", "1")
    out = memory_root() + "/o.zarr"
    lock = JobLock(out).acquire()
    try:
        # Past one lease length, only the renewals (every quarter of one) keep it live.
        time.sleep(1.2)
        with pytest.raises(OutputBusyError, match="its lease runs until"):
            check_not_busy(out)
        with pytest.raises(OutputBusyError):
            JobLock(out).acquire()
        lock.check()
    finally:
        lock.release()
    assert not location.exists(layout.lease_path(out))
    check_not_busy(out)


def test_a_job_lock_whose_lease_expired_is_taken_over_and_the_loser_stops(monkeypatch):
    monkeypatch.setenv("TILEWAVE_LEASE_SECONDS", "1")
    out = memory_root() + "/o.zarr"
    # A lease some other machine's job wrote and stopped renewing an hour ago.
    location.write_bytes(layout.lease_path(out), json.dumps(
        {"holder": "pid 1 on elsewhere", "expires": time.time() - 3600, "host": "elsewhere",
         "pid": 1}).encode())
    lock = JobLock(out).acquire()
    try:
        assert lock.took_over is not None and lock.took_over.startswith("pid 1 on elsewhere")
        # Now a third job takes it from this one (as if this one had been paused too long).
        location.write_bytes(layout.lease_path(out), json.dumps(
            {"holder": "pid 2 on thief", "expires": time.time() + 3600}).encode())
        # Its next renewal (a quarter of a second on) finds out, and the job stops.
        deadline = time.monotonic() + 5
        with pytest.raises(LeaseLostError, match="pid 2 on thief"):
            while time.monotonic() < deadline:
                lock.check()
                time.sleep(0.05)
    finally:
        lock.release()
    assert location.exists(layout.lease_path(out)), "the lease is the other job's: kept"
