"""Reading inputs and ingesting them, without Ray.

Every file here is written with the real libraries (tifffile, imagecodecs, zarr) or is one
of the real sample files; the checks compare what tilewave reports and copies with the
pixels that were written, transposed to ``(c, y, x)``.
"""

from __future__ import annotations

import hashlib
import pathlib
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from helpers import random_image, shared_file

from tilewave.errors import InputError, OutputExistsError
from tilewave.storage.arrays import ArrayReader, ArraySpec
from tilewave.storage.describe import describe
from tilewave.storage.ingest import ingest
from tilewave.storage.inputs import open_input
from tilewave.storage.ome import create_output

DTYPES = ("uint8", "uint16", "float32")
CHANNELS = (1, 3, 4)
#: Awkward sizes (height, width): single pixel, 3-row strip, odd sizes off the chunk grid.
SIZES = ((1, 1), (3, 517), (45, 70), (130, 97), (257, 131))
INGEST_CHUNK = 64


# ------------------------------------------------------------------------ helpers


def yxc(img: np.ndarray) -> np.ndarray:
    """``(c, y, x)`` -> ``(y, x)`` or ``(y, x, c)`` with canonical C strides."""
    data = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    # np.ascontiguousarray keeps odd strides on length-1 axes, which imagecodecs refuses.
    return np.array(data, order="C", copy=True)


def tiff_photometric(channels: int) -> dict:
    if channels == 1:
        return {"photometric": "minisblack"}
    kw = {"photometric": "rgb", "planarconfig": "contig"}
    if channels == 4:
        kw["extrasamples"] = ["unassalpha"]
    return kw


def write_input(kind: str, img: np.ndarray, folder: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """Write ``img`` (c, y, x) as ``kind``; return the path and the expected facts."""
    c, h, w = img.shape
    if kind == "tiff-tiled":
        path = folder / "in.tif"
        tifffile.imwrite(path, yxc(img), tile=(16, 16), **tiff_photometric(c))
        return path, {"format": "tiff", "chunks": (16, 16)}
    if kind == "tiff-striped":
        path = folder / "in.tif"
        tifffile.imwrite(path, yxc(img), rowsperstrip=2, **tiff_photometric(c))
        return path, {"format": "tiff", "chunks": (min(2, h), w)}
    if kind == "ome-tiff":
        path = folder / "in.ome.tif"
        tifffile.imwrite(path, yxc(img), ome=True, **tiff_photometric(c))
        return path, {"format": "ome-tiff"}
    if kind == "png":
        path = folder / "in.png"
        path.write_bytes(imagecodecs.png_encode(yxc(img)))
        return path, {"format": "png", "chunks": None}
    if kind.startswith("zarr-"):
        layout = kind[len("zarr-"):]
        named = layout.endswith("-named")
        layout = layout.removesuffix("-named")
        data = {"cyx": img, "yxc": np.moveaxis(img, 0, -1), "yx": img[0]}[layout]
        chunks = tuple({"c": c, "y": 32, "x": 32}[a] for a in layout)
        path = folder / "in.zarr"
        arr = zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=chunks,
                                dimension_names=tuple(layout) if named else None)
        arr[...] = data
        return path, {"format": "zarr", "chunks": (32, 32), "axes": layout}
    if kind == "ome-zarr":
        path = folder / "in.ome.zarr"
        array_path = create_output(str(path), img.shape, img.dtype, (32, 32), "in")
        zarr.open_array(array_path, mode="r+")[...] = img
        return path, {"format": "ome-zarr", "chunks": (32, 32), "axes": "cyx"}
    raise AssertionError(kind)


