"""``tilewave tune``: weights ``--model`` runs, a resumable checkpoint, never worse than
the base model on the held-out strip, refusals in one line, and a Ray worker."""

from __future__ import annotations

import os
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import zarr
from PIL import Image

import tilewave
from tilewave.errors import SettingsError
from tilewave.models import load_model
from tilewave.pipeline import reference_upscale
from tilewave.training.tune import OwnDegradation, TuneSettings, tune_weights


def scan(tmp_path, quality: int | None = 70) -> str:
    """A 200 x 360 crop of a real photo: as JPEG (a scan's compression) or PNG."""
    from skimage import data

    pixels = data.coffee()[100:300, 120:480]
    if quality is None:
        path = tmp_path / "scan.png"
        path.write_bytes(imagecodecs.png_encode(pixels))
    else:
        path = tmp_path / "scan.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
    return str(path)


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_the_degradation_follows_the_scan(tmp_path):
    from tilewave.storage.inputs import open_input

    own = OwnDegradation.of(open_input(scan(tmp_path, 70)))
    assert (own.quality, own.chroma) == (70, "420")
    assert OwnDegradation.of(open_input(scan(tmp_path, None))).quality is None


def test_tuned_weights_run_as_a_model(tmp_path):
    src = scan(tmp_path)
    out = tmp_path / "tuned.safetensors"
    record = tilewave.tune(src, out, model="span-x2", minutes=None, steps=4, executor="local",
                           progress=False)
    assert record["steps"] == 4 and record["tuned_from"] == "span-x2"
    assert record["degradation"] == ["box or bicubic x2", "JPEG q70 420"]
    assert record["held_out_gain_db"] >= 0
    assert not os.path.exists(str(out) + ".ckpt")
    pixels = np.asarray(Image.open(src)).transpose(2, 0, 1)[:, :40, :48].copy()
    tuned = reference_upscale(load_model(str(out)), pixels)
    assert tuned.shape == (3, 80, 96)
    # Through a job too, in the model's halo mode, tiled as any model.
    store = tmp_path / "in.zarr"
    zarr.create_array(str(store), shape=pixels.shape, dtype=pixels.dtype, chunks=(3, 24, 24),
                      dimension_names=("c", "y", "x"))[:] = pixels
    report = tilewave.upscale(str(store), tmp_path / "o.zarr", model=str(out), tile=24,
                              executor="local", progress=False)
    assert report.mode == "halo" and report.scale == 2
    assert np.abs(zarr.open_array(f"{tmp_path}/o.zarr/0")[:].astype(int) - tuned).max() <= 1


def test_an_interrupted_tune_resumes_to_the_same_weights(tmp_path):
    src = scan(tmp_path)
    settings = TuneSettings(model="span-x2-scan", minutes=None, steps=5, batch=2, threads=1,
                            checkpoint_seconds=0)
    whole = tmp_path / "whole.safetensors"
    tune_weights(src, str(whole), settings)

    class Stop(Exception):
        pass

    def stop_at_three(status):
        if status.step == 3:
            raise Stop

    part = tmp_path / "part.safetensors"
    with pytest.raises(Stop):
        tune_weights(src, str(part), settings, stop_at_three)
    assert os.path.exists(str(part) + ".ckpt") and not part.exists()
    # Started again without --resume, the checkpoint is not silently dropped.
    with pytest.raises(SettingsError, match="resume=True"):
        tilewave.tune(src, part, model="span-x2-scan", minutes=None, steps=5, executor="local",
                      progress=False)
    record = tune_weights(src, str(part), settings)
    assert record["resumed"] and record["steps"] == 5
    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_tuning_that_does_worse_writes_the_base_weights(tmp_path):
    src = scan(tmp_path)
    out = tmp_path / "wrecked.safetensors"
    # A learning rate this large wrecks the network within a step or two.
    settings = TuneSettings(model="span-x2-scan", minutes=None, steps=3, batch=2, lr=0.5,
                            threads=1, checkpoint_seconds=0)
    record = tune_weights(src, str(out), settings)
    assert record["best_step"] == 0 and record["best_score"] == record["start_score"]
    base = load_model("span-x2-scan").net.state_dict()
    tuned = weights(out)
    assert all(np.array_equal(base[k].numpy(), tuned[k].numpy()) for k in tuned)


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ["model", "small", "exists", "suffix"])
def test_refusals_are_one_line(tmp_path, case):
    src = scan(tmp_path)
    out = tmp_path / "t.safetensors"
    args = {"model": [src, "-o", str(out), "--model", "bicubic"],
            "small": [str(_small(tmp_path)), "-o", str(out)],
            "exists": [src, "-o", str(_touch(out))],
            "suffix": [src, "-o", str(tmp_path / "t.pth")]}[case]
    done = subprocess.run([sys.executable, "-m", "tilewave.cli", "tune", *args, "--local"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilewave: error: "), lines
    assert {"model": "cannot be tuned", "small": "too small", "exists": "--overwrite",
            "suffix": ".safetensors"}[case] in lines[0]


def _small(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(imagecodecs.png_encode(np.zeros((100, 100, 3), np.uint8)))
    return path


def _touch(path):
    path.write_bytes(b"x")
    return path


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_tune_runs_on_a_ray_worker_and_its_driver_imports_no_torch(tmp_path):
    src = scan(tmp_path)
    out = tmp_path / "ray.safetensors"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tilewave.cli", "tune", src,
                           "-o", str(out), "--steps", "3", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = {line.split("|")[-1].strip().split(".")[0]
               for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "ray" in modules and "torch" not in modules
    assert load_model(str(out)).descriptor.scale == 2
