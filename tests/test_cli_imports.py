"""The command line answers without importing torch or Ray wherever it can: ``--help``,
``--version``, ``models``, ``info`` and every refusal (``python -X importtime`` lists what
a process imported; each command here runs as a real process)."""

from __future__ import annotations

import os
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
from helpers import random_image, zarr_input

# Each command runs in a fresh interpreter, whose imports are what is measured.
pytestmark = pytest.mark.subprocess

HEAVY = ("torch", "ray")


def imported(args: list[str], cwd) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages ``tilewave ARGS`` imported, and the finished process."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tilewave.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    modules = {line.split("|")[-1].strip().split(".")[0]
               for line in done.stderr.splitlines() if line.startswith("import time:")}
    return modules, done


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imports")
    png = root / "in.png"
    png.write_bytes(imagecodecs.png_encode(np.zeros((40, 50, 3), np.uint8)))
    store = zarr_input(root / "in.zarr", random_image((3, 40, 50), "uint8"), chunk=16)
    return root, str(png), store


@pytest.mark.parametrize("name", ["--help", "--version", "models", "info png", "info zarr",
                                  "info difficulty", "missing input", "unknown model",
                                  "output exists", "output under /proc", "too many workers",
                                  "tune help", "tune a model it cannot", "tune too small"])
def test_commands_that_need_no_model_import_neither_torch_nor_ray(files, name):
    root, png, store = files
    args = {"--help": ["--help"], "--version": ["--version"], "models": ["models"],
            "info png": ["info", png], "info zarr": ["info", store],
            "info difficulty": ["info", png, "--difficulty", str(root / "map.png"), "--tile", "16"],
            "missing input": ["upscale", str(root / "nope.tif"), str(root / "o.zarr")],
            "unknown model": ["upscale", png, str(root / "o.zarr"), "--model", "spam-x2"],
            "output exists": ["upscale", png, store],
            "output under /proc": ["upscale", png, "/proc/o.zarr"],
            "too many workers": ["upscale", png, str(root / "o.zarr"), "--workers", "4096"],
            "tune help": ["tune", "--help"],
            "tune a model it cannot": ["tune", png, "-o", str(root / "t.safetensors"), "--model",
                                       "realesrgan-x4plus"],
            "tune too small": ["tune", png, "-o", str(root / "t.safetensors")]}[name]
    modules, done = imported(args, root)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    assert not modules & set(HEAVY), f"{name} imported {sorted(modules & set(HEAVY))}"
    if done.returncode == 2:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
        assert len(errors) == 1 and errors[0].startswith("tilewave: error: "), errors


def test_a_local_run_imports_torch_where_the_tiles_run(files):
    """With --local the tiles run in the driver, so there torch must be imported: the
    check above would notice an import that silently stopped happening."""
    root, png, _ = files
    modules, done = imported(["upscale", png, str(root / "local.zarr"), "--local", "--quiet"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch" in modules and "ray" not in modules


@pytest.mark.ray
def test_the_driver_of_a_ray_job_never_imports_torch(files):
    """Workers load the model; the driver moves coordinates and handles only."""
    root, png, _ = files
    modules, done = imported(["upscale", png, str(root / "ray.zarr"), "--model", "span-x2",
                              "--workers", "1", "--quiet"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray" in modules and "torch" not in modules