def _cases():
    kinds = ("tiff-tiled", "tiff-striped", "ome-tiff", "png", "zarr-cyx", "zarr-yxc",
             "zarr-yxc-named", "zarr-yx", "ome-zarr")
    n = 0
    for kind in kinds:
        for dtype in DTYPES:
            if kind == "png" and dtype == "float32":
                continue  # PNG holds integers only
            for channels in CHANNELS:
                if kind == "zarr-yx" and channels != 1:
                    continue
                size = SIZES[n % len(SIZES)]
                n += 1
                # Without dimension names a 3-D array is read by its shape: the channel
                # axis is the one of length <= 4 when the other end is longer. Smaller
                # shapes are refused (see test_ambiguous_zarr_is_refused); the "-named"
                # kind covers them.
                if kind == "zarr-yxc" and size[0] <= 4:
                    size = (size[0] + 10, size[1])
                if kind == "zarr-cyx" and size[1] <= 4:
                    size = (size[0], size[1] + 10)
                if kind == "zarr-yxc-named":
                    size = (3, 517)  # ambiguous by shape, resolved by the names
                yield pytest.param(kind, dtype, channels, size,
                                   id=f"{kind}-{dtype}-c{channels}-{size[0]}x{size[1]}")


def snapshot(path: pathlib.Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of a file, or of every file under a folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns) for p in files}


def ingest_all(image, dest: pathlib.Path, chunk: int = INGEST_CHUNK) -> np.ndarray:
    spec = ingest(image, str(dest), chunk=chunk, progress=False)
    assert spec == ArraySpec(str(dest), "cyx")
    reader = ArrayReader(spec)
    assert reader.shape == image.shape
    return reader.read(0, image.height, 0, image.width)


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind, dtype, channels, size", list(_cases()))
def test_open_and_ingest_round_trip(tmp_path, kind, dtype, channels, size):
    seed = zlib.crc32(f"{kind}{dtype}{channels}".encode())
    img = random_image((channels, *size), dtype, seed=seed)
    path, expected = write_input(kind, img, tmp_path)

    image = open_input(path)
    assert image.format == expected["format"]
    assert image.shape == (channels, *size)
    assert image.dtype == np.dtype(dtype)
    assert image.levels == (size,)
    if "chunks" in expected:
        assert image.chunks == expected["chunks"]
    if kind.endswith("zarr") or kind.startswith("zarr-"):
        assert image.array is not None and image.array.axes == expected["axes"]
        # Zarr inputs are read in place by workers: the in-place view must be right too.
        assert np.array_equal(ArrayReader(image.array).read(0, size[0], 0, size[1]), img)
    else:
        assert image.array is None

    got = ingest_all(image, tmp_path / "work.zarr")
    assert got.dtype == img.dtype
    assert got.shape == img.shape
    np.testing.assert_array_equal(got, img)
    # A window off the origin comes back right as well.
    reader = ArrayReader(ArraySpec(str(tmp_path / "work.zarr"), "cyx"))
    y0, x0 = size[0] // 3, size[1] // 2
    np.testing.assert_array_equal(reader.read(y0, size[0], x0, size[1]), img[:, y0:, x0:])


@pytest.mark.parametrize("kind", ["tiff-tiled", "tiff-striped"])
def test_larger_tiff_round_trip(tmp_path, kind):
    img = random_image((3, 777, 1000), "uint16", seed=7)
    path, _ = write_input(kind, img, tmp_path)
    image = open_input(path)
    assert image.shape == (3, 777, 1000) and image.dtype == np.uint16
    np.testing.assert_array_equal(ingest_all(image, tmp_path / "work.zarr", chunk=256), img)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(1, 1), (3, 517), (45, 70)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_jpeg_open_and_ingest(tmp_path, channels, size):
    h, w = size
    # A smooth image, so that the lossy JPEG stays close to what was written.
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(40 + 100 * yy / max(h, 1) + 80 * xx / max(w, 1) + 20 * k) for k in range(channels)]
    img = np.clip(np.stack(planes), 0, 255).astype(np.uint8)
    path = tmp_path / "in.jpg"
    path.write_bytes(imagecodecs.jpeg_encode(yxc(img), level=95))

    image = open_input(path)
    assert image.format == "jpeg"
    assert image.shape == (channels, h, w)
    assert image.dtype == np.uint8
    assert image.chunks is None

    got = ingest_all(image, tmp_path / "work.zarr", chunk=32)
    assert got.shape == img.shape and got.dtype == np.uint8
    decoded = imagecodecs.jpeg_decode(path.read_bytes())
    decoded = decoded[None] if decoded.ndim == 2 else np.moveaxis(decoded, -1, 0)
    np.testing.assert_array_equal(got, decoded)
    assert np.abs(got.astype(int) - img.astype(int)).mean() < 4


