"""The OME-Zarr output as GIS tools see it: the input's CRS and transform where GDAL's Zarr
driver reads them, the input's nodata as every array's fill_value, and OME validity kept.

The GDAL checks run GDAL itself. The rasterio wheels bundle GDAL 3.10, which cannot read
Zarr v3's codecs, so they need a GDAL of 3.11 or newer: ``gdalinfo`` on the PATH, or a
Debian root with ``gdal-bin`` in ``TILEWAVE_GDAL_ROOT`` (``.ci/run`` makes one from
Debian unstable), run through ``chroot``. Without one they skip.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import uuid

import numpy as np
import pytest
import tifffile
import zarr

import tilewave
from tilewave.storage import geozarr
from tilewave.storage.tiff_export import export_tiff

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

ORIGIN = (500000.0, 4600000.0)


def _scene(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bands = [np.sin(x / 23) * np.cos(y / 17), np.cos(x / 31 + y / 29), np.sin((x + y) / 41)]
    return ((np.stack(bands) + 1) * 8000 + 100).astype(np.uint16)


def _geotiff(path: pathlib.Path, h: int, w: int, nodata: float | None = None,
             point: bool = False, crs: str = "EPSG:32633") -> np.ndarray:
    data = _scene(h, w)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16",
                       crs=crs, transform=from_origin(*ORIGIN, 30.0, 30.0), nodata=nodata,
                       tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(data)
        if point:
            dst.update_tags(AREA_OR_POINT="Point")
    return data


def _upscale(src: pathlib.Path, out: pathlib.Path) -> zarr.Group:
    tilewave.upscale(str(src), str(out), scale=2, tile=256, executor="local", progress=False)
    return zarr.open_group(str(out), mode="r")


# ------------------------------------------------------------------- GDAL itself


class Gdal:
    """GDAL's command-line tools, run directly or inside a Debian root with ``chroot``."""

    def __init__(self, root: pathlib.Path | None):
        self.root = root
        self.copies: list[pathlib.Path] = []

    def version(self) -> tuple[int, int]:
        text = self.run("gdalinfo", "--version")
        major, minor = re.search(r"GDAL (\d+)\.(\d+)", text).groups()  # type: ignore[union-attr]
        return int(major), int(minor)

    def visible(self, path: pathlib.Path) -> str:
        """``path`` as GDAL sees it: copied into the root where there is one."""
        if self.root is None:
            return str(path)
        inside = pathlib.Path("/tmp") / f"tilewave-{uuid.uuid4().hex}" / path.name
        shutil.copytree(path, self.root / inside.relative_to("/"))
        self.copies.append(self.root / inside.parent.relative_to("/"))
        return str(inside)

    def run(self, *args: str, check: bool = True) -> str:
        cmd = ["chroot", str(self.root), *args] if self.root else list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
        return done.stdout

    def info(self, dataset: str) -> dict:
        return json.loads(self.run("gdalinfo", "-json", dataset))


def _find_gdal() -> Gdal | None:
    root = os.environ.get("TILEWAVE_GDAL_ROOT")
    candidates = []
    if root and (pathlib.Path(root) / "usr/bin/gdalinfo").exists() and os.geteuid() == 0:
        candidates.append(Gdal(pathlib.Path(root)))
    if shutil.which("gdalinfo"):
        candidates.append(Gdal(None))
    for gdal in candidates:
        try:
            if gdal.version() >= (3, 11):
                return gdal
        except (AssertionError, OSError, subprocess.SubprocessError):
            continue
    return None


@pytest.fixture(scope="module")
def gdal():
    found = _find_gdal()
    if found is None:
        pytest.skip("needs GDAL >= 3.11 (gdalinfo on the PATH, or a Debian root with gdal-bin "
                    "in TILEWAVE_GDAL_ROOT, as .ci/run makes)")
    yield found
    for copy in found.copies:
        shutil.rmtree(copy, ignore_errors=True)


def _epsg(info: dict) -> int | None:
    wkt = info.get("coordinateSystem", {}).get("wkt", "")
    codes = re.findall(r'ID\["EPSG",(\d+)\]\]$', wkt)
    return int(codes[0]) if codes else None


@pytest.mark.subprocess
def test_gdal_reads_the_crs_transform_nodata_and_pixels(gdal, tmp_path):
    src = tmp_path / "scene.tif"
    _geotiff(src, 640, 560, nodata=7)
    group = _upscale(src, tmp_path / "scene.zarr")
    seen = gdal.visible(tmp_path / "scene.zarr")
    with rasterio.open(src) as ds:
        x0, y0 = ds.transform.c, ds.transform.f

    level0 = gdal.info(f'ZARR:"{seen}":/0')
    assert level0["size"] == [1120, 1280]
    assert level0["geoTransform"] == [x0, 15.0, 0.0, y0, 0.0, -15.0]
    assert _epsg(level0) == 32633
    assert [b["noDataValue"] for b in level0["bands"]] == [7, 7, 7]
    for level in ("1",):
        coarse = gdal.info(f'ZARR:"{seen}":/{level}')
        assert _epsg(coarse) == 32633 and coarse["bands"][0]["noDataValue"] == 7

    # Pixels through GDAL equal the Zarr array.
    tif = f"{seen}.tif"
    gdal.run("gdal_translate", "-q", "-of", "GTiff", f'ZARR:"{seen}":/0', tif)
    through = tifffile.imread(gdal.root / tif.lstrip("/") if gdal.root else tif)
    np.testing.assert_array_equal(np.moveaxis(through, -1, 0), group["0"][:])


