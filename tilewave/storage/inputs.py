"""Opening input images lazily, checking them, and describing them.

:func:`open_input` reads only headers and metadata: TIFF family files through tifffile
(series 0, level 0 of a pyramid), PNG and JPEG through their headers, Zarr arrays and
OME-Zarr images in place. :func:`lazy_pixels` then gives a dask array over the pixels,
read chunk by chunk (TIFF, Zarr) for the streaming ingest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import numpy as np

from ..errors import InputError, InputNotFoundError
from . import location
from .arrays import ArraySpec
from .compression import TIFF_COMPRESSION, Compression, jpeg_compression
from .metadata import well_formed

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class InputImage:
    """What tilewave knows about an input before reading any pixel."""

    path: str
    #: ``tiff``, ``svs``, ``ome-tiff``, ``geotiff``, ``png``, ``jpeg``, ``zarr`` or ``ome-zarr``.
    format: str
    #: ``(channels, height, width)`` of the full-resolution level.
    shape: tuple[int, int, int]
    dtype: np.dtype
    #: Storage chunk or TIFF tile ``(height, width)``, None for whole-file formats.
    chunks: tuple[int, int] | None
    #: ``(height, width)`` of every pyramid level, full resolution first.
    levels: tuple[tuple[int, int], ...]
    #: Pixel size, objective power, geo-referencing, channel names where present.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Set for Zarr inputs, which workers read in place.
    array: ArraySpec | None = None
    #: How the pixels are compressed (TIFF family, PNG and JPEG files), with a JPEG's quality.
    compression: Compression | None = None

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    def fingerprint(self) -> dict[str, Any]:
        """Identifies the input for ``--resume``: path, size, shape, dtype, mtime."""
        size, mtime_ns = location.stat(self.path)
        return {
            "path": location.absolute(self.path),
            "format": self.format,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "bytes": size,
            "mtime_ns": mtime_ns,
        }


def open_input(path: str | os.PathLike[str], check: bool = True) -> InputImage:
    """Describe the image at ``path`` and (with ``check``) that tilewave can process it.

    Raises :class:`InputError` (one line, naming the problem and the fix) for missing,
    unreadable or unsupported inputs. Nothing is written.
    """
    path = os.fspath(path)
    if not location.exists(path):
        raise InputNotFoundError(f"input {path!r} does not exist; check the path")
    if location.isdir(path):
        image = _open_zarr(path)
    else:
        if not location.is_url(path) and not os.access(path, os.R_OK):
            raise InputError(f"input {path!r} is not readable; check its permissions")
        head = location.read_bytes(path, 32)
        if not head:
            raise InputError(f"input {path!r} is an empty file; it holds no image")
        if head[:4] in _TIFF_MAGIC:
            image = _open_tiff(path)
        elif head.startswith(_PNG_MAGIC):
            image = _open_png(path)
        elif head.startswith(_JPEG_MAGIC):
            image = _open_jpeg(path)
        else:
            raise InputError(
                f"input {path!r} is not a TIFF, PNG, JPEG or Zarr image (unrecognised "
                "header); convert it to one of those"
            )
    if check:
        check_supported(image)
    return image


def check_supported(image: InputImage) -> None:
    """Raise :class:`InputError` unless tilewave can upscale ``image``."""
    c, h, w = image.shape
    if h < 1 or w < 1:
        raise InputError(f"input {image.path!r} is {h} x {w} pixels; it holds no image")
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"input {image.path!r} has pixel type {image.dtype}; tilewave supports uint8, "
            "uint16 and float32, so convert it to one of those first"
        )
    if c < 1:
        raise InputError(f"input {image.path!r} has no channels; it holds no image")


# --------------------------------------------------------------------------- TIFF


def _tiff_axes(axes: str, shape: tuple[int, ...], path: str) -> tuple[str, tuple[Any, ...]]:
    """Map tifffile's axes onto ``cyx`` letters plus an index that drops length-1 axes."""
    letters: list[str] = []
    index: list[slice | int] = []
    for axis, n in zip(axes, shape):
        if axis in "YX":
            letters.append(axis.lower())
            index.append(slice(None))
        elif axis in "SC" and "c" not in letters:
            letters.append("c")
            index.append(slice(None))
        elif n == 1:
            index.append(0)
        else:
            raise InputError(
                f"input {path!r} has {n} planes along axis {axis!r} (axes {axes}); "
                "tilewave upscales one 2-D image, so extract a single plane first"
            )
    return "".join(letters), tuple(index)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_problems() -> Iterator[list[str]]:
    """Collect what tifffile logs while parsing, instead of letting it reach stderr.

    tifffile logs, rather than raises, when a tag's values lie past the end of the file,
    and then goes on without the tag: a file cut inside its header would otherwise open
    as an image with no pixel data, or of the wrong pixel type.
    """
    logger = logging.getLogger("tifffile")
    handler = _Collect()
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def _open_tiff(path: str) -> InputImage:
    import tifffile

    try:
        with _tifffile_problems() as problems, location.open_file(path) as fh, \
                tifffile.TiffFile(fh) as tf:
            if problems:
                raise InputError(f"input {path!r} is damaged or truncated ({_problem(problems[0])}); "
                                 "copy the complete file again")
            if not tf.series:
                raise InputError(f"input {path!r} is a TIFF without images; it holds no image")
            series = tf.series[0]
            _tiff_axes(series.axes, series.shape, path)  # refuses multi-plane images
            shape_by_axis = _shape_by_letters(series.axes, series.shape)
            c = shape_by_axis.get("c", 1)
            level_shapes = [_shape_by_letters(series.axes, lv.shape) for lv in series.levels]
            levels = tuple((lv["y"], lv["x"]) for lv in level_shapes)
            page = series.keyframe
            chunks = (page.tilelength, page.tilewidth) if page.is_tiled else (page.rowsperstrip or page.imagelength, page.imagewidth)
            metadata, fmt = _tiff_metadata(tf, page)
            dtype = np.dtype(series.dtype)
            # Damage the header parse did not notice (a file cut short) is caught here,
            # from the pixel blocks' offsets, rather than inside a worker.
            _probe_tiff(tf, series, path)
            compression = _tiff_compression(tf, page)
            # Pages after the first are found only now; a file cut after its first image
            # (a slide's thumbnail, label and macro gone) says so here, not in stderr.
            cut = [m for m in problems if "page offset" in m]
            if cut:
                raise InputError(f"input {path!r} is truncated after its first image "
                                 f"({_problem(cut[0])}); copy the complete file again")
    except InputError:
        raise
    except ZeroDivisionError:  # tifffile divides by the sizes while parsing
        raise InputError(f"input {path!r} is a damaged TIFF that declares no pixels (a zero "
                         "width, height, tile or strip size); copy or export the file again") from None
    except Exception as exc:  # tifffile raises many kinds for damaged files
        raise InputError(f"input {path!r} is not a readable TIFF ({_short(exc)}); check the file") from None
    return InputImage(path, fmt, (c, shape_by_axis["y"], shape_by_axis["x"]), dtype,
                      (int(chunks[0]), int(chunks[1])), levels, metadata, compression=compression)


