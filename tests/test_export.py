"""Viewer-ready outputs: OME-Zarr pyramids and carried metadata, read back by the real
readers (ome-zarr-py, OpenSlide, rasterio/GDAL, tifffile's OME parser)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from helpers import shared_file

import tilewave
from tilewave.errors import InputError, OutputExistsError, SettingsError
from tilewave.storage.metadata import scaled
from tilewave.storage.ome import level_shapes
from tilewave.storage.tiff_export import export_tiff

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import dask_pyramid


def smooth_rgb(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    top = np.iinfo(dtype).max
    img = np.stack([np.sin(x / 23) * np.cos(y / 17), np.cos(x / 31 + y / 29), np.sin((x + y) / 41)])
    return ((img + 1) / 2 * top).round().astype(dtype)


def halved(a: np.ndarray) -> np.ndarray:
    """The 2 x 2 mean the pyramid must hold, computed independently (edge repeated)."""
    a = np.pad(a, ((0, 0), (0, a.shape[1] % 2), (0, a.shape[2] % 2)), mode="edge").astype(np.float64)
    m = (a[:, 0::2, 0::2] + a[:, 1::2, 0::2] + a[:, 0::2, 1::2] + a[:, 1::2, 1::2]) / 4
    return np.rint(m)


@pytest.fixture(scope="module")
def slide_like(tmp_path_factory):
    """A 700 x 1150 RGB image with a pixel size, upscaled x2 into a 3-level pyramid."""
    root = tmp_path_factory.mktemp("pyramid")
    img = smooth_rgb(700, 1150)
    path = root / "in.ome.tif"
    tifffile.imwrite(path, img.transpose(1, 2, 0), photometric="rgb", tile=(128, 128), ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    out = root / "out.zarr"
    tilewave.upscale(str(path), str(out), scale=2, tile=128, executor="local", progress=False)
    return img, out


def test_pyramid_levels_halve_down_to_about_1024(slide_like):
    img, out = slide_like
    group = zarr.open_group(str(out), mode="r")
    ms = group.attrs["ome"]["multiscales"][0]
    paths = [d["path"] for d in ms["datasets"]]
    assert [group[p].shape for p in paths] == [(3, 1400, 2300), (3, 700, 1150), (3, 350, 575)]
    assert level_shapes((3, 1400, 2300)) == [(3, 1400, 2300), (3, 700, 1150), (3, 350, 575)]
    previous = group[paths[0]][:]
    for p in paths[1:]:
        level = group[p][:]
        assert level.dtype == np.uint8
        np.testing.assert_array_equal(level, halved(previous))
        previous = level


def test_multiscales_metadata_has_units_and_physical_scales(slide_like):
    _, out = slide_like
    ome = zarr.open_group(str(out), mode="r").attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 0.25, 0.25], [1.0, 0.5, 0.5], [1.0, 1.0, 1.0]]
    assert [c["label"] for c in ome["omero"]["channels"]] == ["red", "green", "blue"]


def test_ome_zarr_reader_sees_the_pyramid_and_equal_data(slide_like):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    _, out = slide_like
    node = next(iter(Reader(parse_url(str(out)))()))
    group = zarr.open_group(str(out), mode="r")
    assert len(node.data) == 3
    for i, level in enumerate(node.data):
        np.testing.assert_array_equal(np.asarray(level), group[str(i)][:])
    assert node.metadata["coordinateTransformations"][1][0]["scale"] == [1.0, 0.5, 0.5]


def test_info_shows_levels_and_inherited_metadata(slide_like, capsys):
    from tilewave.cli import main

    _, out = slide_like
    assert main(["info", str(out), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["levels"] == ["2300 x 1400", "1150 x 700", "575 x 350"]
    assert facts["pixel size"] == "0.25 x 0.25 um"


def test_ome_tiff_export_carries_pixel_size_and_levels(slide_like, tmp_path):
    img, out = slide_like
    dest = tmp_path / "out.ome.tif"
    report = export_tiff(str(out), str(dest), progress=False)
    assert report.kind == "ome" and report.compression == "deflate"
    with tifffile.TiffFile(dest) as tf:
        assert tf.is_ome
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(1400, 2300, 3), (700, 1150, 3), (350, 575, 3)]
        pixels = tf.ome_metadata
        np.testing.assert_array_equal(levels[1].asarray(), zarr.open_array(str(out / "1"))[:].transpose(1, 2, 0))
    assert 'PhysicalSizeX="0.25"' in pixels and 'PhysicalSizeY="0.25"' in pixels


def test_slide_tiff_opens_in_openslide_with_every_level(slide_like, tmp_path):
    openslide = pytest.importorskip("openslide")
    img, out = slide_like
    dest = tmp_path / "slide.tif"
    export_tiff(str(out), str(dest), kind="slide", compression="deflate", progress=False)
    slide = openslide.OpenSlide(str(dest))
    assert slide.level_dimensions == ((2300, 1400), (1150, 700), (575, 350))
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    region = np.asarray(slide.read_region((1000, 600), 0, (200, 100)).convert("RGB"))
    full = zarr.open_array(str(out / "0"))[:, 600:700, 1000:1200].transpose(1, 2, 0)
    np.testing.assert_array_equal(region, full)  # deflate is lossless
    level2 = np.asarray(slide.read_region((0, 0), 2, (575, 350)).convert("RGB"))
    np.testing.assert_array_equal(level2, zarr.open_array(str(out / "2"))[:].transpose(1, 2, 0))


# ------------------------------------------------------------------------ GeoTIFF


@pytest.fixture(scope="module")
def geotiff_input(tmp_path_factory):
    """A 16-bit, 3-band GeoTIFF in UTM written by rasterio (GDAL), with nodata."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("geo")
    data = smooth_rgb(300, 420, np.uint16) // 4 + 1000
    path = root / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=420, height=300, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000.0, 4600000.0, 30.0, 30.0),
                       nodata=0, tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(data)
    return data, path


