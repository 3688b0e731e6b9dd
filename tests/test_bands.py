"""Satellite stacks of any number of bands: a 7-band 16-bit GeoTIFF built from the Landsat
scene's measurements runs through models made for one or three channels band by band,
keeping its band names, nodata, georeferencing and 16-bit values (where ../shared/data
has no scene, a scikit-image photo stretched to 16 bits stands in for it)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from helpers import SHARED_DATA as SHARED

import tilewave
from tilewave.errors import SettingsError
from tilewave.storage.describe import describe
from tilewave.storage.inputs import open_input

NAMES = ["Red", "Green", "Blue", "Red-Green", "Green-Blue", "Red x0.8", "Blue x1.2"]
NODATA = 0


#: The Landsat scene's GeoTIFF keys (WGS 84 / UTM zone 21N), for the stand-in scene.
UTM21N = ((1, 1, 0, 7, 1024, 0, 1, 1, 1025, 0, 1, 1, 1026, 34737, 22, 0, 2049, 34737, 7, 22,
           2054, 0, 1, 9102, 3072, 0, 1, 32621, 3076, 0, 1, 9001), "WGS 84 / UTM zone 21N|WGS 84|")


def _scene(y0: int, x0: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...], str]:
    """``(3, h, w)`` 16-bit measurements and the scene's GeoTIFF keys: the Landsat scene
    where ../shared/data has it, else a scikit-image photo stretched to 16 bits in its place
    (so a fresh clone tests the same code)."""
    path = SHARED / "landsat8_224078_rgb.tif"
    if path.exists():
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            rgb = page.asarray()[y0 : y0 + size[0], x0 : x0 + size[1]].transpose(2, 0, 1)
            return rgb, page.tags["GeoKeyDirectoryTag"].value, page.tags["GeoAsciiParamsTag"].value
    from skimage import data

    photo = data.astronaut()[y0 // 4 : y0 // 4 + size[0], x0 // 4 : x0 // 4 + size[1]]
    return (photo.transpose(2, 0, 1).astype(np.uint16) * 40 + 6000), *UTM21N


def seven_band_geotiff(path, y0=600, x0=800, size=(72, 88)) -> np.ndarray:
    """Write a crop of the Landsat scene as 7 bands (its 3 and 4 derived from them, as
    indices are) with GDAL's band descriptions and nodata tags; returns the (7, h, w) bands."""
    scene, geokeys, ascii_ = _scene(y0, x0, size)
    rgb = scene.astype(np.float64)
    r, g, b = rgb
    bands = np.stack([r, g, b, (r + g) / 2, (g + b) / 2, r * 0.8, np.minimum(b * 1.2, 65535)])
    bands = np.rint(bands).astype(np.uint16)
    bands[:, :6, :10] = NODATA  # a corner without data, as a scene's edge has
    items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                    for i, n in enumerate(NAMES))
    tifffile.imwrite(
        path, bands, photometric="minisblack", planarconfig="separate", tile=(32, 32),
        compression="zlib", metadata=None,
        extratags=[(33550, "d", 3, (30.0, 30.0, 0.0), True),
                   (33922, "d", 6, (0, 0, 0, 717345.0 + 30 * x0, -2776995.0 - 30 * y0, 0), True),
                   (34735, "H", len(geokeys), geokeys, True),
                   (34737, "s", 0, ascii_, True),
                   (42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True),
                   (42113, "s", 0, str(NODATA), True)])
    return bands


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack7.tif"
    return str(path), seven_band_geotiff(path)


def test_a_7_band_geotiff_is_read_with_its_band_names_nodata_and_place(stack):
    path, bands = stack
    image = open_input(path)
    assert image.shape == bands.shape and image.dtype == np.uint16
    assert image.metadata["channel_names"] == NAMES and image.metadata["nodata"] == NODATA
    assert image.metadata["pixel_size"] == [30.0, 30.0]
    facts = describe(path)
    assert facts["channels"] == 7 and facts["channel names"] == ", ".join(NAMES)


@pytest.mark.parametrize("model", ["span-x2", "bicubic"])
def test_each_band_is_upscaled_as_if_it_were_alone(stack, tmp_path, model):
    path, bands = stack
    out = tmp_path / "out.zarr"
    tilewave.upscale(path, out, model=model, tile=32, executor="local", progress=False)
    upscaled = zarr.open_array(str(out), path="0")[:]
    assert upscaled.shape == (7, 144, 176) and upscaled.dtype == np.uint16
    # Band 4 alone, as a one-band image with the same place and nodata, gives the same bytes.
    one = tmp_path / "band4.tif"
    tifffile.imwrite(one, bands[4], photometric="minisblack", tile=(32, 32), metadata=None,
                     extratags=[(42113, "s", 0, str(NODATA), True)])
    tilewave.upscale(one, tmp_path / "one.zarr", model=model, tile=32, executor="local",
                     progress=False)
    np.testing.assert_array_equal(upscaled[4], zarr.open_array(str(tmp_path / "one.zarr"), path="0")[0])
    # Nodata stays exactly nodata, in every band; the rest is the scene's 16-bit range.
    assert (upscaled[:, :12, :20] == NODATA).all()
    assert upscaled[:, 12:, 20:].min() > 0 and upscaled.max() > 255
    facts = describe(str(out))
    assert facts["channel names"] == ", ".join(NAMES) and facts["nodata"] == NODATA
    assert facts["ground pixel"] == "15 x 15 m"


def test_the_stack_exports_to_a_geotiff_with_its_band_names(stack, tmp_path):
    path, _ = stack
    out = tmp_path / "out.tif"
    tilewave.upscale(path, out, model="bicubic", tile=32, executor="local", progress=False)
    back = open_input(str(out))
    assert back.shape == (7, 144, 176) and back.dtype == np.uint16 and back.format == "geotiff"
    assert back.metadata["channel_names"] == NAMES and back.metadata["nodata"] == NODATA


def test_a_context_model_is_refused_for_a_stack_in_one_line(stack, tmp_path):
    path, _ = stack
    with pytest.raises(SettingsError, match=r"takes 3 channels but the input has 7, and it runs "
                                            r"band by band only in halo or blend mode"):
        tilewave.upscale(path, tmp_path / "o.zarr", model="uniba-x2", executor="local",
                         progress=False)