def _problem(message: str) -> str:
    """tifffile's message without the object it names (``<tifffile.TiffPages @1275950>``)."""
    return " ".join(re.sub(r"<tifffile\.\w+ @\d+>", "", message).split())[:120]


def _tiff_compression(tf: Any, page: Any) -> Compression:
    """The page's compression; for JPEG, the quality of its tables (the ``JPEGTables``
    tag, or the first tile's own) and its colour (the first tile's frame)."""
    code = int(page.compression)
    kind = TIFF_COMPRESSION.get(code, f"TIFF compression {code}")
    if code != 7 or not page.dataoffsets or not page.databytecounts[0]:
        return Compression(kind=kind)
    fh = tf.filehandle
    fh.seek(page.dataoffsets[0])
    # The frame header and any tables come first in a tile's stream.
    head = fh.read(min(int(page.databytecounts[0]), 1 << 16))
    return jpeg_compression(page.jpegtables or head, head, int(page.photometric) == 2)


def _shape_by_letters(axes: str, shape: tuple[int, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a, n in zip(axes, shape):
        key = {"Y": "y", "X": "x", "S": "c", "C": "c"}.get(a)
        if key and key not in out:
            out[key] = n
    return out


def _probe_tiff(tf: Any, series: Any, path: str) -> None:
    page = series.keyframe
    expected = int(np.prod(page.chunked))
    if len(page.dataoffsets) != expected or len(page.databytecounts) != expected:
        raise InputError(
            f"input {path!r} is damaged or truncated: it lists {len(page.dataoffsets)} of its "
            f"{expected} pixel blocks; copy the complete file again"
        )
    if page.dataoffsets and page.databytecounts:
        end = max(o + n for o, n in zip(page.dataoffsets, page.databytecounts))
        if end > tf.filehandle.size:
            raise InputError(
                f"input {path!r} is truncated: its pixel data ends at byte {end} but the file "
                f"has {tf.filehandle.size} bytes; copy the complete file again"
            )


def _tiff_metadata(tf: Any, page: Any) -> tuple[dict[str, Any], str]:
    meta: dict[str, Any] = {}
    fmt = "tiff"
    desc = page.description or ""
    if tf.is_svs:
        fmt = "svs"
        mpp = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
        mag = re.search(r"AppMag\s*=\s*([0-9.]+)", desc)
        # A vendor's description may hold anything: numbers that do not read are left out.
        if mpp and _positive(mpp.group(1)):
            meta["mpp"] = [_positive(mpp.group(1))] * 2
        if mag and _positive(mag.group(1)):
            meta["objective_power"] = _positive(mag.group(1))
    elif tf.is_ome and tf.ome_metadata:
        fmt = "ome-tiff"
        meta.update(_ome_xml_metadata(tf.ome_metadata))
    geo = page.geotiff_tags
    if geo:
        fmt = "geotiff"
        meta.update(_geo_metadata(geo))
        keys = {name: page.tags[code].value for code, name in _GEOKEY_TAGS.items() if code in page.tags}
        if "GeoKeyDirectoryTag" in keys:
            meta["geokeys"] = {k: (v if isinstance(v, str) else [float(x) if k == "GeoDoubleParamsTag"
                                                                  else int(x) for x in v])
                               for k, v in keys.items()}
    names = _gdal_band_names(page, int(page.samplesperpixel))
    if names and "channel_names" not in meta:
        meta["channel_names"] = names
    # GDAL writes its nodata tag into plain TIFFs too.
    nodata = page.tags.get("GDAL_NODATA")
    if nodata is not None:
        try:
            meta["nodata"] = float(str(nodata.value).strip("\x00 "))
        except ValueError:
            pass
    if "mpp" not in meta and fmt == "tiff":
        unit = page.tags.get("ResolutionUnit")
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        per = {2: 25400.0, 3: 10000.0}.get(int(unit.value) if unit else 0)
        if per and xres and yres and xres.value[0] and yres.value[0]:
            mx = per * xres.value[1] / xres.value[0]
            my = per * yres.value[1] / yres.value[0]
            meta["mpp"] = [my, mx]
    return meta, fmt


def _positive(text: Any) -> float | None:
    """``text`` as a positive finite number, or None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _ome_xml_metadata(xml: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return meta
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return meta
    to_um = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
    sx, sy = _positive(pixels.get("PhysicalSizeX")), _positive(pixels.get("PhysicalSizeY"))
    if sx and sy:
        fx = to_um.get(pixels.get("PhysicalSizeXUnit", "µm"), 1.0)
        fy = to_um.get(pixels.get("PhysicalSizeYUnit", "µm"), 1.0)
        meta["mpp"] = [sy * fy, sx * fx]
    objective = next((el for el in root.iter() if el.tag.split("}")[-1] == "Objective"
                      and _positive(el.get("NominalMagnification"))), None)
    if objective is not None:
        meta["objective_power"] = _positive(objective.get("NominalMagnification"))
    names = [el.get("Name") for el in pixels if el.tag.endswith("Channel")]
    if names and all(names):
        meta["channel_names"] = names
    return meta


def _gdal_band_names(page: Any, bands: int) -> list[str] | None:
    """The band descriptions GDAL keeps in its metadata tag (``<Item name="DESCRIPTION"
    sample="0" role="description">Blue</Item>``), where every band has one."""
    tag = page.tags.get(42112)  # GDAL_METADATA
    if tag is None:
        return None
    try:
        root = ElementTree.fromstring(str(tag.value).strip("\x00 "))
    except ElementTree.ParseError:
        return None
    found = {int(item.get("sample", -1)): (item.text or "").strip() for item in root.iter("Item")
             if item.get("role") == "description" and (item.get("sample") or "").isdigit()}
    names = [found.get(i, "") for i in range(bands)]
    return names if bands > 0 and all(names) else None


_GEOKEY_TAGS = {34735: "GeoKeyDirectoryTag", 34736: "GeoDoubleParamsTag", 34737: "GeoAsciiParamsTag"}


def _geo_metadata(geo: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raster_type = geo.get("GTRasterTypeGeoKey")
    if raster_type is not None and int(raster_type) in (1, 2):
        meta["raster_type"] = int(raster_type)
    if geo.get("ProjLinearUnitsGeoKey") is not None and int(geo["ProjLinearUnitsGeoKey"]) == 9001:
        meta["linear_unit"] = "meter"
    for key in ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey"):
        code = geo.get(key)
        if code is not None and int(code) not in (0, 32767):
            meta["crs"] = f"EPSG:{int(code)}"
            break
    if "GTCitationGeoKey" in geo:
        meta["crs_name"] = str(geo["GTCitationGeoKey"])
    scale = geo.get("ModelPixelScale")
    tie = geo.get("ModelTiepoint")
    if scale is not None:
        meta["pixel_size"] = [float(scale[1]), float(scale[0])]
    if tie is not None and len(tie) >= 6:
        # Raster point (i, j) maps to model point (x, y); record the model origin.
        meta["origin"] = [float(tie[3] - tie[0] * (scale[0] if scale is not None else 0)),
                          float(tie[4] + tie[1] * (scale[1] if scale is not None else 0))]
    return meta


# ------------------------------------------------------------------- PNG and JPEG

#: Bit depths the PNG standard allows for each colour type, and its samples per pixel.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: deflate's largest compression ratio: no PNG's raw pixel rows are longer than this
#: many times the file.
_DEFLATE_MAX_RATIO = 1032


def _open_png(path: str) -> InputImage:
    ihdr, chunks, size = _png_chunks_before_pixels(path)
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    if not (0 < width < 2**31 and 0 < height < 2**31):
        problem = f"a size of {width} x {height} pixels"
    elif colour not in _PNG_DEPTHS:
        problem = f"colour type {colour}, which PNG does not have"
    elif depth not in _PNG_DEPTHS[colour]:
        problem = f"bit depth {depth}, which PNG does not allow with colour type {colour}"
    elif compression or filtering or interlace > 1:
        problem = f"compression method {compression}, filter method {filtering} and interlace method {interlace}"
    elif colour == 3 and b"PLTE" not in chunks:
        problem = "a palette image, but the file has no palette (PLTE chunk) before its pixels"
    elif height * (1 + (width * _PNG_SAMPLES[colour] * depth + 7) // 8) > _DEFLATE_MAX_RATIO * size:
        problem = f"{width} x {height} pixels, more than its {size} bytes can hold"
    else:
        problem = ""
    if problem:
        raise InputError(f"input {path!r} is a damaged PNG: its header gives {problem}; copy or "
                         "export the file again")
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour]
    if colour == 3:
        channels = 4 if b"tRNS" in chunks else 3
        depth = 8
    dtype = np.dtype("uint16") if depth == 16 else np.dtype("uint8")
    if depth < 8 and colour != 3:
        # Bit-packed grey is expanded to uint8 on decoding.
        dtype = np.dtype("uint8")
    return InputImage(path, "png", (channels, height, width), dtype, None, ((height, width),),
                      compression=Compression(kind="PNG (lossless)"))


def _png_chunks_before_pixels(path: str) -> tuple[bytes, set[bytes], int]:
    """The IHDR fields, the types of the chunks before the first IDAT, and the file size.

    Those chunks (header, palette, transparency, colour profile, text) are small; each is
    read whole and its checksum checked, so that damage to them is refused here rather
    than printed as a warning by the decoder. The pixel data is not read.
    """
    ihdr, pos = b"", len(_PNG_MAGIC)
    seen: set[bytes] = set()
    with location.open_file(path) as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(pos)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError(f"input {path!r} is a truncated PNG: it ends before its pixel "
                                 "data; copy the complete file again")
            length, kind = struct.unpack(">I4s", head)
            name = repr(kind.decode("latin-1"))
            if not ihdr and (kind != b"IHDR" or length != 13):
                raise InputError(f"input {path!r} is not a valid PNG (no IHDR header); check the file")
            if kind == b"IDAT":
                return ihdr, seen, size
            if kind == b"IEND":
                raise InputError(f"input {path!r} is a damaged PNG: it has no pixel data (IDAT "
                                 "chunk); copy or export the file again")
            if pos + 12 + length > size:
                raise InputError(f"input {path!r} is a truncated PNG: its {name} chunk runs past "
                                 "the end of the file; copy the complete file again")
            body = fh.read(length + 4)
            if zlib.crc32(kind + body[:-4]) != struct.unpack(">I", body[-4:])[0]:
                raise InputError(f"input {path!r} is a damaged PNG: its {name} chunk fails its "
                                 "checksum; copy the complete file again")
            if kind == b"IHDR":
                ihdr = body[:13]
            seen.add(kind)
            pos += 12 + length


def _open_jpeg(path: str) -> InputImage:
    frame, size, header = _jpeg_frame(path)
    try:
        with location.open_file(path) as fh, _jpeg_file(fh) as im:
            width, height = im.size
            mode = im.mode
    except Exception as exc:  # Pillow raises many kinds for damaged headers
        raise InputError(f"input {path!r} is not a readable JPEG ({_short(exc)}); check the file") from None
    channels = {"L": 1, "RGB": 3, "YCbCr": 3}.get(mode)
    if channels is None:
        raise InputError(f"input {path!r} is a {mode} JPEG; tilewave reads grey or RGB JPEGs, so convert it")
    # Sequential Huffman coding spends at least one bit on every 8 x 8 block (its DC term).
    if frame in _SEQUENTIAL_HUFFMAN and -(-width // 8) * -(-height // 8) > 8 * size:
        raise InputError(f"input {path!r} is a damaged JPEG: its header gives {width} x {height} "
                         f"pixels, more than its {size} bytes can hold; copy or export the file again")
    with location.open_file(path) as fh:
        head = fh.read(header)
    return InputImage(path, "jpeg", (channels, height, width), np.dtype("uint8"), None, ((height, width),),
                      compression=jpeg_compression(head, head))


#: Start-of-frame markers of sequential Huffman-coded JPEGs (baseline and extended), which
#: code every block of every component.
_SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)


def _jpeg_frame(path: str) -> tuple[int | None, int, int]:
    """The start-of-frame marker, the file size and the header's length (to the start of
    the scan), after checking that the header's segments are all there. Only the segment
    lengths are read; bytes that are not a marker end the walk and are left to the
    decoder to judge."""
    frame = None
    pos = 2
    with location.open_file(path) as fh:
        size = fh.seek(0, os.SEEK_END)
        while True:
            fh.seek(pos)
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                break
            marker, length = head[1], struct.unpack(">H", head[2:])[0]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a segment
                pos += 2
                continue
            if marker in (0xDA, 0xD9):  # start of scan, end of image
                return frame, size, pos
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
                frame = marker
                if length < 11:  # precision, height, width, count and one component
                    raise InputError(f"input {path!r} is a damaged JPEG: its frame header has "
                                     f"{length} bytes, too few for an image; copy or export the file again")
            pos += 2 + length
    if pos + 4 > size:
        raise InputError(f"input {path!r} is a truncated JPEG: it ends inside its header; copy the "
                         "complete file again")
    return frame, size, pos


def _jpeg_file(fh: Any) -> Any:
    """Pillow's JPEG reader without ``Image.open``'s decompression-bomb check, which warns
    on stderr above 89 megapixels and refuses 179: gigapixel inputs are what tilewave is for."""
    from PIL import JpegImagePlugin

    return JpegImagePlugin.JpegImageFile(fh)


# --------------------------------------------------------------------------- Zarr


def _guess_axes(shape: tuple[int, ...], path: str) -> str:
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        if shape[0] <= 4 and shape[2] > 4:
            return "cyx"
        if shape[2] <= 4 and shape[0] > 4:
            return "yxc"
    raise InputError(
        f"input {path!r} is a Zarr array of shape {shape} whose channel axis cannot be told; "
        "store it as (c, y, x) with dimension_names set, or as an OME-Zarr image"
    )


def _open_zarr(path: str) -> InputImage:
    import zarr

    try:
        node = zarr.open(path, mode="r")
        if not isinstance(node.attrs.asdict(), dict):
            raise TypeError("its attributes are not a JSON object")
    except Exception as exc:
        if any(location.exists(location.join(path, name)) for name in ("zarr.json", ".zarray", ".zgroup")):
            raise InputError(
                f"input {path!r} has malformed Zarr metadata ({type(exc).__name__}: {_short(exc)}); "
                "check its zarr.json, or copy the store again"
            ) from None
        raise InputError(
            f"input {path!r} is a folder but not a Zarr array or group ({_short(exc)}); "
            "point to a Zarr array, an OME-Zarr image or an image file"
        ) from None
    try:
        return _describe_zarr(path, node)
    except InputError:
        raise
    except Exception as exc:  # malformed metadata: missing keys, datasets or axes
        raise InputError(
            f"input {path!r} has malformed Zarr or OME-Zarr metadata ({type(exc).__name__}: "
            f"{_short(exc)}); check the store"
        ) from None


def _describe_zarr(path: str, node: Any) -> InputImage:
    import zarr

    fmt = "zarr"
    levels: list[tuple[int, int]] = []
    meta: dict[str, Any] = {}
    if isinstance(node, zarr.Group):
        # User metadata, any JSON: malformed shapes end in the caller's one-line error.
        ome: Any = node.attrs.get("ome", node.attrs.asdict())
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        if not multiscales:
            raise InputError(
                f"input {path!r} is a Zarr group without OME-Zarr multiscales metadata; "
                "point to the array inside it instead"
            )
        ms: Any = multiscales[0]
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])).lower()
        datasets = ms["datasets"]
        array_path = location.join(path, datasets[0]["path"])
        fmt = "ome-zarr"
        for ds in datasets:
            arr: Any = node[ds["path"]]
            by = dict(zip(axes, arr.shape))
            levels.append((by["y"], by["x"]))
        scale = next((t["scale"] for t in datasets[0].get("coordinateTransformations", [])
                      if t.get("type") == "scale"), None)
        units = {a.get("name"): a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
        job = node.attrs.get("tilewave")
        if isinstance(job, dict):
            meta.update(well_formed(job.get("metadata")))  # what a tilewave output inherited
        if scale and units.get("y") in ("micrometer", "micron") and units.get("x") in ("micrometer", "micron"):
            meta["mpp"] = [float(scale[axes.index("y")]), float(scale[axes.index("x")])]
        labels = [ch.get("label") for ch in (ome.get("omero") or {}).get("channels", [])]
        if "channel_names" not in meta and labels and all(labels):
            meta["channel_names"] = labels
        array = zarr.open_array(array_path, mode="r")
    else:
        array = node
        array_path = path
        names = getattr(array.metadata, "dimension_names", None)
        if names and all(names):
            axes = "".join(n.lower()[0] for n in names)
        else:
            axes = _guess_axes(array.shape, path)
    if (not set(axes) <= set("tczyx") or "y" not in axes or "x" not in axes
            or len(axes) != array.ndim or len(set(axes)) != len(axes)):
        raise InputError(f"input {path!r} has axes {axes!r}; tilewave needs y, x and optionally c, t, z")
    by = dict(zip(axes, array.shape))
    for extra in "tz":
        if by.get(extra, 1) != 1:
            raise InputError(
                f"input {path!r} has {by[extra]} planes along {extra!r}; extract a single plane first"
            )
    if not levels:
        levels.append((by["y"], by["x"]))
    chunk_by = dict(zip(axes, array.chunks))
    shape = (by.get("c", 1), by["y"], by["x"])
    return InputImage(path, fmt, shape, np.dtype(array.dtype), (chunk_by["y"], chunk_by["x"]),
                      tuple(levels), meta, ArraySpec(array_path, axes))


# ---------------------------------------------------------------------- pixels


def lazy_pixels(image: InputImage, chunk: int, level: int = 0) -> Any:
    """A dask array ``(c, y, x)`` over the input's full-resolution pixels (or those of its
    pyramid ``level``, for TIFF inputs that have one).

    TIFF and Zarr inputs are read chunk by chunk as dask computes; PNG and JPEG files are
    not tiled formats and are decoded once, whole (their size is bounded by the formats).
    """
    import dask.array as da

    if image.array is not None:
        from .arrays import ArrayReader

        reader = ArrayReader(image.array)
        return da.from_array(_WindowedReader(reader), chunks=(image.channels, chunk, chunk),
                             asarray=True, fancy=False)
    if image.format in ("png", "jpeg"):
        pixels = _decode_whole(image)
        return da.from_array(pixels, chunks=(image.channels, chunk, chunk))
    return da.from_array(_TiffReader(image.path, level), chunks=(image.channels, chunk, chunk),
                         asarray=True, fancy=False)


def _decode_whole(image: InputImage) -> np.ndarray:
    import imagecodecs

    try:
        if image.format == "jpeg":
            # Pillow refuses a truncated JPEG; libjpeg through imagecodecs pads it silently.
            with location.open_file(image.path) as fh, _jpeg_file(fh) as im:
                data = np.asarray(im.convert("L" if image.channels == 1 else "RGB"))
        else:
            encoded = location.read_bytes(image.path)
            with _native_stderr():  # libpng prints its warnings there
                data = imagecodecs.png_decode(encoded)
    except Exception as exc:
        raise InputError(f"input {image.path!r} could not be decoded ({_short(exc)}); check the file") from None
    if data.ndim == 2:
        data = data[:, :, None]
    # Palette PNGs decode to RGB or RGBA; keep what the header promised.
    data = data[:, :, : image.channels]
    if data.shape != (image.height, image.width, image.channels):
        h, w, c = data.shape
        raise InputError(
            f"input {image.path!r} is damaged: it decodes to {w} x {h} pixels of {c} channels, "
            f"not the {image.width} x {image.height} of {image.channels} its header gives; "
            "check the file"
        )
    return np.ascontiguousarray(np.transpose(data, (2, 0, 1))).astype(image.dtype, copy=False)


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Collect what C libraries write straight to file descriptor 2 (libpng's warnings)
    instead of letting it reach the terminal; the lines are in the list afterwards.

    The descriptor is the process's: anything another thread writes to stderr meanwhile
    is collected too, so this wraps only short decodes, before any progress bar.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to protect
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


class _WindowedReader:
    """Presents an :class:`ArrayReader` as a ``(c, y, x)`` array to dask."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = reader.dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        cs, ys, xs = key
        try:
            return self.reader.read(ys.start or 0, ys.stop, xs.start or 0, xs.stop)[cs]
        except Exception as exc:  # the codecs and Zarr raise their own error types
            raise InputError(
                f"input {self.reader.spec.path!r} is damaged: its pixels in rows {ys.start}:"
                f"{ys.stop}, columns {xs.start}:{xs.stop} cannot be read ({_short(exc)}); "
                "copy the complete store again"
            ) from None