def test_geotiff_round_trip_keeps_crs_halves_pixels_and_stays_16_bit(geotiff_input, tmp_path):
    import rasterio

    data, path = geotiff_input
    dest = tmp_path / "scene_x2.tif"
    report = tilewave.upscale(str(path), str(dest), scale=2, tile=128, executor="local", progress=False)
    assert report.output == str(dest) and not (tmp_path / "scene_x2.tif.zarr").exists()
    with rasterio.open(path) as src, rasterio.open(dest) as out:
        assert out.crs == src.crs
        assert out.res == (15.0, 15.0)
        assert (out.transform.c, out.transform.f) == (src.transform.c, src.transform.f)
        assert out.dtypes == ("uint16",) * 3 and out.nodata == 0
        assert (out.width, out.height) == (840, 600)
        assert out.overviews(1) == []  # 840 px: already below the smallest level's size
        # bicubic x2 of 16-bit data: no rescaling, values stay in the input's range
        band = out.read(1)
        assert 900 < band.min() and band.max() < 17500
        assert abs(float(band.mean()) - float(data[0].mean())) < 5


def test_geotiff_overviews_are_the_pyramid(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = smooth_rgb(700, 600, np.uint16)
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=600, height=700, count=3, dtype="uint16",
                       crs="EPSG:4326", transform=from_origin(10.0, 50.0, 0.001, 0.001)) as dst:
        dst.write(data)
    out = tmp_path / "big_x2.tif"
    tilewave.upscale(str(path), str(out), scale=2, tile=256, executor="local", progress=False)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326
        assert ds.res == pytest.approx((0.0005, 0.0005))
        assert ds.overviews(1) == [2]
        assert ds.read(1, out_shape=(700, 600)).dtype == np.uint16