@pytest.mark.subprocess
def test_gdal_opens_the_whole_output_and_lists_every_level(gdal, tmp_path):
    src = tmp_path / "scene.tif"
    _geotiff(src, 640, 560)
    _upscale(src, tmp_path / "scene.zarr")
    text = gdal.run("gdalinfo", gdal.visible(tmp_path / "scene.zarr"))
    assert re.findall(r'SUBDATASET_\d+_NAME=ZARR:".*":/(\w+)', text).count("0") == 1
    assert {"0", "1"} <= set(re.findall(r'SUBDATASET_\d+_NAME=ZARR:".*":/(\w+)', text))


@pytest.mark.subprocess
def test_gdal_puts_a_pixel_is_point_scene_where_the_input_is(gdal, tmp_path):
    src = tmp_path / "point.tif"
    _geotiff(src, 200, 300, point=True)
    _upscale(src, tmp_path / "point.zarr")
    with rasterio.open(src) as ds:
        corner = (ds.transform.c, ds.transform.f)  # GDAL's corner of the first pixel
    info = gdal.info(f'ZARR:"{gdal.visible(tmp_path / "point.zarr")}":/0')
    x0, px, _, y0, _, py = info["geoTransform"]
    assert (x0, y0) == pytest.approx(corner) and (px, py) == (15.0, -15.0)


# --------------------------------------------------------------- without GDAL


def test_a_georeferenced_output_stays_valid_ome_zarr_and_carries_its_crs(tmp_path):
    from ome_zarr_models.v05.image import Image

    src = tmp_path / "scene.tif"
    _geotiff(src, 640, 560, nodata=7)
    group = _upscale(src, tmp_path / "scene.zarr")
    image = Image.from_zarr(group)
    assert [d.path for d in image.attributes.ome.multiscales[0].datasets] == ["0", "1"]
    for level in ("0", "1"):
        assert group[level].attrs["_CRS"] == {"url": "http://www.opengis.net/def/crs/EPSG/0/32633"}
        assert group[level].attrs["proj:code"] == "EPSG:32633"
        assert group[level].fill_value == 7
    # Level 0's pixel-centre coordinates, the arrays GDAL takes its transform from.
    x, y = group["x"][:], group["y"][:]
    assert x.shape == (1120,) and y.shape == (1280,)
    assert x[0] == ORIGIN[0] + 7.5 and x[-1] == ORIGIN[0] + 15 * 1119 + 7.5
    assert y[0] == ORIGIN[1] - 7.5 and np.all(np.diff(y) == -15)


def test_an_input_without_nodata_gains_none(tmp_path):
    src = tmp_path / "scene.tif"
    _geotiff(src, 200, 300)
    group = _upscale(src, tmp_path / "scene.zarr")
    assert "nodata" not in group.attrs["tilewave"]["metadata"]
    dest = tmp_path / "scene_x2.tif"
    export_tiff(str(tmp_path / "scene.zarr"), str(dest), progress=False)
    with rasterio.open(dest) as ds:
        assert ds.nodata is None and ds.crs.to_epsg() == 32633


def test_a_slide_gets_no_gis_attributes(tmp_path):
    img = _scene(120, 160)[:, :, :].astype(np.uint8)
    src = tmp_path / "plain.tif"
    tifffile.imwrite(src, np.moveaxis(img, 0, -1))
    group = _upscale(src, tmp_path / "plain.zarr")
    assert set(group.keys()) == {"0"}
    assert "_CRS" not in group["0"].attrs and "proj:code" not in group.attrs


@pytest.mark.parametrize("meta, expected", [
    ({"crs": "EPSG:32633", "pixel_size": [30.0, 20.0], "origin": [100.0, 900.0]},
     (100.0, 20.0, 0.0, 900.0, 0.0, -30.0)),
    ({"crs": "EPSG:32633", "pixel_size": [30.0, 20.0], "origin": [100.0, 900.0], "raster_type": 2},
     (90.0, 20.0, 0.0, 915.0, 0.0, -30.0)),
    ({"crs": "a user-defined CRS", "pixel_size": [30.0, 20.0], "origin": [100.0, 900.0]}, None),
    ({"mpp": [0.25, 0.25]}, None),
])
def test_the_geotransform_is_the_corner_of_the_first_pixel(meta, expected):
    assert geozarr.geotransform(meta) == expected
    assert bool(geozarr.array_attributes(meta)) == (expected is not None)


@pytest.mark.parametrize("nodata, dtype, expected", [
    (None, "uint16", 0), (7, "uint16", 7), (7.0, "uint8", 7), (-9999, "uint16", 0),
    (0.5, "uint8", 0), (-9999, "float32", -9999.0),
])
def test_the_fill_value_is_the_nodata_the_pixels_hold(nodata, dtype, expected):
    meta = {} if nodata is None else {"nodata": nodata}
    value = geozarr.fill_value(meta, np.dtype(dtype))
    assert value == expected and type(value) is type(expected)


def test_a_nan_nodata_is_a_nan_fill_value():
    assert np.isnan(geozarr.fill_value({"nodata": float("nan")}, np.dtype("float32")))
