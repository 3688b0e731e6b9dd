"""``benchmarks/gpu.py``: its dry run on the CPU covers every model and configuration,
checks the output against the CPU reference, and claims no GPU measurement; the parts
that only a GPU reaches (the ``nvidia-smi`` sampler, which configurations run where)
are checked here without one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402

ROW_FIELDS = {"model", "input", "tile", "steps", "batch", "dtype", "device", "status", "note", "tiles",
              "wall_s", "job_s", "tiles_per_s", "output_megapixels_per_s", "equality", *gpu.GPU_FIELDS}
EQUALITY_FIELDS = {"region", "reference", "max_abs_diff_levels", "mean_abs_diff_levels",
                   "share_over_1_level", "tolerance_levels", "passed"}


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ray
def test_the_dry_run_covers_every_model_and_configuration_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.setdefault("RAY_TMPDIR", str(REPO / ".ray-tmp"))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["device"] == "cpu" and result["gpu"] is None
    assert result["ray_gpus"] == 0
    runs = {(r["model"], r["batch"], r["dtype"]): r for r in result["runs"]}
    assert set(runs) == {(m, b, d) for m in gpu.MODELS for b in gpu.DRY_BATCHES for d in gpu.DRY_DTYPES}
    assert len(result["runs"]) == len(runs)
    for key, row in runs.items():
        assert set(row) == ROW_FIELDS, key
        assert row["status"] == "ok" and row["device"] == "cpu", (key, row["note"])
        assert row["tiles"] >= 1 and row["wall_s"] > 0 and row["job_s"] > 0 and row["tiles_per_s"] > 0
        size = gpu.DRY_SIZES[row["model"]]
        assert row["input"] == f"{size.side}x{size.side}" and row["steps"] == size.steps
        # The equality check ran, against the CPU reference, and passed.
        eq = row["equality"]
        assert set(eq) == EQUALITY_FIELDS and eq["reference"] == "cpu"
        assert eq["tolerance_levels"] == gpu.CPU_TOLERANCE
        assert eq["passed"] is True and 0 <= eq["max_abs_diff_levels"] <= gpu.CPU_TOLERANCE
        # No GPU field claims a value.
        assert all(row[f] is None for f in gpu.GPU_FIELDS), key
    assert set(result["reference_s"]) == set(gpu.MODELS)
    assert result["sizes"] == {m: {"side": s.side, "tile": s.tile, "steps": s.steps, "compare": s.compare}
                               for m, s in gpu.DRY_SIZES.items()}
    table = done.stdout
    assert all(f"| {m} |" in table for m in gpu.MODELS)


def test_what_runs_on_a_gpu_with_and_without_a_switch_to_force_fp32():
    switch = "precision"
    # Half precision where the model has it, fp32 only through the switch.
    assert gpu.applicability("span-x2", "fp16", "cuda", True, None) == (None, {})
    why, _ = gpu.applicability("span-x2", "fp32", "cuda", True, None)
    assert why is not None and why.startswith("unsupported")
    assert gpu.applicability("span-x2", "fp32", "cuda", True, switch) == (None, {"precision": "fp32"})
    # Models without a half path run fp32 anyway.
    why, _ = gpu.applicability("uniba-x2", "fp16", "cuda", False, switch)
    assert why is not None and why.startswith("not_applicable")
    assert gpu.applicability("uniba-x2", "fp32", "cuda", False, None) == (None, {})
    assert gpu.applicability("span-x2", "fp32", "cpu", True, None) == (None, {})
    # tilewave has no switch today; the script finds one once Options has it.
    from tilewave.options import Options

    assert gpu.fp32_switch() == ("precision" if "precision" in Options.__dataclass_fields__ else None)
    # Every model's batch 4 comes first, so a short budget still covers every model.
    configs = gpu.order(gpu.MODELS, gpu.BATCHES, gpu.DTYPES)
    assert len(configs) == len(set(configs)) == len(gpu.MODELS) * 3 * 2
    assert {c[1] for c in configs[: 2 * len(gpu.MODELS)]} == {gpu.FIRST_BATCH}
    # Every configuration that runs on a GPU has a tolerance entry (None: recorded only).
    for model in gpu.MODELS:
        for dtype in gpu.DTYPES:
            supports_half = model in ("span-x2", "realesrgan-x4plus", gpu.SD_TINY)
            if gpu.applicability(model, dtype, "cuda", supports_half, switch)[0] is None:
                assert dtype in gpu.TOLERANCE[model]


def test_the_gpu_sampler_reads_nvidia_smi_in_the_background(tmp_path, monkeypatch):
    # A stand-in nvidia-smi: one reading when asked once, a stream of them with --loop-ms.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    'case "$*" in\n'
                    '  *--loop-ms*) i=0; while true; do i=$((i+1)); echo "0, $((1000 + 100 * i)), $((i % 2 * 90))";'
                    ' echo "1, 5, 0"; echo "0, [N/A], [N/A]"; sleep 0.05; done ;;\n'
                    '  *) echo "0, 900, 0"; echo "1, 5, 0" ;;\n'
                    "esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = gpu.GpuSampler(interval_ms=50)
    baseline = sampler.baseline()
    assert baseline == 900
    with sampler:
        import time

        time.sleep(1.0)
    assert sampler._proc is None  # stopped
    summary = sampler.summary(baseline)
    assert set(summary) == set(gpu.GPU_FIELDS)
    assert summary["gpu_samples"] >= 3  # GPU 0's readings; the unreadable ones are left out
    assert summary["gpu_memory_peak_mib"] == 1000 + 100 * summary["gpu_samples"]
    assert summary["gpu_memory_job_mib"] == summary["gpu_memory_peak_mib"] - 900
    assert summary["gpu_util_peak_pct"] == 90 and 0 < summary["gpu_util_mean_pct"] < 90
    # Without nvidia-smi nothing is claimed.
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    blind = gpu.GpuSampler()
    assert blind.baseline() is None
    with blind:
        pass
    assert blind.summary(None) == dict.fromkeys(gpu.GPU_FIELDS)


def test_the_comparison_counts_8_bit_levels():
    import numpy as np

    a = np.zeros((3, 4, 4), np.uint8)
    b = a.copy()
    b[0, 0, 0], b[1, 1, 1] = 255, 2
    eq = gpu.compare(a, b, 3)
    assert eq["max_abs_diff_levels"] == 255 and eq["passed"] is False
    assert gpu.compare(a, a, 0)["passed"] is True
    assert gpu.compare(a, b, None)["passed"] is None
