"""Input, working store and output on S3, against a real S3 API server (moto's standalone
server) that these tests start on loopback and stop. Credentials come from the
environment, as in production, and must never appear in output, messages or objects."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr
from helpers import S3_SECRET as SECRET
from helpers import zarr_input

import tilewave

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
REPO = pathlib.Path(__file__).resolve().parents[1]


def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee()[:200, :260])  # (h, w, 3)


def test_tiff_on_s3_to_ome_zarr_on_s3_equals_local_run(s3, tmp_path):
    img = photo()
    local_in = tmp_path / "in.tif"
    tifffile.imwrite(local_in, img, tile=(64, 64), photometric="rgb", compression="zlib")
    s3.put(str(local_in), "tw-bucket/in.tif")
    report = tilewave.upscale("s3://tw-bucket/in.tif", "s3://tw-bucket/out.zarr", scale=2,
                              tile=64, executor="local", progress=False)
    assert report.tiles == 4 * 5
    tilewave.upscale(str(local_in), str(tmp_path / "local.zarr"), scale=2, tile=64,
                     executor="local", progress=False)
    remote = zarr.open_group("s3://tw-bucket/out.zarr", mode="r")
    local = zarr.open_group(str(tmp_path / "local.zarr"), mode="r")
    np.testing.assert_array_equal(remote["0"][:], local["0"][:])
    assert remote.attrs["tilewave"]["complete"] is True
    assert not s3.exists("tw-bucket/out.zarr/.tilewave"), "job state left behind"
    # The working copy of the TIFF was made on S3 too, and removed with the job state.
    assert report.output == "s3://tw-bucket/out.zarr"


@pytest.mark.subprocess
@pytest.mark.slow
def test_blend_mode_contexts_and_resume_on_s3(s3, tmp_path):
    """Contexts and the ledger live on S3; a killed run resumes to a clean run's bytes."""
    pixels = np.ascontiguousarray(photo().transpose(2, 0, 1))
    src = "s3://tw-bucket/blend_in.zarr"
    arr = zarr.create_array(src, shape=pixels.shape, chunks=(3, 32, 32), dtype=pixels.dtype,
                            dimension_names=("c", "y", "x"))
    arr[:] = pixels
    out = "s3://tw-bucket/blend_out.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tilewave.cli", "upscale", src, out, "--model", "span-x2",
            "--mode", "blend", "--tile", "32", "--local", "--quiet"]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:
        if len(s3.ls("tw-bucket/blend_out.zarr/.tilewave/ledger", refresh=True)
               if s3.exists("tw-bucket/blend_out.zarr/.tilewave/ledger") else []) >= 5:
            break
        time.sleep(0.1)
    assert first.poll() is None, f"the first run ended before it could be killed: {first.communicate()}"
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    s3.invalidate_cache()
    assert s3.ls("tw-bucket/blend_out.zarr/.tilewave/contexts"), "contexts should be on S3"
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(str(zarr_input(tmp_path / "in.zarr", pixels, chunk=32)), str(clean),
                     model="span-x2", mode="blend", tile=32, executor="local", progress=False)
    np.testing.assert_array_equal(zarr.open_array(out + "/0")[:],
                                  zarr.open_array(str(clean / "0"))[:])


@pytest.mark.subprocess
def test_credentials_never_leak(s3, tmp_path):
    # An input and an output of its own, so that the test does not depend on others.
    local_in = tmp_path / "leak_in.tif"
    tifffile.imwrite(local_in, photo()[:64, :64], photometric="rgb")
    s3.put(str(local_in), "tw-bucket/leak_in.tif")
    tilewave.upscale("s3://tw-bucket/leak_in.tif", "s3://tw-bucket/leak_out.zarr", scale=2,
                     executor="local", overwrite=True, progress=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [
        ["info", "s3://tw-bucket/leak_out.zarr"],
        ["upscale", "s3://tw-bucket/leak_in.tif", "s3://tw-bucket/leak_out.zarr", "--local"],  # exists
        ["upscale", "s3://tw-bucket/missing.tif", "s3://tw-bucket/x.zarr", "--local"],
        ["upscale", "s3://no-such-bucket-xyz/in.tif", str(tmp_path / "y.zarr"), "--local"],
    ]
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "tilewave.cli", *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert SECRET not in done.stdout + done.stderr, args
        assert "Traceback" not in done.stderr, done.stderr
    assert "exists" in subprocess.run([sys.executable, "-m", "tilewave.cli", *runs[1]], env=env,
                                      capture_output=True, text=True).stderr
    for key in s3.find("tw-bucket"):
        assert SECRET.encode() not in s3.cat_file(key), key