def test_png_sixteen_bit_keeps_full_range(tmp_path):
    img = np.array([[[0, 1, 255, 256, 65535]]], dtype=np.uint16)
    path = tmp_path / "in.png"
    path.write_bytes(imagecodecs.png_encode(yxc(img)))
    image = open_input(path)
    assert image.dtype == np.uint16 and image.shape == (1, 1, 5)
    np.testing.assert_array_equal(ingest_all(image, tmp_path / "w.zarr"), img)


def test_ingest_refuses_existing_store(tmp_path):
    img = random_image((1, 20, 20), "uint8")
    path, _ = write_input("tiff-tiled", img, tmp_path)
    dest = tmp_path / "work.zarr"
    ingest_all(open_input(path), dest)
    before = snapshot(dest)
    with pytest.raises(OutputExistsError, match="exists"):
        ingest(open_input(path), str(dest), progress=False)
    assert snapshot(dest) == before


# ---------------------------------------------------------------------- metadata


def test_ome_tiff_physical_size_gives_mpp(tmp_path):
    img = random_image((3, 40, 50), "uint8")
    path = tmp_path / "in.ome.tif"
    tifffile.imwrite(path, yxc(img), photometric="rgb", ome=True,
                     metadata={"PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"})
    image = open_input(path)
    assert image.format == "ome-tiff"
    assert image.metadata["mpp"] == pytest.approx([0.5, 0.25])  # (y, x)
    facts = describe(str(path))
    assert facts["format"] == "ome-tiff"
    assert facts["pixel size"] == "0.25 x 0.5 um"  # x then y
    assert facts["size"] == "50 x 40 pixels"


def test_ome_tiff_physical_size_in_millimetres_is_converted(tmp_path):
    path = tmp_path / "in.ome.tif"
    tifffile.imwrite(path, random_image((1, 8, 9), "uint16"), ome=True,
                     metadata={"PhysicalSizeX": 0.0004, "PhysicalSizeXUnit": "mm",
                               "PhysicalSizeY": 0.0004, "PhysicalSizeYUnit": "mm"})
    assert open_input(path).metadata["mpp"] == pytest.approx([0.4, 0.4])


@pytest.mark.parametrize("unit, per_unit_um", [("CENTIMETER", 1e4), ("INCH", 25400.0)])
def test_tiff_resolution_tags_give_mpp(tmp_path, unit, per_unit_um):
    path = tmp_path / "in.tif"
    # 0.25 um per pixel along x, 0.5 um along y.
    tifffile.imwrite(path, random_image((1, 30, 20), "uint8"),
                     resolution=(per_unit_um / 0.25, per_unit_um / 0.5), resolutionunit=unit)
    image = open_input(path)
    assert image.format == "tiff"
    assert image.metadata["mpp"] == pytest.approx([0.5, 0.25])
    assert describe(str(path))["pixel size"] == "0.25 x 0.5 um"


def test_tiff_without_resolution_unit_has_no_mpp(tmp_path):
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, random_image((1, 30, 20), "uint8"))
    image = open_input(path)
    assert "mpp" not in image.metadata
    assert "pixel size" not in describe(str(path))


