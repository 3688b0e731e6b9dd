"""tilewave on a real multi-node Ray cluster (several raylets on this machine): actors on
different nodes, a node removed mid-run, two jobs at once, input and output on S3 (moto's
server), and the bytes of a single-node run every time."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import zarr_input

import tilewave

# The scenarios run in a process of their own (cluster_scenarios.py).
pytestmark = pytest.mark.subprocess

HERE = pathlib.Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.ray
def test_multi_node_runs_equal_the_single_node_run(ray_local, s3, tmp_path):
    from skimage import data

    pixels = np.ascontiguousarray(data.chelsea()[40:184, 100:292].transpose(2, 0, 1))
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=24)
    single = tmp_path / "single.zarr"
    tilewave.upscale(src, str(single), model="span-x2", tile=24, workers=2, progress=False)
    expected = zarr.open_array(str(single), path="0")[:]

    remote = "s3://tw-bucket/cluster_in.zarr"
    arr = zarr.create_array(remote, shape=pixels.shape, chunks=(3, 24, 24), dtype=pixels.dtype,
                            dimension_names=("c", "y", "x"))
    arr[:] = pixels

    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "cluster_scenarios.py"), src, str(tmp_path),
                           remote],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    spread = result["spread"]
    assert spread["tiles"] == 6 * 8 and spread["workers"] == 2
    assert len(spread["actor_nodes"]) == 2, "the two actors should run on two nodes"
    assert set(spread["actor_nodes"]) <= set(result["nodes"])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "spread.zarr"), path="0")[:], expected)

    removed = result["remove_node"]["removed"]
    assert len(removed) == 1, "no node was removed: the scenario tested nothing"
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "remove_node.zarr"), path="0")[:],
                                  expected)

    # Two jobs at once on one cluster and one input: each with its own actors, both
    # correct; a third on the first one's output is refused while it runs.
    two = result["two_jobs"]
    assert two["codes"] == [0, 0, 0], two["errors"]
    assert len(two["actor_jobs_while_both_ran"]) == 2, two
    assert "being written by another tilewave job" in two["third"]
    assert two["first_ran_through_the_refusal"]
    assert two["equal_to_alone"] == [True, True]

    # Actors on two nodes reading from and writing to S3.
    assert result["s3"]["tiles"] == 6 * 8
    np.testing.assert_array_equal(zarr.open_array(result["s3"]["output"] + "/0")[:], expected)
