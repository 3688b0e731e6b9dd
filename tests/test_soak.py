"""The chaos soak's short version (``benchmarks/soak.py --quick``): in each mode a job on
a real multi-node Ray cluster loses tile workers, nodes and its driver, is resumed, and
ends with the bytes of a clean run. The long version and its numbers are in the README."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

# The soak is benchmarks/soak.py, run as its own process.
pytestmark = pytest.mark.subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.ray
def test_jobs_under_repeated_faults_end_with_a_clean_runs_bytes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--quick",
                           "--json", "--no-save"], capture_output=True, text=True, timeout=1500,
                          env=env, cwd=tmp_path)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = {o["mode"]: o for o in record["outcomes"]}
    assert set(outcomes) == {"halo", "context", "blend"}, done.stderr[-3000:]
    for mode, o in outcomes.items():
        assert o["equal"], f"{mode}: the output differs from the clean run"
        assert o["driver_kills"] == 1 and o["sessions"] >= 2, o  # killed mid-job, resumed
    # Worker kills and node swaps come on a clock, so a quick job may dodge them; over
    # the three modes they land.
    assert sum(o["worker_kills"] for o in outcomes.values()) >= 2, outcomes
    assert sum(o["node_swaps"] for o in outcomes.values()) >= 1, outcomes
    assert done.returncode == 0
