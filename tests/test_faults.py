"""Faults a long run meets: full or read-only storage, bad pixels, a second job on the
same output, a worker process killed mid-run. Each must end in a clear outcome: one
line and exit code 2 for what the user can fix, the same bytes as a clean run for what
tilewave survives, and never an output that looks complete when it is not."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.cli import main
from tilewave.errors import InputError, OutputBusyError

REPO = pathlib.Path(__file__).resolve().parents[1]


def looks_complete(output: pathlib.Path) -> bool:
    try:
        attrs = json.loads((output / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return bool((attrs.get("tilewave") or {}).get("complete"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 512 KiB tmpfs: a disk that fills up. Skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.subprocess
def test_disk_full_during_the_run_is_one_line_and_resumable(tmp_path, small_tmpfs, capsys):
    pixels = random_image((3, 300, 300), "uint8", seed=4)  # noise: incompressible chunks
    src = zarr_input(tmp_path / "in.zarr", pixels)
    before = sorted((p.name, p.stat().st_size) for p in pathlib.Path(src).rglob("*"))
    out = small_tmpfs / "out.zarr"
    code = main(["upscale", src, str(out), "--scale", "2", "--tile", "64", "--local", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "No space left on device" in err[0] and "--resume" in err[0]
    assert not looks_complete(out)
    assert sorted((p.name, p.stat().st_size) for p in pathlib.Path(src).rglob("*")) == before
    # Room made (the output moved to a bigger disk), the run continues where it stopped.
    moved = tmp_path / "out.zarr"
    shutil.copytree(out, moved)
    assert main(["upscale", src, str(moved), "--scale", "2", "--tile", "64", "--local",
                 "--quiet", "--resume"]) == 0
    assert looks_complete(moved)


@pytest.mark.subprocess
def test_read_only_output_location_is_one_line(tmp_path, small_tmpfs, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 40, 40), "uint8"))
    # The output itself, and one whose missing parents would have to be made there.
    for out in (small_tmpfs / "out.zarr", small_tmpfs / "not" / "yet" / "out.zarr"):
        code = main(["upscale", src, str(out), "--local", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "tilewave: error:" in err[0], err
        assert "writable" in err[0] and "Read-only file system" in err[0], err
    assert list(small_tmpfs.iterdir()) == []


def test_nan_in_float_input_is_refused_with_its_position(tmp_path):
    pixels = np.random.default_rng(0).random((1, 70, 90), dtype=np.float32)
    pixels[0, 50, 61] = np.nan
    src = zarr_input(tmp_path / "in.zarr", pixels)
    with pytest.raises(InputError, match=r"NaN or infinite values \(first at x=61, y=50, channel 0\)"):
        tilewave.upscale(src, str(tmp_path / "out.zarr"), tile=32, executor="local", progress=False)
    assert not looks_complete(tmp_path / "out.zarr")
    pixels[0, 50, 61] = 0.5
    pixels[0, 3, 4] = np.inf
    src2 = zarr_input(tmp_path / "in2.zarr", pixels)
    with pytest.raises(InputError, match="x=4, y=3"):
        tilewave.upscale(src2, str(tmp_path / "out2.zarr"), tile=32, executor="local", progress=False)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tilewave.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_ledger(output: pathlib.Path, lines: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    ledger = output / ".tilewave" / "ledger.log"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ledger.exists() and len(ledger.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the job ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the job made no progress")


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_second_job_on_a_running_output_is_refused(tmp_path):
    pixels = (random_image((3, 320, 320), "uint8", seed=1) // 4 + 60).astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    out = tmp_path / "out.zarr"
    first = _cli("upscale", src, str(out), "--model", "span-x2", "--tile", "32", "--local", "--quiet")
    try:
        _wait_for_ledger(out, 3, first)
        for extra in (["--resume"], ["--overwrite"]):
            with pytest.raises(OutputBusyError, match=r"being written by another tilewave job \(pid \d+"):
                tilewave.upscale(src, str(out), model="span-x2", tile=32, executor="local",
                                 progress=False, **{extra[0][2:]: True})
        assert first.poll() is None, "the refused jobs must not disturb the running one"
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert looks_complete(out)
    # Once it is done, the same resume just reports the finished job.
    report = tilewave.upscale(src, str(out), model="span-x2", tile=32, executor="local",
                              progress=False, resume=True)
    assert report.tiles_run == 0


def _tile_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        except psutil.Error:
            continue
        if "TileWorker" in text:
            found.append(proc)
    return found


def _kill_a_worker_after(output: pathlib.Path, entries: int, killed: list[int]) -> None:
    """SIGKILL one tile worker process once ``output``'s ledger lists ``entries`` entries
    (within two minutes), and note its pid in ``killed``."""
    ledger = output / ".tilewave" / "ledger.log"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ledger.exists() and len(ledger.read_text().splitlines()) >= entries:
            workers = _tile_workers()
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed.append(workers[0].pid)
                return
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("model", ["span-x2", "prefix-sum"])
def test_killed_worker_process_is_restarted_and_its_tiles_retried(ray_local, tmp_path, model):
    """SIGKILL one actor's process mid-run: the actor restarts, its tiles run again (in
    context mode, from the contexts its neighbours left on disk), and the output has the
    bytes of a clean run."""
    from skimage import data

    from tilewave.models import load_model
    from tilewave.pipeline.upscale_window import reference_upscale

    if model == "span-x2":
        pixels = np.ascontiguousarray(data.coffee()[100:300, 150:410].transpose(2, 0, 1))
    else:  # integers as floats: prefix sums are exact, so any lost context shows
        pixels = np.random.default_rng(2).integers(0, 4, (1, 200, 260)).astype(np.float32)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    out = tmp_path / "out.zarr"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after, args=(out, 5, killed))
    killer.start()
    report = tilewave.upscale(src, str(out), model=model, scale=2, tile=16, workers=2,
                              progress=False)
    killer.join()
    assert killed, "no worker was killed: the test did not test anything"
    assert report.tiles == 13 * 17
    got = zarr.open_array(str(out), path="0")[:]
    expected = reference_upscale(load_model(model, 2), pixels)
    if model == "prefix-sum":
        np.testing.assert_array_equal(got, expected)
        return
    # Actors run torch on one thread, the reference on several: a float's last bit may
    # differ, so a pixel by one step; a clean run of the same job must match exactly.
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, str(clean), model=model, tile=16, workers=2, progress=False)
    np.testing.assert_array_equal(got, zarr.open_array(str(clean), path="0")[:])


@pytest.mark.slow
@pytest.mark.ray
def test_a_worker_killed_in_a_cohort_restarts_for_the_inputs_still_running(ray_local, tmp_path):
    """A cohort whose first input failed on its pixels (its output removed) and whose
    second runs on the same workers: SIGKILL one mid-run. The restarted worker sets up
    the job its next call names (not the first input's, whose output is gone), the tiles
    run again, and the second output has the bytes of that input upscaled alone."""
    from skimage import data

    folder = tmp_path / "in"
    folder.mkdir()
    bad = np.ones((1, 32, 32), np.float32)
    bad[0, 5, 5] = np.nan
    zarr_input(folder / "a.zarr", bad, chunk=32)
    pixels = np.ascontiguousarray(data.coffee()[100:300, 150:410].transpose(2, 0, 1))
    zarr_input(folder / "b.zarr", pixels, chunk=32)
    out = tmp_path / "out"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after, args=(out / "b.zarr", 5, killed))
    killer.start()
    report = tilewave.upscale_cohort(folder, out, model="span-x2", tile=16, workers=2,
                                     executor="ray", progress=False)
    killer.join()
    assert killed, "no worker was killed: the test did not test anything"
    a, b = report.outcomes
    assert "NaN" in (a.error or "") and not (out / "a.zarr").exists()
    assert b.error is None and b.report.retried >= 1, b.error
    alone = tilewave.upscale(folder / "b.zarr", tmp_path / "alone.zarr", model="span-x2",
                             tile=16, workers=2, executor="ray", progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(out / "b.zarr"), path="0")[:],
                                  zarr.open_array(alone.array)[:])
