"""The lock of object-store outputs: an expiring lease object, created with a conditional
put, renewed while its job runs, taken over only once its holder stopped renewing. Its
logic on the in-memory backend and against a real S3 API server (moto's, on loopback),
the same tests; and real jobs on S3."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import zarr
from helpers import Clock, memory_root, random_image

import tilewave
from tilewave.errors import LeaseLostError, OutputBusyError, SettingsError
from tilewave.storage import layout, location
from tilewave.storage.lease import ObjectLease
from tilewave.storage.locks import check_not_busy


@pytest.fixture(params=["memory", "s3"])
def where(request) -> str:
    """A folder for an output: in memory (no S3 server needed), or on moto's S3."""
    if request.param == "memory":
        return memory_root()
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    request.getfixturevalue("s3")
    return f"s3://tw-bucket/lease-{uuid.uuid4().hex[:8]}"


def test_one_lease_at_a_time_and_an_expired_one_is_taken_over(where):
    state = layout.state_dir(where + "/out.zarr")
    clock = Clock()
    first = ObjectLease(state, ttl=30, clock=clock).acquire()
    with pytest.raises(OutputBusyError, match=r"pid \d+ on .*its lease runs until"):
        ObjectLease(state, ttl=30, clock=clock).acquire()
    clock.now += 20
    assert first.renew()  # pushed on to now + 30
    clock.now += 20
    with pytest.raises(OutputBusyError):
        ObjectLease(state, ttl=30, clock=clock).acquire()
    # The first holder stops renewing (a crash): after its expiry the lease is free.
    clock.now += 31
    second = ObjectLease(state, ttl=30, clock=clock).acquire()
    assert second.took_over is not None and second.took_over.holder == first.holder
    # The first one wakes up: its renewal fails, and it knows it lost the lease.
    assert not first.renew()
    with pytest.raises(LeaseLostError, match="taken over by another tilewave job"):
        first.check()
    first.release()  # removes nothing: the lease is the second's now
    assert second.read() is not None and second.renew()
    second.release()
    assert second.read() is None


def test_of_two_jobs_taking_over_an_expired_lease_one_wins(where):
    state = layout.state_dir(where)
    clock = Clock()
    ObjectLease(state, ttl=10, clock=clock).acquire()
    clock.now += 11
    a, b = ObjectLease(state, ttl=10, clock=clock), ObjectLease(state, ttl=10, clock=clock)
    expired = a.read()
    assert expired is not None
    # Both read the expired lease; a replaces it first. b's replacement names the version
    # it read, which is gone, so S3 refuses it, and b then finds a's live lease.
    a.acquire()
    with pytest.raises(OSError, match="pre-condition"):
        b._put(IfMatch=expired.etag)  # the replacement b's acquire would make
    with pytest.raises(OutputBusyError):
        b.acquire()
    a.release()


@pytest.mark.subprocess
def test_a_lease_whose_holder_died_on_this_machine_is_free_at_once(where):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    for host, free in ((socket.gethostname(), True), ("another-machine", False)):
        location.write_bytes(layout.lease_path(where), json.dumps(
            {"holder": f"pid {dead} on {host}", "expires": time.time() + 3600, "host": host,
             "pid": dead}).encode())
        if free:
            check_not_busy(where)
            lease = ObjectLease(layout.state_dir(where)).acquire()
            assert lease.took_over is not None and lease.took_over.pid == dead
            lease.release()
        else:
            with pytest.raises(OutputBusyError, match="another-machine"):
                check_not_busy(where)


def test_the_lease_duration_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TILEWAVE_LEASE_SECONDS", "5")
    assert ObjectLease("s3://tw-bucket/x/.tilewave").ttl == 5
    monkeypatch.setenv("TILEWAVE_LEASE_SECONDS", "soon")
    with pytest.raises(SettingsError, match="TILEWAVE_LEASE_SECONDS must be a number"):
        ObjectLease("s3://tw-bucket/x/.tilewave")


def _start(src: str, out: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tilewave.cli", "upscale", src, out,
                             "--model", "span-x2", "--tile", "32", "--local", "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_records(s3, out: str, proc: subprocess.Popen, batches: int = 3) -> None:
    ledger = out.removeprefix("s3://") + "/.tilewave/ledger"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if s3.exists(ledger) and len(s3.ls(ledger, refresh=True)) >= batches:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the job ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("the job made no progress")


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_second_job_on_a_running_s3_output_is_refused_and_a_crashed_ones_is_taken_over(
        s3, tmp_path, monkeypatch):
    pixels = random_image((3, 256, 320), "uint8", seed=4)
    src = "s3://tw-bucket/lease_in.zarr"
    arr = zarr.create_array(src, shape=pixels.shape, chunks=(3, 32, 32), dtype=pixels.dtype,
                            dimension_names=("c", "y", "x"))
    arr[:] = pixels
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, str(clean), model="span-x2", tile=32, executor="local", progress=False)
    expected = zarr.open_array(str(clean), path="0")[:]
    monkeypatch.setenv("TILEWAVE_LEASE_SECONDS", "4")
    env = dict(os.environ)
    s3.invalidate_cache()

    # 1. A running job holds the lease; other jobs are refused, naming it.
    out = "s3://tw-bucket/lease_out.zarr"
    first = _start(src, out, env)
    try:
        _wait_for_records(s3, out, first)
        for flags in ({"resume": True}, {"overwrite": True}, {}):
            with pytest.raises(OutputBusyError, match=rf"pid {first.pid} on .*its lease runs until"):
                tilewave.upscale(src, out, model="span-x2", tile=32, executor="local",
                                 progress=False, **flags)
        assert first.poll() is None, "the refused jobs must not disturb the running one"
    finally:
        err = first.communicate(timeout=300)[1]
    assert first.returncode == 0, err
    np.testing.assert_array_equal(zarr.open_array(out + "/0")[:], expected)
    s3.invalidate_cache()
    assert not s3.find("tw-bucket/lease_out.zarr/.tilewave"), "the job state outlived the job"

    # 2. A crashed job leaves its lease. Its process is gone from this machine, so a
    # resume here takes the lease over at once (another machine waits out its expiry:
    # test_one_lease_at_a_time_and_an_expired_one_is_taken_over), and says so.
    out = "s3://tw-bucket/lease_crash.zarr"
    crashed = _start(src, out, env)
    _wait_for_records(s3, out, crashed)
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait()
    resumed = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", src, out,
                              "--model", "span-x2", "--tile", "32", "--local", "--resume"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"pid {crashed.pid} on" in resumed.stderr and "taking it over" in resumed.stderr
    assert "did not stop cleanly" in resumed.stderr  # and its recorded tiles were checked
    np.testing.assert_array_equal(zarr.open_array(out + "/0")[:], expected)