def test_ome_zarr_scale_gives_mpp(tmp_path):
    img = random_image((3, 33, 21), "uint16")
    path = tmp_path / "in.ome.zarr"
    array_path = create_output(str(path), img.shape, img.dtype, (16, 16), "in",
                               {"mpp": [0.5, 0.25]})
    zarr.open_array(array_path, mode="r+")[...] = img
    # Read from the multiscales scale alone, as for an OME-Zarr image another tool wrote.
    zarr.open_group(str(path), mode="r+").attrs["tilewave"] = {}
    image = open_input(path)
    assert image.format == "ome-zarr"
    assert image.metadata["mpp"] == pytest.approx([0.5, 0.25])
    assert describe(str(path))["pixel size"] == "0.25 x 0.5 um"


def test_svs_sample(tmp_path):
    path = shared_file("cmu_small_region.svs")
    image = open_input(path)
    assert image.format == "svs"
    assert image.shape == (3, 2967, 2220)
    assert image.dtype == np.uint8
    assert image.metadata["mpp"] == pytest.approx([0.499, 0.499])
    assert image.metadata["objective_power"] == pytest.approx(20)
    facts = describe(str(path))
    assert facts["format"] == "svs"
    assert facts["pixel size"] == "0.499 x 0.499 um"
    assert facts["objective"] == "20x"
    assert facts["size"] == "2220 x 2967 pixels"

    got = ingest_all(image, tmp_path / "work.zarr", chunk=512)
    expected = np.moveaxis(tifffile.imread(path), -1, 0)
    assert expected.shape == image.shape
    np.testing.assert_array_equal(got, expected)


def test_geotiff_sample(tmp_path):
    path = shared_file("landsat8_224078_rgb.tif")
    image = open_input(path)
    assert image.format == "geotiff"
    assert image.shape == (3, 1860, 2041)
    assert image.dtype == np.uint16
    assert image.metadata["crs"] == "EPSG:32621"
    assert image.metadata["pixel_size"] == pytest.approx([30, 30])
    assert "mpp" not in image.metadata  # ground pixels are not microscope pixels
    facts = describe(str(path))
    assert facts["format"] == "geotiff"
    assert facts["crs"].startswith("EPSG:32621")
    assert facts["ground pixel"] == "30 x 30 m"  # UTM: ProjLinearUnitsGeoKey is metre
    assert "origin" in facts

    got = ingest_all(image, tmp_path / "work.zarr", chunk=512)
    expected = np.moveaxis(tifffile.imread(path), -1, 0)
    assert expected.shape == image.shape
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------- inputs are never modified


@pytest.mark.parametrize("kind", ["tiff-tiled", "ome-tiff", "png", "zarr-cyx", "ome-zarr"])
def test_input_is_not_modified(tmp_path, kind):
    img = random_image((3, 50, 40), "uint16")
    path, _ = write_input(kind, img, tmp_path)
    before = snapshot(path)
    image = open_input(path)
    ingest_all(image, tmp_path / "work.zarr")
    describe(str(path))
    assert snapshot(path) == before


def test_real_samples_are_not_modified(tmp_path):
    path = shared_file("cmu_small_region.svs")
    before = snapshot(path)
    ingest_all(open_input(path), tmp_path / "work.zarr", chunk=1024)
    describe(str(path))
    assert snapshot(path) == before


# ---------------------------------------------------------------- damaged inputs