def test_real_landsat_scene_end_to_end(tmp_path):
    """The real 16-bit Landsat-8 GeoTIFF: Zarr pyramid, GeoTIFF export, read by GDAL."""
    import rasterio

    path = shared_file("landsat8_224078_rgb.tif")
    out = tmp_path / "landsat_x2.zarr"
    tilewave.upscale(str(path), str(out), scale=2, tile=512, executor="local", progress=False)
    group = zarr.open_group(str(out), mode="r")
    assert group["0"].dtype == np.uint16 and group["0"].shape == (3, 3720, 4082)
    assert group.attrs["ome"]["multiscales"][0]["axes"][1]["unit"] == "meter"
    dest = tmp_path / "landsat_x2.tif"
    report = export_tiff(str(out), str(dest), progress=False)
    assert report.kind == "geotiff"
    with rasterio.open(path) as src, rasterio.open(dest) as ds:
        assert ds.crs == src.crs and ds.res == (15.0, 15.0)
        assert (ds.transform.c, ds.transform.f) == (src.transform.c, src.transform.f)
        assert ds.overviews(1) == [2, 4] and ds.dtypes[0] == "uint16"
        window = ds.read(window=((1000, 1100), (2000, 2100)))
    np.testing.assert_array_equal(window, group["0"][:, 1000:1100, 2000:2100])


@pytest.mark.slow
def test_real_svs_end_to_end_in_one_command(tmp_path, capsys):
    """The real Aperio slide: `tilewave upscale IN OUT.tif`, opened by OpenSlide."""
    openslide = pytest.importorskip("openslide")
    from tilewave.cli import main

    path = shared_file("cmu_small_region.svs")
    dest = tmp_path / "slide_x2.tif"
    assert main(["upscale", str(path), str(dest), "--scale", "2", "--local", "--quiet"]) == 0
    source, slide = openslide.OpenSlide(str(path)), openslide.OpenSlide(str(dest))
    assert slide.level_dimensions[0] == (2 * source.dimensions[0], 2 * source.dimensions[1])
    assert slide.level_count == 4 and slide.level_dimensions[-1] == (555, 742)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(
        float(source.properties["openslide.mpp-x"]) / 2, rel=1e-4)
    # The OME-TIFF flavour carries the objective, doubled with the scale.
    zarr_out = tmp_path / "slide_x2.zarr"
    tilewave.upscale(str(path), str(zarr_out), scale=2, executor="local", progress=False)
    ome = tmp_path / "slide_x2.ome.tif"
    export_tiff(str(zarr_out), str(ome), compression="jpeg", progress=False)
    from tilewave.storage.inputs import open_input

    meta = open_input(str(ome)).metadata  # tilewave's OME-XML reader
    assert meta["objective_power"] == 40.0
    assert meta["mpp"] == pytest.approx([float(source.properties["openslide.mpp-y"]) / 2,
                                         float(source.properties["openslide.mpp-x"]) / 2])
    with tifffile.TiffFile(ome) as tf:
        assert tf.is_ome and len(tf.series[0].levels) == 4
        assert 'NominalMagnification="40"' in tf.ome_metadata


# ---------------------------------------------------------------------- refusals