class _TiffReader:
    """Reads ``(c, y, x)`` windows of a TIFF's ``level`` (0: full resolution) through
    tifffile's Zarr view."""

    def __init__(self, path: str, level: int = 0):
        import tifffile

        self.path = path
        self.level = level
        # open_input has parsed this file already; what tifffile logs again (an OME-XML
        # it falls back from, say) stays off stderr, as it did there.
        with _tifffile_problems(), location.open_file(path) as fh, tifffile.TiffFile(fh) as tf:
            series = tf.series[0]
            shape = series.levels[level].shape
            self._axes, self._index = _tiff_axes(series.axes, shape, path)
            by = _shape_by_letters(series.axes, shape)
            self.dtype = np.dtype(series.dtype)
        self.shape = (by.get("c", 1), by["y"], by["x"])
        self.ndim = 3
        self._array: Any = None

    def _open(self) -> Any:
        if self._array is None:
            import tifffile
            import zarr

            # A file handle, not a path, so that object-store URLs read the same way; it
            # stays open as long as this reader (one per dask pass).
            self._handle = location.open_file(self.path)
            store = tifffile.TiffFile(self._handle).aszarr(series=0, level=self.level)
            self._array = zarr.open_array(store, mode="r")
        return self._array

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        cs, ys, xs = key
        windows = iter({"c": slice(None), "y": ys, "x": xs}[a] for a in self._axes)
        index = tuple(next(windows) if isinstance(i, slice) else i for i in self._index)
        try:
            with _tifffile_problems():
                data = np.asarray(self._open()[index])
        except Exception as exc:  # the codecs raise their own error types
            raise InputError(
                f"input {self.path!r} is damaged: its pixels in rows {ys.start}:{ys.stop}, "
                f"columns {xs.start}:{xs.stop} cannot be decoded ({_short(exc)}); copy the "
                "complete file again"
            ) from None
        if "c" not in self._axes:
            data = data[None]
        else:
            data = np.transpose(data, [self._axes.index(a) for a in "cyx"])
        return data[cs]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # file handles do not travel
        return state


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
