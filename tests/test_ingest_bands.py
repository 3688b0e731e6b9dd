"""Band-wise ingest of TIFF files: every layout it reads copies exactly what tifffile
reads, each strip or tile is decoded once, and damage gives the one-line error.

Every file is written with tifffile; the chunk (40 rows) is a multiple of none of the
strip heights, and no image height is a multiple of the chunk.
"""

from __future__ import annotations

import collections
import pathlib
import struct

import numpy as np
import pytest
import tifffile
from helpers import random_image, shared_file

from tilewave.errors import InputError
from tilewave.storage import tiff_bands
from tilewave.storage.arrays import ArrayReader
from tilewave.storage.ingest import ingest
from tilewave.storage.inputs import open_input
from tilewave.storage.tiff_bands import TiffBands

CHUNK = 40
HEIGHT, WIDTH = 130, 75


def rgb(channels: int) -> dict:
    if channels == 1:
        return {"photometric": "minisblack"}
    kw: dict = {"photometric": "rgb"}
    if channels == 4:
        kw["extrasamples"] = ["unassalpha"]
    return kw


def expected(path: pathlib.Path) -> np.ndarray:
    """tifffile's level 0 of ``path`` as ``(c, y, x)``."""
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        data = series.asarray()
        axes = series.axes
    if axes in ("YX",):
        return data[None]
    if axes in ("YXS",):
        return np.moveaxis(data, -1, 0)
    assert axes in ("SYX", "CYX"), axes
    return data


def ingested(path: pathlib.Path, dest: pathlib.Path, chunk: int = CHUNK) -> np.ndarray:
    image = open_input(path)
    spec = ingest(image, str(dest), chunk=chunk, progress=False)
    return ArrayReader(spec).read(0, image.height, 0, image.width)


CASES = {
    "strips16-rgb-uint8": ((3, "uint8"), {"rowsperstrip": 16}),
    "strips37-deflate-rgb-uint8": ((3, "uint8"), {"rowsperstrip": 37, "compression": "zlib"}),
    "single-strip-rgb-uint8": ((3, "uint8"), {}),
    "single-strip-deflate-grey-uint16": ((1, "uint16"), {"rowsperstrip": HEIGHT, "compression": "zlib"}),
    "strips37-lzw-predictor-rgba-uint16": ((4, "uint16"), {"rowsperstrip": 37, "compression": "lzw",
                                                           "predictor": True}),
    "strips7-deflate-predictor-grey-float32": ((1, "float32"), {"rowsperstrip": 7,
                                                               "compression": "zlib",
                                                               "predictor": True}),
    "strips16-grey-float32": ((1, "float32"), {"rowsperstrip": 16}),
    "strips37-big-endian-rgba-uint16": ((4, "uint16"), {"rowsperstrip": 37, "byteorder": ">"}),
    "planar-strips37-rgb-uint8": ((3, "uint8"), {"rowsperstrip": 37, "planarconfig": "separate"}),
    "planar-strips16-deflate-rgb-uint16": ((3, "uint16"), {"rowsperstrip": 16, "compression": "zlib",
                                                          "planarconfig": "separate"}),
    "tiles48x16-deflate-rgb-uint8": ((3, "uint8"), {"tile": (48, 16), "compression": "zlib"}),
    "tiles32-rgba-uint8": ((4, "uint8"), {"tile": (32, 32)}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bands_equal_tifffile(tmp_path, name):
    (channels, dtype), kw = CASES[name]
    img = random_image((channels, HEIGHT, WIDTH), dtype, seed=len(name))
    data = img if kw.get("planarconfig") == "separate" else (
        img[0] if channels == 1 else np.moveaxis(img, 0, -1))
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, np.ascontiguousarray(data), **rgb(channels), **kw)
    with TiffBands.open(str(path), CHUNK) as bands:  # read in bands, not window by window
        assert bands is not None
        rows = [(y0, band.shape) for y0, band in bands]
    assert rows == [(y, (channels, min(CHUNK, HEIGHT - y), WIDTH)) for y in range(0, HEIGHT, CHUNK)]
    got = ingested(path, tmp_path / "w.zarr")
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected(path))
    np.testing.assert_array_equal(got, img)


def test_one_page_per_channel_ome_tiff(tmp_path):
    img = random_image((3, HEIGHT, WIDTH), "uint16", seed=3)
    path = tmp_path / "in.ome.tif"
    tifffile.imwrite(path, img, ome=True, photometric="minisblack", metadata={"axes": "CYX"},
                     rowsperstrip=37, compression="zlib")
    with TiffBands.open(str(path), CHUNK) as bands:
        assert bands is not None and bands.shape == img.shape
    np.testing.assert_array_equal(ingested(path, tmp_path / "w.zarr"), img)