def test_export_refusals(slide_like, geotiff_input, tmp_path):
    _, out = slide_like
    (tmp_path / "taken.tif").write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_tiff(str(out), str(tmp_path / "taken.tif"), progress=False)
    assert (tmp_path / "taken.tif").read_bytes() == b"user data"
    with pytest.raises(SettingsError, match="no georeferencing"):
        export_tiff(str(out), str(tmp_path / "g.tif"), kind="geotiff", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        export_tiff(str(tmp_path / "nothing.zarr"), str(tmp_path / "x.tif"), progress=False)
    with pytest.raises(InputError, match="not an OME-Zarr image"):
        export_tiff(str(geotiff_input[1]), str(tmp_path / "x.tif"), progress=False)
    with pytest.raises(SettingsError, match="inside the image"):
        export_tiff(str(out), str(out / "x.tif"), progress=False)
    assert not list(tmp_path.glob("*.partial"))


def test_sixteen_bit_refuses_jpeg_and_slide(geotiff_input, tmp_path):
    _, path = geotiff_input
    out = tmp_path / "geo.zarr"
    tilewave.upscale(str(path), str(out), scale=2, tile=128, executor="local", progress=False)
    with pytest.raises(SettingsError, match="JPEG holds 8-bit"):
        export_tiff(str(out), str(tmp_path / "a.tif"), compression="jpeg", progress=False)
    with pytest.raises(SettingsError, match="8-bit RGB"):
        export_tiff(str(out), str(tmp_path / "b.tif"), kind="slide", progress=False)


def test_an_unfinished_job_is_not_exported(slide_like, tmp_path):
    import shutil

    _, out = slide_like
    copy = tmp_path / "copy.zarr"
    shutil.copytree(out, copy)
    (copy / ".tilewave").mkdir()
    with pytest.raises(InputError, match="unfinished"):
        export_tiff(str(copy), str(tmp_path / "x.tif"), progress=False)


def test_scaled_metadata():
    meta = {"mpp": [0.5, 0.4], "objective_power": 20.0, "pixel_size": [30.0, 30.0],
            "origin": [1000.0, 2000.0], "raster_type": 1, "crs": "EPSG:32633", "nodata": 0.0}
    out = scaled(meta, 2)
    assert out["mpp"] == [0.25, 0.2] and out["objective_power"] == 40.0
    assert out["pixel_size"] == [15.0, 15.0] and out["origin"] == [1000.0, 2000.0]
    assert out["crs"] == "EPSG:32633" and out["nodata"] == 0.0
    # PixelIsPoint: the origin is the first pixel's centre, which moves with the pixel size.
    point = scaled({**meta, "raster_type": 2}, 2)
    assert point["origin"] == [1000.0 - 15.0 + 7.5, 2000.0 + 15.0 - 7.5]


def test_pyramid_resume_builds_only_missing_levels(tmp_path):
    """The benchmarks' dask pyramid, resumed after a crash between two levels, builds
    only the level that is missing."""
    from tilewave.storage.ome import create_output

    build_pyramid = dask_pyramid.build_pyramid

    img = smooth_rgb(2100, 900)
    out = str(tmp_path / "o.zarr")
    create_output(out, img.shape, img.dtype, (256, 256), "o", {"mpp": [0.5, 0.5]})
    zarr.open_array(f"{out}/0", mode="r+")[:] = img
    written: list[str] = []
    assert build_pyramid(out, on_level=written.append) == ["0", "1", "2"]
    assert written == ["1", "2"]
    zarr.open_array(f"{out}/1", mode="r+")[:, :4, :4] = 7  # a marker a rebuild would erase
    group = zarr.open_group(out, mode="r+")
    del group["2"]
    written.clear()
    assert build_pyramid(out, on_level=written.append, done=("1",)) == ["0", "1", "2"]
    assert written == ["2"]
    level1 = zarr.open_array(f"{out}/1")[:]
    assert (level1[:, :4, :4] == 7).all()
    np.testing.assert_array_equal(zarr.open_array(f"{out}/2")[:], halved(level1))


def test_info_reads_the_exported_geotiff(geotiff_input, tmp_path, capsys):
    from tilewave.cli import main

    _, path = geotiff_input
    dest = tmp_path / "x2.tif"
    assert main(["upscale", str(path), str(dest), "--scale", "2", "--tile", "128", "--local",
                 "--quiet"]) == 0
    assert main(["info", str(dest), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["format"] == "geotiff" and facts["crs"].startswith("EPSG:32633")
    assert facts["ground pixel"] == "15 x 15 m" and facts["nodata"] == 0
    assert facts["dtype"] == "uint16"


def test_a_tiff_output_the_export_would_refuse_is_refused_before_the_job(tmp_path):
    """A 16-bit image cannot be a slide TIFF: said before any tile runs, and nothing made."""
    pixels = np.zeros((3, 40, 40), np.uint16)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, pixels.transpose(1, 2, 0), photometric="rgb")
    with pytest.raises(SettingsError, match="a slide TIFF holds 8-bit RGB"):
        tilewave.upscale(str(src), str(tmp_path / "out.tif"), tiff_format="slide",
                         executor="local", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
