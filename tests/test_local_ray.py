"""The local Ray instance tilewave starts, and the cluster ``RAY_ADDRESS`` names."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import zarr
from helpers import random_image, zarr_input

import tilewave

#: Ray's daemons a local instance of tilewave's has no use for (the autoscaler's monitor,
#: the log monitor, the API server behind the dashboard), by the script each runs.
UNUSED = ("autoscaler/_private/monitor.py", "_private/log_monitor.py", "dashboard/dashboard.py")


def _running(scripts: tuple[str, ...]) -> list[str]:
    """Command lines of this process's live descendants that run one of ``scripts``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            line = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(script in line for script in scripts):
            found.append(line)
    return found


@pytest.mark.ray
def test_a_local_instance_runs_without_the_daemons_it_does_not_use(ray_local, tmp_path):
    pixels = random_image((3, 64, 96), "uint8", seed=5)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    on_ray = tilewave.upscale(src, tmp_path / "ray.zarr", tile=32, model="span-x2",
                              executor="ray", progress=False)
    here = tilewave.upscale(src, tmp_path / "here.zarr", tile=32, model="span-x2",
                            executor="local", workers=2, progress=False)
    assert on_ray.executor == "ray" and on_ray.processes >= 1 and on_ray.tiles == 6
    assert here.executor == "local" and here.processes == 0
    assert _running(UNUSED) == []
    # The daemons that run the workers are up (the raylet among them).
    assert _running(("raylet/raylet",)), "no raylet: this instance is not the one tested"
    outputs = [zarr.open_array(str(tmp_path / n / "0"))[:] for n in ("ray.zarr", "here.zarr")]
    assert np.array_equal(*outputs)


@pytest.mark.subprocess
def test_ray_address_asks_for_that_cluster_and_is_checked_up_front(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}
    run = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", src,
                          str(tmp_path / "o.zarr")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("tilewave: error: cannot reach the Ray cluster at '127.0.0.1:1'")
    assert "RAY_ADDRESS" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.zarr").exists()
    # --local runs in this process whatever RAY_ADDRESS says.
    run = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", src,
                          str(tmp_path / "o.zarr"), "--local", "--quiet"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
