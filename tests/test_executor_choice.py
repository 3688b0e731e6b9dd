"""Where a job's tiles run by default (``executor="auto"``): in this process on one
machine without a GPU, a tile per CPU at once (or every tile, where there are fewer); on
Ray for a cluster, a GPU or a number of workers, or when asked for."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.options import Options
from tilewave.pipeline.job_plan import resolve_executor, resolve_runner

CPUS = os.cpu_count() or 1


def test_auto_runs_in_this_process_a_tile_per_cpu(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    auto = Options()
    assert auto.executor == "auto"
    assert resolve_runner(auto, 1) == ("local", 1)
    assert resolve_runner(auto, CPUS) == ("local", CPUS)
    assert resolve_runner(auto, 100 * CPUS) == ("local", CPUS)
    # A cluster, or a number of workers, is a request for Ray whatever the job's size.
    assert resolve_executor(Options(address="auto")) == "ray"
    assert resolve_executor(Options(workers=1)) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert resolve_executor(auto) == "ray"
    # An explicit choice stands.
    assert resolve_executor(Options(executor="ray")) == "ray"
    assert resolve_runner(Options(executor="local"), 10_000) == ("local", None)


def test_an_unknown_executor_is_refused_in_one_line(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 32, 32), "uint8"), chunk=32)
    with pytest.raises(SettingsError, match=r"^executor must be one of 'auto', 'ray', 'local', "
                                            r"not 'dask'$"):
        tilewave.upscale(src, tmp_path / "out.zarr", executor="dask", progress=False)


def test_a_small_job_runs_in_this_process_and_says_why(tmp_path, capsys):
    """Not marked ``ray``: the test session refuses to start Ray here, so this job proves
    it ran without it."""
    tiles = min(CPUS, 4)  # a row of tiles of 64, one per CPU
    pixels = random_image((3, 60, 64 * tiles - 10), "uint8", seed=3)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=64)
    report = tilewave.upscale(src, tmp_path / "out.zarr", tile=64, model="span-x2")
    assert report.tiles == tiles
    assert report.executor == "local" and report.processes == 0
    assert report.workers == tiles  # all at once, each on its share of the CPUs
    err = capsys.readouterr().err
    assert f"running the job's {tiles} tile{'s' * (tiles > 1)} in this process, {tiles} at once" in err
    assert "--executor ray" in err


@pytest.mark.ray
def test_auto_gives_the_bytes_ray_gives_on_a_job_of_more_tiles_than_cpus(ray_local, tmp_path):
    pixels = random_image((3, 64, 64 * (CPUS + 1)), "uint8", seed=4)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=64)
    auto = tilewave.upscale(src, tmp_path / "auto.zarr", tile=64, model="span-x2", progress=False)
    on_ray = tilewave.upscale(src, tmp_path / "ray.zarr", tile=64, model="span-x2",
                              executor="ray", progress=False)
    assert auto.tiles == on_ray.tiles == CPUS + 1
    assert (auto.executor, auto.processes, auto.workers) == ("local", 0, CPUS)
    assert on_ray.executor == "ray" and on_ray.processes >= 1
    outputs = [zarr.open_array(str(tmp_path / n / "0"))[:] for n in ("auto.zarr", "ray.zarr")]
    assert np.array_equal(*outputs)


def test_a_cohort_chooses_once_for_all_its_tiles(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    zarr_input(folder / "a.zarr", random_image((3, 40, 40), "uint8", seed=1), chunk=64)
    zarr_input(folder / "b.zarr", random_image((3, 30, 50), "uint8", seed=2), chunk=64)
    report = tilewave.upscale_cohort(folder, tmp_path / "out", tile=64, progress=False)
    assert [o.report.executor for o in report.outcomes] == ["local", "local"]
    assert {o.report.workers for o in report.outcomes} == {min(2, CPUS)}


@pytest.mark.subprocess
def test_the_command_line_runs_a_one_tile_png_without_starting_ray(tmp_path):
    import imagecodecs
    from skimage import data

    png = tmp_path / "p.png"
    png.write_bytes(imagecodecs.png_encode(data.astronaut()[:96, :96]))
    done = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", str(png),
                           str(tmp_path / "o.zarr")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "running the job's 1 tile in this process" in done.stderr
    assert "starting a local Ray instance" not in done.stderr and "worker process" not in done.stderr
    assert "in this process" in done.stdout


@pytest.mark.parametrize("model", ["bicubic", "uniba-x2"])
def test_tiles_side_by_side_in_this_process_write_the_bytes_of_one_at_a_time(tmp_path, model):
    """``--local --workers N``: N tiles at once on threads sharing one model, as a Ray
    worker runs them; halo and context models alike (uniba-x2 waits for its neighbours'
    contexts), the bytes of one tile at a time."""
    if CPUS < 2:
        pytest.skip("one CPU runs one tile at a time")
    pixels = random_image((3, 90, 120), "uint8", seed=7)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    one = tilewave.upscale(src, tmp_path / "one.zarr", model=model, tile=32, executor="local",
                           progress=False)
    two = tilewave.upscale(src, tmp_path / "two.zarr", model=model, tile=32, executor="local",
                           workers=2, progress=False)
    assert (one.workers, two.workers) == (1, 2) and one.tiles == two.tiles == 12
    outputs = [zarr.open_array(str(tmp_path / n / "0"))[:] for n in ("one.zarr", "two.zarr")]
    assert np.array_equal(*outputs)


def test_more_tiles_at_once_than_cpus_in_this_process_is_refused(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 32, 32), "uint8"), chunk=32)
    with pytest.raises(SettingsError, match=rf"^workers={CPUS + 1} asks for more workers than "
                                            rf"this machine's {CPUS} CPUs; lower it$"):
        tilewave.upscale(src, tmp_path / "out.zarr", executor="local", workers=CPUS + 1,
                         progress=False)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.subprocess
def test_the_cpus_counted_are_those_this_process_may_use():
    """Under an affinity of one CPU (as ``taskset`` or a container gives), a job of two
    tiles runs one at a time. And no GPU is visible where CUDA hides them all."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from tilewave.pipeline.host import usable_cpus, has_nvidia_gpu; "
            "from tilewave.pipeline.job_plan import resolve_runner; "
            "from tilewave.options import Options; "
            "print(usable_cpus(), *resolve_runner(Options(), 2), has_nvidia_gpu())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "local", "1", "False"]
