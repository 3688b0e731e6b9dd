"""Interrupted runs resume to the same bytes; failed tiles stop the run, named."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from helpers import random_image, run_until_recorded, zarr_input

import tilewave
from tilewave.errors import UnreadableInputError
from tilewave.models import load_model
from tilewave.pipeline import reference_upscale
from tilewave.storage.ledger import Ledger

pytestmark = pytest.mark.ray


@pytest.mark.subprocess
@pytest.mark.slow
def test_killed_halo_run_resumes_to_the_same_bytes(ray_local, tmp_path):
    pixels = random_image((3, 777, 1000), "uint8", seed=11)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    out = str(tmp_path / "out.zarr")
    recorded = run_until_recorded([src, out, "--tile", "32"], out, 40)
    assert 40 <= recorded < 32 * 25, "the kill must land mid-run"
    report = tilewave.upscale(src, out, tile=32, resume=True, progress=False)
    assert report.tiles_run == report.tiles - recorded
    expected = reference_upscale(load_model("bicubic", 2), pixels)
    assert zarr.open_array(f"{out}/0")[:].tobytes() == expected.tobytes()
    # Resuming a complete output does nothing and changes nothing.
    again = tilewave.upscale(src, out, tile=32, resume=True, progress=False)
    assert again.tiles_run == 0


@pytest.mark.subprocess
@pytest.mark.slow
def test_killed_blend_run_resumes_to_the_bytes_of_a_clean_run(ray_local, tmp_path):
    pixels = random_image((3, 300, 420), "uint16", seed=12)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    args = ["--tile", "24", "--mode", "blend", "--overlap", "6", "--halo", "0"]
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, clean, tile=24, mode="blend", overlap=6, halo=0, executor="local",
                     progress=False)
    out = str(tmp_path / "out.zarr")
    recorded = run_until_recorded([src, out, *args], out, 40)
    assert 40 <= recorded < 13 * 18
    tilewave.upscale(src, out, tile=24, mode="blend", overlap=6, halo=0, resume=True,
                     progress=False)
    assert zarr.open_array(f"{out}/0")[:].tobytes() == zarr.open_array(f"{clean}/0")[:].tobytes()


@pytest.mark.subprocess
def test_killed_context_run_resumes_from_persisted_contexts(ray_local, tmp_path):
    pixels = np.random.default_rng(4).integers(0, 4, (1, 300, 260)).astype(np.float32)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    out = str(tmp_path / "out.zarr")
    args = [src, out, "--model", "prefix-sum", "--tile", "16"]
    recorded = run_until_recorded(args, out, 30)
    total = 19 * 17
    assert 30 <= recorded < total
    contexts = os.listdir(os.path.join(out, ".tilewave", "contexts"))
    assert contexts, "finished tiles with unfinished consumers must have left contexts"
    report = tilewave.upscale(src, out, model="prefix-sum", tile=16, resume=True, progress=False)
    assert report.tiles_run == total - recorded
    expected = reference_upscale(load_model("prefix-sum", 2), pixels)
    np.testing.assert_array_equal(zarr.open_array(f"{out}/0")[:], expected)


def test_an_unreadable_input_chunk_stops_the_run_and_names_the_tile(ray_local, tmp_path):
    pixels = random_image((3, 200, 200), "uint8", seed=2)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=64)
    # Damage one stored chunk of the input: the tile that reads it cannot decode it.
    chunk = tmp_path / "in.zarr" / "c" / "0" / "1" / "2"
    good = chunk.read_bytes()
    chunk.write_bytes(b"not zstd data")
    out = str(tmp_path / "out.zarr")
    with pytest.raises(UnreadableInputError) as info:  # the input's fault: exit code 2
        tilewave.upscale(src, out, tile=64, progress=False)
    err = info.value
    # Chunk (1, 2) covers input rows 64:128 and columns 128:192; with a halo of 2 the
    # tiles (0, 1), (0, 2), (0, 3)... read it too, so any of the tiles touching it may fail first.
    y0, y1, x0, x1 = err.window
    assert y0 < 128 + 2 and y1 > 64 - 2 and x0 < 192 + 2 and x1 > 128 - 2
    assert f"tile row {err.row}, col {err.col}" in str(err) and "resume=True" in str(err)
    assert err.exit_code == 2
    # The failure may come before any tile finished, and then there is no ledger yet.
    done = Ledger(out).done()
    assert (err.row, err.col) not in done, "a failed tile must not be recorded as done"
    log = open(os.path.join(out, ".tilewave", "errors.log")).read()
    assert "Traceback" in log
    # Restored from its source, the input reads again and the run goes on from the ledger.
    chunk.write_bytes(good)
    report = tilewave.upscale(src, out, tile=64, progress=False, resume=True)
    assert report.tiles_run == report.tiles - len(done)
