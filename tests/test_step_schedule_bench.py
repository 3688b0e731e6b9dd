"""``benchmarks/step_schedule.py --quick``: both schedules measured, the step schedule
holding fewer context bytes than the tile schedule at K = 4, and the same output bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.subprocess
def test_quick_sweep_measures_both_schedules(tmp_path: Path) -> None:
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_schedule.py"), "--quick",
                    "--workdir", str(tmp_path / "work"), "--out", str(out)],
                   check=True, cwd=REPO, timeout=240)
    result = json.loads((out / "step_schedule.json").read_text())
    runs = {(r["schedule"], r["steps"]): r for r in result["runs"]}
    assert set(runs) == {(s, k) for s in ("tile", "step") for k in (1, 4)}
    assert all(r["status"] == "ok" and r["report"]["schedule"] == r["schedule"]
               for r in runs.values())
    # The tile schedule hands on every step's contexts at once; the step schedule one step's.
    assert runs["tile", 4]["peak_context_bytes"] > runs["step", 4]["peak_context_bytes"] > 0
    # The step schedule keeps states between steps on disk, and only when there are steps.
    assert runs["step", 4]["peak_states_disk_bytes"] > 0
    assert runs["tile", 4]["peak_states_disk_bytes"] == 0
    for k in (1, 4):
        assert runs["tile", k]["output_sha256"] == runs["step", k]["output_sha256"]
        assert runs["step", k]["same_bytes_as_tile"] is True
    assert "| 4 |" in (out / "step_schedule.md").read_text()
