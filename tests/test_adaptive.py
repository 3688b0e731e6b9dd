"""Adaptive per-tile compute: the difficulty estimate and the cheap path for easy tiles."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import shared_file, zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.pipeline.difficulty import assess, immerkaer_sigma


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1])
def test_immerkaer_recovers_the_noise_of_a_smooth_image(sigma):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256] / 256
    smooth = 0.5 + 0.2 * np.sin(6 * x) * np.cos(4 * y)  # structure the mask cancels
    estimate = immerkaer_sigma(smooth + rng.normal(0, sigma, smooth.shape))
    assert estimate == pytest.approx(sigma, rel=0.08)
    assert immerkaer_sigma(smooth) < 0.001


def test_flat_noise_is_easy_and_texture_is_hard():
    rng = np.random.default_rng(1)
    flat = np.clip(128 + rng.normal(0, 1.5, (3, 64, 64)), 0, 255).astype(np.uint8)
    assert assess(flat).easy
    from skimage import data

    texture = np.ascontiguousarray(data.astronaut()[100:164, 100:164].transpose(2, 0, 1))
    d = assess(texture)
    assert not d.easy and d.structure > 0.05


def test_nodata_and_glass_are_easy():
    scene = np.zeros((3, 64, 64), np.uint16)  # a GeoTIFF's empty corner...
    scene[:, :, :1] = (np.arange(64, dtype=np.uint16) * 500)[None, :, None]  # ...and an edge of data
    d = assess(scene)
    assert d.nodata > 0.98 and not d.easy  # the sliver of scene is an edge: the model's job
    assert assess(np.zeros((3, 64, 64), np.uint16)).easy  # a wholly empty tile
    assert not assess(scene, nodata=65535).easy
    glass = np.full((3, 64, 64), 240, np.uint8)
    glass[:, 10, 10] = 30  # a speck of dust
    d = assess(glass)
    assert d.background > 0.99 and d.easy


def test_real_slide_tiles_split_into_glass_and_tissue():
    import tifffile

    img = tifffile.imread(shared_file("cmu_small_region.svs"), level=0).transpose(2, 0, 1)
    verdicts = [assess(img[:, r:r + 256, c:c + 256]).easy
                for r in range(0, img.shape[1] - 255, 256) for c in range(0, img.shape[2] - 255, 256)]
    assert 0.2 < np.mean(verdicts) < 0.8  # this region holds both glass and tissue


@pytest.mark.slow
def test_adaptive_run_uses_bicubic_on_easy_tiles_and_the_model_elsewhere(tmp_path):
    """Left half flat grey (easy), right half a real photo (hard): the easy tiles equal a
    bicubic run, the hard tiles a span-x2 run, tile for tile."""
    from skimage import data

    pixels = np.full((3, 96, 192), 200, np.uint8)
    pixels[:, :, 96:] = data.coffee()[100:196, 200:296].transpose(2, 0, 1)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    report = tilewave.upscale(src, str(tmp_path / "a.zarr"), model="span-x2", tile=32,
                              executor="local", progress=False, adaptive=True)
    assert report.tiles == 18 and report.tiles_cheap == 9
    tilewave.upscale(src, str(tmp_path / "m.zarr"), model="span-x2", tile=32,
                     executor="local", progress=False)
    tilewave.upscale(src, str(tmp_path / "b.zarr"), model="bicubic", scale=2, tile=32,
                     executor="local", progress=False)
    adaptive, model, bicubic = (zarr.open_array(str(tmp_path / f"{n}.zarr"), path="0")[:]
                                for n in "amb")
    np.testing.assert_array_equal(adaptive[:, :, :192], bicubic[:, :, :192])
    np.testing.assert_array_equal(adaptive[:, :, 192:], model[:, :, 192:])


def test_adaptive_is_refused_in_context_mode(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(SettingsError, match="adaptive=True"):
        tilewave.upscale(src, str(tmp_path / "o.zarr"), model="uniba-x2", adaptive=True,
                         executor="local", progress=False)


def test_info_draws_the_difficulty_map(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from tilewave.cli import main

    pixels = np.full((3, 96, 192), 200, np.uint8)
    pixels[:, :, 96:] = data.coffee()[100:196, 200:296].transpose(2, 0, 1)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    png = tmp_path / "map.png"
    assert main(["info", src, "--difficulty", str(png), "--tile", "32", "--json"]) == 0
    import json

    facts = json.loads(capsys.readouterr().out)
    assert facts["difficulty"].startswith("9 of 18 tiles of 32 px easy")
    with Image.open(png) as im:
        grid = np.asarray(im.convert("RGB"))[:: im.height // 3, :: im.width // 6][:3, :6]
    assert (grid[:, :3] == 90).all()  # the flat half: grey
    assert (grid[:, 3:, 0] > 120).all() and (grid[:, 3:, 1] == 30).all()  # the photo: red
