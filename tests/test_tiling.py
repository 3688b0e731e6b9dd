"""Tiled output equals the whole-image answer, through the real workers and stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.models import load_model
from tilewave.pipeline import reference_upscale


def _output(path):
    return zarr.open_array(f"{path}/0", mode="r")[:]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (3, 5000), (101, 77)])
def test_halo_bicubic_equals_whole_image_bytes(tmp_path, dtype, channels, size):
    pixels = random_image((channels, *size), dtype, seed=channels)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    report = tilewave.upscale(src, tmp_path / "out.zarr", scale=3, tile=32, executor="local",
                              progress=False)
    out = _output(tmp_path / "out.zarr")
    expected = reference_upscale(load_model("bicubic", 3), pixels)
    assert out.dtype == pixels.dtype and out.shape == (channels, size[0] * 3, size[1] * 3)
    assert out.tobytes() == expected.tobytes()
    assert report.tiles == -(-size[0] // 32) * -(-size[1] // 32)


def test_reference_bicubic_is_torch_bicubic():
    import torch
    import torch.nn.functional as F

    x = torch.rand(1, 3, 41, 67)
    for s in (2, 4):
        ours = load_model("bicubic", s).forward_image(x)
        theirs = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        assert torch.allclose(ours, theirs, atol=2e-6)


@pytest.mark.ray
@pytest.mark.parametrize("workers", [1, 2])
def test_halo_on_ray_equals_whole_image_1000x777(ray_local, tmp_path, workers):
    pixels = random_image((3, 777, 1000), "uint8", seed=5)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    report = tilewave.upscale(src, tmp_path / "out.zarr", scale=2, tile=128, workers=workers,
                              progress=False)
    assert report.workers == workers and report.executor == "ray"
    expected = reference_upscale(load_model("bicubic", 2), pixels)
    assert _output(tmp_path / "out.zarr").tobytes() == expected.tobytes()


@pytest.mark.ray
@pytest.mark.parametrize("workers", [1, 2])
def test_context_mode_equals_whole_image(ray_local, tmp_path, workers):
    # Integer values make float sums exact, so any misrouted context changes the answer.
    pixels = np.random.default_rng(3).integers(0, 4, (2, 211, 150)).astype(np.float32)[:1]
    src = zarr_input(tmp_path / "in.zarr", pixels)
    report = tilewave.upscale(src, tmp_path / "out.zarr", model="prefix-sum", scale=2, tile=16,
                              workers=workers, progress=False)
    assert report.mode == "context" and report.tiles == 14 * 10
    expected = reference_upscale(load_model("prefix-sum", 2), pixels)
    np.testing.assert_array_equal(_output(tmp_path / "out.zarr"), expected)
    # Contexts of a finished job are gone; the ledger lists every tile.
    assert not (tmp_path / "out.zarr" / ".tilewave" / "contexts").exists()


def test_context_mode_detects_a_missing_context(tmp_path):
    """The prefix-sum model is a real check: dropping one context breaks the answer."""
    from tilewave.models.base import TileRequest
    from tilewave.pipeline.grid import TileGrid
    from tilewave.pipeline.upscale_window import run_tile

    pixels = np.ones((1, 8, 8), np.float32)
    model = load_model("prefix-sum", 1)
    grid = TileGrid(8, 8, 4, 1)
    _, ctx = run_tile(model, grid, grid[0, 0], pixels[:, :4, :4], "context", {})
    good, _ = run_tile(model, grid, grid[0, 1], pixels[:, :4, 4:], "context", {"left": ctx["right"]})
    bad, _ = run_tile(model, grid, grid[0, 1], pixels[:, :4, 4:], "context", {})
    whole = reference_upscale(model, pixels)
    np.testing.assert_array_equal(good, whole[:, :4, 4:])
    assert not np.array_equal(bad, whole[:, :4, 4:])
    assert isinstance(TileRequest(row=0, col=0, core=(0, 1, 0, 1), window=(0, 1, 0, 1),
                                  image_size=(1, 1), contexts={}), TileRequest)


@pytest.mark.parametrize("ramp", ["linear", "cosine"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_blend_of_identical_predictions_is_the_prediction(tmp_path, ramp, dtype):
    """With an exact halo every overlapping prediction is the same, so blending must
    reproduce the whole image (to float rounding); weights that do not sum to one or
    a misplaced strip would not."""
    pixels = random_image((3, 150, 97), dtype, seed=9)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    tilewave.upscale(src, tmp_path / "out.zarr", scale=2, tile=40, mode="blend", overlap=12,
                     ramp=ramp, executor="local", progress=False)
    out = _output(tmp_path / "out.zarr").astype(np.float64)
    expected = reference_upscale(load_model("bicubic", 2), pixels).astype(np.float64)
    tolerance = 1 if dtype == "uint8" else 1e-5
    assert np.abs(out - expected).max() <= tolerance


def test_blend_hides_seams_of_a_model_without_halo(tmp_path):
    """Without a halo, tiles disagree at their borders; blending must shrink the error
    along the seams compared with plain tiling."""
    from skimage import data

    pixels = np.ascontiguousarray(data.astronaut()[:256, :256].transpose(2, 0, 1))
    src = zarr_input(tmp_path / "in.zarr", pixels)
    expected = reference_upscale(load_model("bicubic", 2), pixels).astype(np.float64)
    errors = {}
    for mode in ("halo", "blend"):
        out = tmp_path / f"{mode}.zarr"
        tilewave.upscale(src, out, scale=2, tile=64, mode=mode, halo=0,
                         overlap=16 if mode == "blend" else None, executor="local", progress=False)
        errors[mode] = np.abs(_output(out).astype(np.float64) - expected)
    # Output columns on either side of the tile borders.
    seams = [x for b in range(128, 512, 128) for x in (b - 1, b)]
    seam_err = {m: e[:, :, seams].max() for m, e in errors.items()}
    assert seam_err["halo"] > 5
    assert seam_err["blend"] < seam_err["halo"] / 2
