"""Real images end to end: an Aperio slide, a 16-bit Landsat scene, and a photo."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from helpers import shared_file

import tilewave
from tilewave.models import load_model
from tilewave.pipeline import reference_upscale

pytestmark = pytest.mark.ray


def _check(output, source_cyx, scale):
    out = zarr.open_array(f"{output}/0", mode="r")
    assert out.shape == (source_cyx.shape[0], source_cyx.shape[1] * scale, source_cyx.shape[2] * scale)
    assert out.dtype == source_cyx.dtype
    expected = reference_upscale(load_model("bicubic", scale), source_cyx)
    assert out[:].tobytes() == expected.tobytes()


def test_aperio_svs(ray_local, tmp_path):
    path = shared_file("cmu_small_region.svs")
    report = tilewave.upscale(path, tmp_path / "slide.zarr", scale=2, tile=512, progress=False)
    assert report.tiles == 5 * 6
    _check(tmp_path / "slide.zarr", tifffile.imread(path).transpose(2, 0, 1), 2)
    group = zarr.open_group(str(tmp_path / "slide.zarr"), mode="r")
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][1:] == pytest.approx([0.499 / 2, 0.499 / 2])


def test_landsat_uint16_geotiff(ray_local, tmp_path):
    path = shared_file("landsat8_224078_rgb.tif")
    tilewave.upscale(path, tmp_path / "scene.zarr", scale=2, tile=384, progress=False)
    source = tifffile.imread(path).transpose(2, 0, 1)
    assert source.dtype == np.uint16 and source.max() > 255
    _check(tmp_path / "scene.zarr", source, 2)


def test_photo_from_scikit_image_png(ray_local, tmp_path):
    import imagecodecs
    from skimage import data

    photo = data.coffee()  # 400 x 600 RGB, ships in the wheel
    path = tmp_path / "coffee.png"
    path.write_bytes(imagecodecs.png_encode(photo))
    tilewave.upscale(path, tmp_path / "coffee.zarr", scale=4, tile=128, progress=False)
    _check(tmp_path / "coffee.zarr", np.ascontiguousarray(photo.transpose(2, 0, 1)), 4)