def test_pyramid_level_zero_only(tmp_path):
    img = random_image((3, HEIGHT, WIDTH), "uint8", seed=4)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        yxs = np.moveaxis(img, 0, -1)
        tw.write(yxs, subifds=1, photometric="rgb", rowsperstrip=37, compression="zlib")
        tw.write(yxs[::2, ::2], subfiletype=1, photometric="rgb", compression="zlib")
    np.testing.assert_array_equal(ingested(path, tmp_path / "w.zarr"), img)


def test_svs_sample(tmp_path):
    path = shared_file("cmu_small_region.svs")
    with TiffBands.open(str(path), 512) as bands:
        assert bands is not None
    np.testing.assert_array_equal(ingested(path, tmp_path / "w.zarr", chunk=512), expected(path))


@pytest.mark.parametrize("kw", [{"rowsperstrip": 37, "compression": "zlib"},
                                {"rowsperstrip": 16, "compression": "lzw", "predictor": True},
                                {"tile": (48, 16), "compression": "zlib"},
                                {"rowsperstrip": 37, "compression": "zlib", "planarconfig": "separate"}],
                         ids=["strips37", "strips16-lzw", "tiles48x16", "planar-strips37"])
def test_every_segment_decoded_once(tmp_path, monkeypatch, kw):
    img = random_image((3, HEIGHT, WIDTH), "uint8", seed=5)
    data = img if kw.get("planarconfig") == "separate" else np.moveaxis(img, 0, -1)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, np.ascontiguousarray(data), photometric="rgb", **kw)
    with tifffile.TiffFile(path) as tf:
        segments = len(tf.pages[0].dataoffsets)
    decoded: collections.Counter[int] = collections.Counter()
    decode = tiff_bands.decode_segment

    def counting(page, data, index, args):
        decoded[index] += 1
        return decode(page, data, index, args)

    monkeypatch.setattr(tiff_bands, "decode_segment", counting)
    np.testing.assert_array_equal(ingested(path, tmp_path / "w.zarr"), img)
    assert sorted(decoded) == list(range(segments))
    assert set(decoded.values()) == {1}


def test_uncompressed_strips_are_read_without_decoding(tmp_path, monkeypatch):
    img = random_image((3, HEIGHT, WIDTH), "uint8", seed=6)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, np.moveaxis(img, 0, -1), photometric="rgb")  # one strip
    calls = []
    monkeypatch.setattr(tiff_bands, "decode_segment", lambda *a: calls.append(a))
    np.testing.assert_array_equal(ingested(path, tmp_path / "w.zarr"), img)
    assert calls == []


def test_damaged_strip_is_one_line_input_error(tmp_path):
    img = random_image((3, HEIGHT, WIDTH), "uint8", seed=7)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, np.moveaxis(img, 0, -1), photometric="rgb", rowsperstrip=37,
                     compression="zlib")
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[0].dataoffsets[2], tf.pages[0].databytecounts[2]
    raw = bytearray(path.read_bytes())
    raw[offset:offset + count] = b"\x00" * count
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError) as err:
        ingested(path, tmp_path / "w.zarr")
    message = str(err.value)
    assert "\n" not in message
    assert f"is damaged: its pixels in rows 74:111, columns 0:{WIDTH} cannot be decoded (" in message
    assert message.endswith("copy the complete file again")


def test_short_uncompressed_strip_is_one_line_input_error(tmp_path):
    img = random_image((1, HEIGHT, WIDTH), "uint8", seed=8)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img[0], rowsperstrip=37)
    with tifffile.TiffFile(path) as tf:
        tag = tf.pages[0].tags["StripByteCounts"]
        at, kind = tag.valueoffset, tag.dtype
    raw = bytearray(path.read_bytes())
    fmt = "<" + {3: "H", 4: "I", 16: "Q"}[int(kind)]
    first = struct.unpack_from(fmt, raw, at)[0]
    struct.pack_into(fmt, raw, at + struct.calcsize(fmt), first // 2)  # the second strip
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"is damaged: its pixels in rows 37:74, .*copy the complete file again"):
        ingested(path, tmp_path / "w.zarr")


def test_tiff_on_s3_reads_in_bands(s3, tmp_path):
    img = random_image((3, HEIGHT, WIDTH), "uint8", seed=9)
    for name, kw in (("raw.tif", {"rowsperstrip": 37}), ("deflate.tif", {"rowsperstrip": 16,
                                                                        "compression": "zlib"})):
        local = tmp_path / name
        tifffile.imwrite(local, np.moveaxis(img, 0, -1), photometric="rgb", **kw)
        s3.put(str(local), f"tw-bucket/bands/{name}")
        url = f"s3://tw-bucket/bands/{name}"
        with TiffBands.open(url, CHUNK) as bands:
            assert bands is not None
        np.testing.assert_array_equal(ingested(url, tmp_path / f"{name}.zarr"), img)