def _tiled_zlib_tiff(path: pathlib.Path) -> tuple[bytes, tifffile.TiffPage]:
    img = random_image((3, 100, 120), "uint8", seed=3)
    tifffile.imwrite(path, yxc(img), tile=(32, 32), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        info = {"offsets": page.dataoffsets, "counts": page.databytecounts,
                "tile_offsets_at": page.tags["TileOffsets"].valueoffset,
                "bits_at": page.tags["BitsPerSample"].valueoffset}
    return path.read_bytes(), info


def test_tiff_cut_in_half_is_refused(tmp_path):
    data, _ = _tiled_zlib_tiff(tmp_path / "full.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        open_input(path)


def test_tiff_cut_inside_tile_offsets_is_refused(tmp_path):
    data, info = _tiled_zlib_tiff(tmp_path / "full.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: info["tile_offsets_at"] + 8])
    with pytest.raises(InputError):
        image = open_input(path)
        # If it is accepted, at least it must not read back as a blank image.
        assert ingest_all(image, tmp_path / "w.zarr").max() > 0


def test_tiff_cut_inside_bits_per_sample_is_called_truncated(tmp_path):
    data, info = _tiled_zlib_tiff(tmp_path / "full.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: info["bits_at"] + 2])
    with pytest.raises(InputError) as err:
        open_input(path)
    assert "truncated" in str(err.value) or "not a readable TIFF" in str(err.value)


def test_tiff_with_corrupt_tile_raises_input_error_on_ingest(tmp_path):
    data, info = _tiled_zlib_tiff(tmp_path / "full.tif")
    damaged = bytearray(data)
    o, n = info["offsets"][5], info["counts"][5]
    damaged[o : o + n] = b"\x00" * n
    path = tmp_path / "corrupt.tif"
    path.write_bytes(bytes(damaged))
    image = open_input(path)  # the header is fine; the damage is in the pixel data
    with pytest.raises(InputError):
        ingest(image, str(tmp_path / "w.zarr"), chunk=32, progress=False)


def test_truncated_jpeg_is_refused(tmp_path):
    img = random_image((3, 64, 80), "uint8", seed=4)
    data = imagecodecs.jpeg_encode(yxc(img), level=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        image = open_input(path)
        ingest(image, str(tmp_path / "w.zarr"), chunk=32, progress=False)


def test_truncated_png_is_refused_on_ingest(tmp_path):
    img = random_image((3, 64, 80), "uint8", seed=5)
    data = imagecodecs.png_encode(yxc(img))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    image = open_input(path)  # the header alone is intact
    assert image.shape == (3, 64, 80)
    with pytest.raises(InputError, match="could not be decoded"):
        ingest(image, str(tmp_path / "w.zarr"), chunk=32, progress=False)


@pytest.mark.parametrize("shape", [(3, 5000, 3), (4, 1, 1)])
def test_ambiguous_zarr_is_refused(tmp_path, shape):
    arr = zarr.create_array(tmp_path / "a.zarr", shape=shape, dtype="uint8", chunks=shape)
    arr[...] = 1
    with pytest.raises(InputError, match="dimension_names"):
        open_input(tmp_path / "a.zarr")


def test_dimension_names_in_any_order_are_honoured(tmp_path):
    img = random_image((3, 20, 30), "uint16", seed=8)
    data = np.transpose(img, (2, 0, 1))  # (x, c, y)
    arr = zarr.create_array(tmp_path / "xcy.zarr", shape=data.shape, dtype=data.dtype,
                            chunks=data.shape, dimension_names=("x", "c", "y"))
    arr[...] = data
    image = open_input(tmp_path / "xcy.zarr")
    assert image.shape == (3, 20, 30)
    assert np.array_equal(ArrayReader(image.array).read(0, 20, 0, 30), img)
    grey = zarr.create_array(tmp_path / "xy.zarr", shape=(30, 20), dtype="uint8", chunks=(30, 20),
                             dimension_names=("x", "y"))
    grey[...] = img[0].T.astype("uint8")
    image = open_input(tmp_path / "xy.zarr")
    assert image.shape == (1, 20, 30)
    assert np.array_equal(ArrayReader(image.array).read(2, 7, 3, 9)[0], img[0].astype("uint8")[2:7, 3:9])


@pytest.mark.parametrize("attrs", [
    {"ome": {"version": "0.5", "multiscales": [{"axes": [{"name": "y"}, {"name": "x"}]}]}},
    {"ome": {"version": "0.5", "multiscales": [{"datasets": [{"path": "missing"}]}]}},
    {"ome": {"version": "0.5", "multiscales": [{"axes": ["y", "y"], "datasets": [{"path": "0"}]}]}},
])
def test_malformed_ome_zarr_is_refused(tmp_path, attrs):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("0", shape=(8, 8), dtype="uint8")
    group.attrs.update(attrs)
    with pytest.raises(InputError, match="g.zarr"):
        open_input(tmp_path / "g.zarr")
