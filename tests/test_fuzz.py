"""Fuzzing the command line with damaged real images.

Small real photographs (scikit-image's astronaut and camera man, encoded as PNG, palette
PNG, JPEG, striped TIFF, tiled TIFF and BigTIFF), the real slide and GeoTIFF of
../shared/data where present, and a small Zarr v3 array and OME-Zarr image are damaged in
many ways: cut short, header bytes flipped, tags that lie about the geometry, the pixel
type or where the pixels lie, counts far past the end of the file, malformed Zarr
metadata, broken chunks. Every damaged input goes to a real ``python -m tilewave.cli info
FILE`` subprocess, and a fixed subset (small sources, damage that reaches the pixels) also
to ``upscale FILE OUT --local --quiet`` (bicubic; for a few Zarr cases also with
``--tile 16``, which copies the input through the streaming ingest). Each must exit 0 or 2
within ``TIME_LIMIT_S``, print at most one line on stderr (``tilewave: error: ...`` when it
exits 2) and no traceback, and leave its input byte for byte as it was.

The cases follow from ``SEED``: each case draws its random choices from a generator seeded
with ``SEED`` and its own name, so the same cases run every time and a failing one can be
rerun alone (``-k``). All selected cases run once, two at a time, in a module fixture;
each case's test then checks its own result, and ``test_summary`` prints the case count,
the seed and the exit codes seen (``-s`` or ``-rA`` shows it). With
``TILEWAVE_FUZZ_REPORT=FILE`` it also writes every case's exit code and stderr there as
JSON. A failing case keeps its damaged input under pytest's temporary folder.

Cases that fail for a reason outside the input modules are listed in ``OUTSIDE`` and
marked ``xfail(strict=True)``: they start passing, and must be taken off, once it is fixed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import SHARED_DATA, zarr_input

# Every case is a ``python -m tilewave.cli`` process.
pytestmark = pytest.mark.subprocess

SEED = 20240611
TIME_LIMIT_S = 60
CONCURRENCY = 2
REPO = pathlib.Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- TIFF

_TYPE_FORMAT = {1: "B", 2: "B", 3: "H", 4: "I", 5: "Q", 6: "b", 7: "B", 8: "h", 9: "i",
                10: "q", 11: "f", 12: "d", 16: "Q", 17: "q", 18: "Q"}
_LONG, _LONG8 = 4, 16

WIDTH, HEIGHT, BITS, COMPRESSION, PHOTOMETRIC, DESCRIPTION = 256, 257, 258, 259, 262, 270
SAMPLES, PLANAR, TILE_WIDTH, SAMPLE_FORMAT = 277, 284, 322, 339
#: Strip or tile tags: whichever the file has.
OFFSETS, BYTECOUNTS, BLOCK_HEIGHT = (273, 324), (279, 325), (278, 323)
HUGE = 0xFFFFFFFF


@dataclasses.dataclass
class Ifd:
    """Where the first IFD of a classic or Big TIFF lies, and its entries."""

    order: str  # struct byte order, "<" or ">"
    big: bool
    pointer: int  # where the header's first-IFD offset is stored
    offset: int
    entries: dict[int, tuple[int, int, int, int]]  # tag -> (entry pos, type, count, values pos)
    next_pos: int  # where the next-IFD offset is stored

    @property
    def end(self) -> int:
        return self.next_pos + (8 if self.big else 4)

    def tag(self, tag: int | tuple[int, ...]) -> int:
        """The tag itself, or of strip/tile alternatives the one this file has."""
        if isinstance(tag, int):
            return tag
        return next((t for t in tag if t in self.entries), tag[0])

    def values(self, data: bytes, tag: int | tuple[int, ...]) -> list[int]:
        _, typ, count, at = self.entries[self.tag(tag)]
        return list(struct.unpack_from(f"{self.order}{count}{_TYPE_FORMAT[typ]}", data, at))


def parse_tiff(data: bytes) -> Ifd:
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    pointer = 8 if big else 4
    offset = struct.unpack_from(order + ("Q" if big else "I"), data, pointer)[0]
    n = struct.unpack_from(order + ("Q" if big else "H"), data, offset)[0]
    first, size, inline = (offset + 8, 20, 8) if big else (offset + 2, 12, 4)
    entries = {}
    for i in range(n):
        pos = first + i * size
        tag, typ = struct.unpack_from(order + "HH", data, pos)
        count = struct.unpack_from(order + ("Q" if big else "I"), data, pos + 4)[0]
        value_pos = pos + (12 if big else 8)
        nbytes = count * struct.calcsize(_TYPE_FORMAT.get(typ, "B"))
        at = value_pos if nbytes <= inline else \
            struct.unpack_from(order + ("Q" if big else "I"), data, value_pos)[0]
        entries[tag] = (pos, typ, count, at)
    return Ifd(order, big, pointer, offset, entries, first + n * size)


def _put(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    return bytes(out)


def set_tag(tag: int | tuple[int, ...], value: int) -> Callable[..., bytes]:
    """The tag says ``value`` (one number, inline); added in a rewritten IFD if absent."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        code = t.tag(tag)
        typ = _LONG8 if t.big and value > HUGE else _LONG
        count_fmt, value_fmt = ("Q", "Q") if t.big else ("I", "I")
        entry = struct.pack(t.order + "HH" + count_fmt, code, typ, 1) + struct.pack(
            t.order + value_fmt, value & (2 ** (64 if t.big else 32) - 1))
        if code in t.entries:
            pos = t.entries[code][0]
            return data[:pos] + entry + data[pos + len(entry):]
        # Absent: write the IFD again at the end of the file with the tag added.
        size = 20 if t.big else 12
        first = t.offset + (8 if t.big else 2)
        old = {struct.unpack_from(t.order + "H", data, first + i * size)[0]:
               data[first + i * size: first + (i + 1) * size] for i in range(len(t.entries))}
        old[code] = entry
        body = struct.pack(t.order + ("Q" if t.big else "H"), len(old)) + b"".join(
            old[k] for k in sorted(old)) + data[t.next_pos: t.end]
        at = len(data) + len(data) % 2
        out = data + b"\0" * (at - len(data)) + body
        return _put(out, t.pointer, t.order + ("Q" if t.big else "I"), at)

    return mutate


def set_item(tag: int | tuple[int, ...], index: int, value: int) -> Callable[..., bytes]:
    """Item ``index`` of the tag's values says ``value``; type and count stay."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        _, typ, count, at = t.entries[t.tag(tag)]
        fmt = t.order + _TYPE_FORMAT[typ]
        return _put(data, at + (index % count) * struct.calcsize(fmt), fmt, value)

    return mutate


def set_entry(tag: int | tuple[int, ...], count: int | None = None,
              typ: int | None = None) -> Callable[..., bytes]:
    """The tag's entry claims another value count or another type."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        pos = t.entries[t.tag(tag)][0]
        if typ is not None:
            data = _put(data, pos + 2, t.order + "H", typ)
        if count is not None:
            data = _put(data, pos + 4, t.order + ("Q" if t.big else "I"), count)
        return data

    return mutate


def first_ifd_at(where: Callable[[Ifd, bytes], int]) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        return _put(data, t.pointer, t.order + ("Q" if t.big else "I"), where(t, data))

    return mutate


def next_ifd_at(where: Callable[[Ifd, bytes], int]) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        return _put(data, t.next_pos, t.order + ("Q" if t.big else "I"), where(t, data))

    return mutate


def entry_count(n: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        return _put(data, t.offset, t.order + ("Q" if t.big else "H"), n)

    return mutate


def swap_byte_order(data: bytes, rng: np.random.Generator) -> bytes:
    return (b"MM" if data[:2] == b"II" else b"II") + data[2:]


def swap_classic_and_big(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    return _put(data, 2, t.order + "H", 42 if t.big else 43)


def swap_first_two_entries(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    (a, *_), (b, *_) = sorted(t.entries.values())[:2]
    size = b - a
    return data[:a] + data[b: b + size] + data[a: a + size] + data[b + size:]


def flip_ifd_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    return flip(data, rng, t.offset, t.end, int(rng.integers(1, 5)))


def flip_pixel_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    offsets, counts = t.values(data, OFFSETS), t.values(data, BYTECOUNTS)
    i = int(rng.integers(len(offsets)))
    return flip(data, rng, offsets[i], offsets[i] + counts[i], 16)


def cut_inside_ifd(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    return data[: int(rng.integers(t.offset, t.end))]


def cut_inside_pixels(data: bytes, rng: np.random.Generator) -> bytes:
    t = parse_tiff(data)
    offsets = t.values(data, OFFSETS)
    return data[: max(offsets) + 1] if max(offsets) > t.end else data[: min(offsets) + 1]


def rewrite_description(edit: Callable[[bytes], bytes]) -> Callable[..., bytes]:
    """ImageDescription says ``edit(old text)``, written anew at the end of the file."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        t = parse_tiff(data)
        pos, _, count, at = t.entries[DESCRIPTION]
        text = edit(data[at: at + count].rstrip(b"\0")) + b"\0"
        new_at = len(data) + len(data) % 2
        data = data + b"\0" * (new_at - len(data)) + text
        fmt = t.order + ("Q" if t.big else "I")
        data = _put(data, pos + 4, fmt, len(text))
        return _put(data, pos + (12 if t.big else 8), fmt, new_at)

    return mutate


def description_sub(pattern: bytes, new: bytes) -> Callable[..., bytes]:
    """The description's first match of ``pattern`` (a regular expression) says ``new``."""
    return rewrite_description(lambda text: re.sub(pattern, new, text, count=1))


# ---------------------------------------------------------------------------- bytes


def flip(data: bytes, rng: np.random.Generator, start: int, stop: int, k: int) -> bytes:
    """``k`` bytes in ``[start, stop)`` xor-ed with random non-zero values."""
    out = bytearray(data)
    stop = min(stop, len(data))
    for pos in rng.integers(start, max(stop, start + 1), k):
        if pos < len(out):
            out[pos] ^= int(rng.integers(1, 256))
    return bytes(out)


def cut(n: int) -> Callable[..., bytes]:
    return lambda data, rng: data[:n]


def cut_at_fraction(f: float) -> Callable[..., bytes]:
    return lambda data, rng: data[: int(len(data) * f)]


def cut_anywhere(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def flip_first_bytes(n: int) -> Callable[..., bytes]:
    return lambda data, rng: flip(data, rng, 0, n, int(rng.integers(1, 4)))


# ------------------------------------------------------------------------------ PNG


def png_chunks(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Chunk type -> (position, data length) of its first occurrence."""
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        out.setdefault(data[pos + 4: pos + 8], (pos, length))
        pos += 12 + length
    return out


def png_fix_crc(data: bytes, chunk: bytes) -> bytes:
    pos, length = png_chunks(data)[chunk]
    return _put(data, pos + 8 + length, ">I", zlib.crc32(data[pos + 4: pos + 8 + length]))


def ihdr(offset: int, fmt: str, value: int, fix_crc: bool = True) -> Callable[..., bytes]:
    """IHDR's field at ``offset`` (width 0, height 4, depth 8, colour 9, ...) says ``value``."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        data = _put(data, 16 + offset, ">" + fmt, value)
        return png_fix_crc(data, b"IHDR") if fix_crc else data

    return mutate


def png_chunk_length(chunk: bytes, value: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        return _put(data, png_chunks(data)[chunk][0], ">I", value)

    return mutate


def png_flip_in(chunk: bytes, fix_crc: bool) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        pos, length = png_chunks(data)[chunk]
        data = flip(data, rng, pos + 8, pos + 8 + length, int(rng.integers(1, 9)))
        return png_fix_crc(data, chunk) if fix_crc else data

    return mutate


def png_drop(chunk: bytes) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        pos, length = png_chunks(data)[chunk]
        return data[:pos] + data[pos + 12 + length:]

    return mutate


def png_rename(chunk: bytes, new: bytes) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        pos, _ = png_chunks(data)[chunk]
        return data[: pos + 4] + new + data[pos + 8:]

    return mutate


def png_cut_inside_idat(data: bytes, rng: np.random.Generator) -> bytes:
    pos, length = png_chunks(data)[b"IDAT"]
    return data[: pos + 8 + length // 2]


# ----------------------------------------------------------------------------- JPEG


def jpeg_segments(data: bytes) -> dict[int, tuple[int, int]]:
    """Marker -> (position, length) of its first segment, up to the start of scan."""
    out, pos = {}, 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        out.setdefault(marker, (pos, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


SOF, DHT, DQT, SOS = 0xC0, 0xC4, 0xDB, 0xDA


def sof(offset: int, fmt: str, value: int) -> Callable[..., bytes]:
    """The frame header's field (precision 0, height 1, width 3, components 5) says ``value``."""

    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        return _put(data, jpeg_segments(data)[SOF][0] + 4 + offset, ">" + fmt, value)

    return mutate


def jpeg_marker(old: int, new: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        return _put(data, jpeg_segments(data)[old][0] + 1, ">B", new)

    return mutate


def jpeg_length(marker: int, value: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        return _put(data, jpeg_segments(data)[marker][0] + 2, ">H", value)

    return mutate


def jpeg_flip_in(marker: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        pos, length = jpeg_segments(data)[marker]
        return flip(data, rng, pos + 4, pos + 2 + length, int(rng.integers(1, 4)))

    return mutate


def jpeg_drop(marker: int) -> Callable[..., bytes]:
    def mutate(data: bytes, rng: np.random.Generator) -> bytes:
        pos, length = jpeg_segments(data)[marker]
        return data[:pos] + data[pos + 2 + length:]

    return mutate


def jpeg_flip_scan(data: bytes, rng: np.random.Generator) -> bytes:
    pos, length = jpeg_segments(data)[SOS]
    return flip(data, rng, pos + 2 + length, len(data) - 2, 8)


def jpeg_cut_at_sof(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: jpeg_segments(data)[SOF][0] + 6]


# ----------------------------------------------------------------------------- Zarr


def edit_json(name: str, edit: Callable[[dict[str, Any]], Any]) -> Callable[..., None]:
    """Rewrite the store's ``name`` (a zarr.json) through ``edit``, which changes the
    parsed document in place or returns a replacement."""

    def mutate(store: pathlib.Path, rng: np.random.Generator) -> None:
        path = store / name
        doc = json.loads(path.read_text())
        new = edit(doc)
        path.write_text(json.dumps(doc if new is None else new))

    return mutate


def raw_json(name: str, make: Callable[[bytes], bytes]) -> Callable[..., None]:
    def mutate(store: pathlib.Path, rng: np.random.Generator) -> None:
        path = store / name
        path.write_bytes(make(path.read_bytes()))

    return mutate


def set_key(*keys_and_value: Any, name: str = "zarr.json") -> Callable[..., None]:
    """``set_key("a", "b", v)``: the document's ``["a"]["b"]`` becomes ``v``."""
    *keys, value = keys_and_value

    def edit(doc: dict[str, Any]) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return edit_json(name, edit)


def drop_key(key: str, name: str = "zarr.json") -> Callable[..., None]:
    return edit_json(name, lambda doc: doc.pop(key))


def chunk_file(store: pathlib.Path) -> pathlib.Path:
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name != "zarr.json")[0]


def chunk_cut_half(store: pathlib.Path, rng: np.random.Generator) -> None:
    path = chunk_file(store)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def chunk_garbage(store: pathlib.Path, rng: np.random.Generator) -> None:
    path = chunk_file(store)
    path.write_bytes(rng.integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def chunk_empty(store: pathlib.Path, rng: np.random.Generator) -> None:
    chunk_file(store).write_bytes(b"")


def chunk_is_folder(store: pathlib.Path, rng: np.random.Generator) -> None:
    path = chunk_file(store)
    path.unlink()
    path.mkdir()


def metadata_is_folder(store: pathlib.Path, rng: np.random.Generator) -> None:
    (store / "zarr.json").unlink()
    (store / "zarr.json").mkdir()


def tilewave_attributes(**record: Any) -> Callable[..., None]:
    """The group's ``tilewave`` attributes (what a tilewave output records about its image
    and the job that wrote it) say ``record``."""
    return set_key("attributes", "tilewave", record)


def job_json(text: bytes) -> Callable[..., None]:
    """The store has the record of an unfinished tilewave job, saying ``text``."""

    def mutate(store: pathlib.Path, rng: np.random.Generator) -> None:
        (store / ".tilewave").mkdir()
        (store / ".tilewave" / "job.json").write_bytes(text)

    return mutate


# -------------------------------------------------------------------------- sources


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60:156, 180:308])  # 96 x 128 RGB


def _camera16() -> np.ndarray:
    from skimage import data

    return (data.camera()[100:180, 200:312].astype(np.uint16) * 257)  # 80 x 112 grey


def _tiff(grey: bool = False, **kwargs: Any) -> Callable[[pathlib.Path], None]:
    def write(path: pathlib.Path) -> None:
        import tifffile

        tifffile.imwrite(path, _camera16() if grey else _astronaut(), **kwargs)

    return write


def _png(path: pathlib.Path) -> None:
    import imagecodecs

    path.write_bytes(imagecodecs.png_encode(_astronaut()))


def _palette_png(path: pathlib.Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_astronaut()).quantize(32).save(buf, "PNG", transparency=0)
    path.write_bytes(buf.getvalue())


def _jpeg(path: pathlib.Path) -> None:
    import imagecodecs

    path.write_bytes(imagecodecs.jpeg_encode(_astronaut(), level=90))


def _zarr(path: pathlib.Path) -> None:
    zarr_input(path, np.transpose(_astronaut(), (2, 0, 1)), chunk=64)


def _ome_zarr(path: pathlib.Path) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}]}],
    }], "omero": {"channels": [{"label": "red"}, {"label": "green"}, {"label": "blue"}]}}
    pixels = np.transpose(_astronaut(), (2, 0, 1))
    arr = group.create_array("0", shape=pixels.shape, chunks=(3, 64, 64), dtype=pixels.dtype,
                             dimension_names=("c", "y", "x"))
    arr[:] = pixels


@dataclasses.dataclass(frozen=True)
class Source:
    file_name: str
    write: Callable[[pathlib.Path], None]
    shared: bool = False  # a file of ../shared/data, skipped where absent


def _shared(name: str) -> Source:
    return Source(name, lambda path: shutil.copyfile(SHARED_DATA / name, path), shared=True)


SOURCES = {
    "png": Source("astronaut.png", _png),
    "png-palette": Source("astronaut-palette.png", _palette_png),
    "jpeg": Source("astronaut.jpg", _jpeg),
    "tiff-strips": Source("astronaut-strips.tif", _tiff(photometric="rgb", rowsperstrip=16)),
    "tiff-tiles": Source("astronaut-tiles.tif", _tiff(photometric="rgb", tile=(32, 32), compression="zlib")),
    "ome-tiff": Source("astronaut.ome.tif", _tiff(photometric="rgb", tile=(32, 32), ome=True, metadata={
        "axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "Channel": {"Name": ["r", "g", "b"]}})),
    "bigtiff": Source("camera-big.tif", _tiff(grey=True, bigtiff=True, tile=(32, 32), compression="lzw",
                                              predictor=True)),
    "svs": _shared("cmu_small_region.svs"),  # 2220 x 2967 JPEG tiles, 1.9 MB: info only
    "landsat": _shared("landsat8_224078_rgb.tif"),  # GeoTIFF, 2041 x 1860 uint16, 18 MB: info only
    "zarr": Source("astronaut.zarr", _zarr),
    "ome-zarr": Source("astronaut.ome.zarr", _ome_zarr),
}

# ------------------------------------------------------------------------ mutations
# Each table maps a name to a function of (input bytes or store folder, random generator).
# Names ending in a number are the same damage at other random places.

#: Every TIFF source, the real slide and GeoTIFF included.
TIFF_EVERY = {
    "cut-to-header": cut(8),
    "cut-inside-ifd": cut_inside_ifd,
    "cut-inside-pixels": cut_inside_pixels,
    "cut-anywhere-0": cut_anywhere,
    "first-ifd-past-end": first_ifd_at(lambda t, d: len(d) + 64),
    "entry-count-huge": entry_count(0xFFFF),
    "next-ifd-loops-to-itself": next_ifd_at(lambda t, d: t.offset),
    "width-huge": set_tag(WIDTH, HUGE),
    "height-0": set_tag(HEIGHT, 0),
    "bits-per-sample-12": set_tag(BITS, 12),
    "samples-per-pixel-5": set_tag(SAMPLES, 5),
    "compression-unknown": set_tag(COMPRESSION, 12345),
    "block-height-0": set_tag(BLOCK_HEIGHT, 0),
    "last-offset-past-end": set_item(OFFSETS, -1, 0x7FFFFFF0),
    "last-byte-count-huge": set_item(BYTECOUNTS, -1, HUGE),
    "offsets-count-1": set_entry(OFFSETS, count=1),
    "offsets-count-huge": set_entry(OFFSETS, count=0x3FFFFFFF),
    **{f"flip-ifd-bytes-{i}": flip_ifd_bytes for i in range(2)},
}
#: The small striped and tiled TIFFs: lies about the pixels' layout and type.
TIFF_MORE = {
    "width-0": set_tag(WIDTH, 0),
    "width-1": set_tag(WIDTH, 1),
    "height-huge": set_tag(HEIGHT, HUGE),
    "bits-per-sample-1": set_tag(BITS, 1),
    "bits-per-sample-64": set_tag(BITS, 64),
    "bits-per-sample-count-huge": set_entry(BITS, count=0x3FFFFFFF),
    "samples-per-pixel-0": set_tag(SAMPLES, 0),
    "samples-per-pixel-2": set_tag(SAMPLES, 2),
    "compression-jpeg": set_tag(COMPRESSION, 7),
    "compression-none": set_tag(COMPRESSION, 1),
    "photometric-palette": set_tag(PHOTOMETRIC, 3),
    "photometric-unknown": set_tag(PHOTOMETRIC, 999),
    "planar-separate": set_tag(PLANAR, 2),
    "sample-format-float": set_tag(SAMPLE_FORMAT, 3),
    "sample-format-unknown": set_tag(SAMPLE_FORMAT, 77),
    "block-height-huge": set_tag(BLOCK_HEIGHT, HUGE),
    "block-height-7": set_tag(BLOCK_HEIGHT, 7),
    "first-offset-0": set_item(OFFSETS, 0, 0),
    "first-offset-in-header": set_item(OFFSETS, 0, 8),
    "first-byte-count-0": set_item(BYTECOUNTS, 0, 0),
    "byte-counts-count-huge": set_entry(BYTECOUNTS, count=0x3FFFFFFF),
    **{f"flip-ifd-bytes-{i}": flip_ifd_bytes for i in range(2, 4)},
    **{f"flip-pixel-bytes-{i}": flip_pixel_bytes for i in range(2)},
}
#: The striped TIFF only: damage to the file's structure, whatever its layout.
TIFF_STRUCTURE = {
    "cut-at-half": cut_at_fraction(0.5),
    "cut-last-byte": cut(-1),
    "byte-order-swapped": swap_byte_order,
    "classic-big-swapped": swap_classic_and_big,
    "first-ifd-zero": first_ifd_at(lambda t, d: 0),
    "first-ifd-in-pixels": first_ifd_at(lambda t, d: t.values(d, OFFSETS)[0]),
    "entry-count-zero": entry_count(0),
    "next-ifd-past-end": next_ifd_at(lambda t, d: len(d) + 64),
    "next-ifd-in-pixels": next_ifd_at(lambda t, d: t.values(d, OFFSETS)[-1]),
    "entries-unsorted": swap_first_two_entries,
    "width-type-invalid": set_entry(WIDTH, typ=99),
    "width-type-ascii": set_entry(WIDTH, typ=2),
    "width-count-0": set_entry(WIDTH, count=0),
    "description-count-huge": set_entry(DESCRIPTION, count=0x7FFFFFFF),
    "flip-header-bytes-0": flip_first_bytes(16),
}
#: Tiled TIFFs: the tile width lies.
TILED_TIFF = {
    "tile-width-0": set_tag(TILE_WIDTH, 0),
    "tile-width-17": set_tag(TILE_WIDTH, 17),
    "tile-width-huge": set_tag(TILE_WIDTH, HUGE),
}
#: Aperio's ImageDescription: "Aperio Image Library ... |AppMag = 20|MPP = 0.499|...".
SVS = {
    "svs-mpp-not-a-number": description_sub(rb"MPP = [0-9.]+", b"MPP = ."),
    "svs-mpp-two-dots": description_sub(rb"MPP = [0-9.]+", b"MPP = 0.4.9"),
    "svs-mpp-zero": description_sub(rb"MPP = [0-9.]+", b"MPP = 0"),
    "svs-appmag-not-a-number": description_sub(rb"AppMag = [0-9.]+", b"AppMag = .."),
    "svs-description-cut": rewrite_description(lambda text: text[:30]),
}
#: The OME-XML in an OME-TIFF's ImageDescription, which tifffile trusts for the shape.
OME_TIFF = {
    "ome-xml-cut-half": rewrite_description(lambda text: text[: len(text) // 2]),
    "ome-not-xml": rewrite_description(lambda text: b"<OME" + text[100:140]),
    "ome-size-x-lies": description_sub(rb'SizeX="\d+"', b'SizeX="4096"'),
    "ome-size-c-lies": description_sub(rb'SizeC="\d+"', b'SizeC="7"'),
    "ome-size-z-lies": description_sub(rb'SizeZ="\d+"', b'SizeZ="5"'),
    "ome-size-t-huge": description_sub(rb'SizeT="\d+"', b'SizeT="100000"'),
    "ome-size-y-zero": description_sub(rb'SizeY="\d+"', b'SizeY="0"'),
    "ome-type-lies": description_sub(rb'Type="\w+"', b'Type="float"'),
    "ome-type-unknown": description_sub(rb'Type="\w+"', b'Type="uint7"'),
    "ome-dimension-order-bogus": description_sub(rb'DimensionOrder="\w+"', b'DimensionOrder="QQQQQ"'),
    "ome-physical-size-a-word": description_sub(rb'PhysicalSizeX="[^"]*"', b'PhysicalSizeX="wide"'),
    "ome-physical-size-negative": description_sub(rb'PhysicalSizeX="[^"]*"', b'PhysicalSizeX="-1"'),
    "ome-tiffdata-ifd-past-end": description_sub(rb'IFD="\d+"', b'IFD="99"'),
    "ome-plane-count-huge": description_sub(rb'PlaneCount="\d+"', b'PlaneCount="100000"'),
}
GEOTIFF = {
    "geokeys-count-huge": set_item(34735, 3, 0xFFFF),
    "geokeys-count-1": set_entry(34735, count=1),
    "geokeys-point-past-doubles": set_item(34735, 7, 34736),
    "pixel-scale-count-1": set_entry(33550, count=1),
    "tiepoint-count-2": set_entry(33922, count=2),
    "tiepoint-type-ascii": set_entry(33922, typ=2),
}
PNG = {
    "cut-to-signature": cut(8),
    "cut-inside-ihdr": cut(20),
    "cut-after-ihdr": cut(33),
    "cut-inside-idat": png_cut_inside_idat,
    "cut-before-iend": cut(-12),
    "cut-anywhere-0": cut_anywhere,
    "signature-flipped": flip_first_bytes(8),
    "width-0": ihdr(0, "I", 0),
    "width-1": ihdr(0, "I", 1),
    "width-huge": ihdr(0, "I", 0x7FFFFFFF),
    "height-0": ihdr(4, "I", 0),
    "height-huge": ihdr(4, "I", 0x7FFFFFFF),
    "height-huge-bad-crc": ihdr(4, "I", 0x7FFFFFFF, fix_crc=False),
    "bit-depth-1": ihdr(8, "B", 1),
    "bit-depth-3": ihdr(8, "B", 3),
    "bit-depth-16": ihdr(8, "B", 16),
    "colour-type-grey-alpha": ihdr(9, "B", 4),
    "colour-type-grey": ihdr(9, "B", 0),
    "colour-type-palette": ihdr(9, "B", 3),
    "colour-type-invalid": ihdr(9, "B", 5),
    "compression-method-1": ihdr(10, "B", 1),
    "interlace-method-2": ihdr(12, "B", 2),
    "ihdr-crc-wrong": png_flip_in(b"IHDR", fix_crc=False),
    "ihdr-length-huge": png_chunk_length(b"IHDR", 0x7FFFFFFF),
    "ihdr-renamed": png_rename(b"IHDR", b"IHDX"),
    "idat-length-huge": png_chunk_length(b"IDAT", 0x7FFFFFFF),
    "idat-dropped": png_drop(b"IDAT"),
    "idat-crc-wrong": png_flip_in(b"IDAT", fix_crc=False),
    "flip-idat-bytes-0": png_flip_in(b"IDAT", fix_crc=True),
    **{f"flip-header-bytes-{i}": flip_first_bytes(64) for i in range(2)},
}
#: The palette PNG: a few of the above, and damage to its palette and transparency.
PALETTE_PNG = {
    **{name: PNG[name] for name in ("cut-after-ihdr", "cut-inside-idat", "width-huge", "bit-depth-16",
                                    "colour-type-grey-alpha", "flip-header-bytes-0")},
    "colour-type-rgb": ihdr(9, "B", 2),
    "plte-dropped": png_drop(b"PLTE"),
    "plte-length-huge": png_chunk_length(b"PLTE", 0x7FFFFFFF),
    "plte-length-odd": png_chunk_length(b"PLTE", 7),
    "trns-length-huge": png_chunk_length(b"tRNS", 0x7FFFFFFF),
    "trns-garbled": png_flip_in(b"tRNS", fix_crc=False),
}
JPEG = {
    "cut-to-4-bytes": cut(4),
    "cut-inside-sof": jpeg_cut_at_sof,
    "cut-at-half": cut_at_fraction(0.5),
    "cut-before-eoi": cut(-2),
    "cut-anywhere-0": cut_anywhere,
    "height-0": sof(1, "H", 0),
    "height-huge": sof(1, "H", 0xFFFF),
    "width-0": sof(3, "H", 0),
    "width-huge": sof(3, "H", 0xFFFF),
    "size-huge": lambda data, rng: sof(1, "H", 0xFFFF)(sof(3, "H", 0xFFFF)(data, rng), rng),
    "components-0": sof(5, "B", 0),
    "components-2": sof(5, "B", 2),
    "components-4": sof(5, "B", 4),
    "precision-12": sof(0, "B", 12),
    "sof-progressive": jpeg_marker(SOF, 0xC2),
    "sof-lossless": jpeg_marker(SOF, 0xC3),
    "sof-arithmetic": jpeg_marker(SOF, 0xC9),
    "sof-dropped": jpeg_drop(SOF),
    "dqt-dropped": jpeg_drop(DQT),
    "dht-dropped": jpeg_drop(DHT),
    "dqt-length-0": jpeg_length(DQT, 0),
    "dqt-length-huge": jpeg_length(DQT, 0xFFFF),
    "sof-length-2": jpeg_length(SOF, 2),
    "dht-garbled": jpeg_flip_in(DHT),
    "sos-garbled": jpeg_flip_in(SOS),
    **{f"flip-header-bytes-{i}": flip_first_bytes(600) for i in range(3)},
    "flip-scan-bytes-0": jpeg_flip_scan,
}
ZARR = {
    "json-cut-half": raw_json("zarr.json", lambda b: b[: len(b) // 2]),
    "json-empty": raw_json("zarr.json", lambda b: b""),
    "json-a-list": raw_json("zarr.json", lambda b: b"[]"),
    "json-not-utf8": raw_json("zarr.json", lambda b: b"\xff\xfe" + b),
    "json-is-folder": metadata_is_folder,
    "shape-bigger": set_key("shape", [3, 192, 256]),
    "shape-smaller": set_key("shape", [3, 40, 50]),
    "shape-huge": set_key("shape", [3, 2**40, 2**40]),
    "shape-negative": set_key("shape", [3, -96, 128]),
    "shape-zero": set_key("shape", [3, 0, 128]),
    "shape-2d": set_key("shape", [96, 128]),
    "shape-a-string": set_key("shape", "96x128"),
    "shape-floats": set_key("shape", [3.0, 96.5, 128.0]),
    "dtype-int8": set_key("data_type", "int8"),
    "dtype-float64": set_key("data_type", "float64"),
    "dtype-complex64": set_key("data_type", "complex64"),
    "dtype-bogus": set_key("data_type", "uint7"),
    "dtype-a-number": set_key("data_type", 8),
    "shape-missing": drop_key("shape"),
    "dtype-missing": drop_key("data_type"),
    "chunk-grid-missing": drop_key("chunk_grid"),
    "codecs-missing": drop_key("codecs"),
    "zarr-format-missing": drop_key("zarr_format"),
    "node-type-missing": drop_key("node_type"),
    "fill-value-missing": drop_key("fill_value"),
    "chunk-shape-2d": set_key("chunk_grid", "configuration", "chunk_shape", [64, 64]),
    "chunk-shape-zero": set_key("chunk_grid", "configuration", "chunk_shape", [3, 0, 64]),
    "chunk-shape-huge": set_key("chunk_grid", "configuration", "chunk_shape", [3, 2**40, 2**40]),
    "chunk-shape-smaller": set_key("chunk_grid", "configuration", "chunk_shape", [3, 32, 32]),
    "chunk-grid-unknown": set_key("chunk_grid", "name", "irregular"),
    "dimension-names-unknown": set_key("dimension_names", ["a", "b", "q"]),
    "dimension-names-short": set_key("dimension_names", ["y", "x"]),
    "dimension-names-repeated": set_key("dimension_names", ["y", "y", "x"]),
    "dimension-names-empty-strings": set_key("dimension_names", ["", "", ""]),
    "zarr-format-2": set_key("zarr_format", 2),
    "node-type-group": set_key("node_type", "group"),
    "codec-unknown": set_key("codecs", [{"name": "no-such-codec"}]),
    "codecs-empty": set_key("codecs", []),
    "fill-value-a-word": set_key("fill_value", "lots"),
    "attributes-a-number": set_key("attributes", 5),
    "chunk-cut-half": chunk_cut_half,
    "chunk-garbage": chunk_garbage,
    "chunk-empty": chunk_empty,
    "chunk-is-folder": chunk_is_folder,
}
_MS = ("attributes", "ome", "multiscales")


def _ms(edit: Callable[[dict[str, Any]], Any]) -> Callable[..., None]:
    """Edit the group's first multiscales entry."""
    return edit_json("zarr.json", lambda doc: edit(doc["attributes"]["ome"]["multiscales"][0]))


OME_ZARR = {
    "group-json-cut-half": raw_json("zarr.json", lambda b: b[: len(b) // 2]),
    "level-json-cut-half": raw_json("0/zarr.json", lambda b: b[: len(b) // 2]),
    "level-shape-2d": set_key("shape", [96, 128], name="0/zarr.json"),
    "level-dtype-bogus": set_key("data_type", "uint7", name="0/zarr.json"),
    "level-chunk-cut-half": lambda store, rng: chunk_cut_half(store / "0", rng),
    "ome-a-string": set_key("attributes", "ome", "nope"),
    "multiscales-empty": set_key(*_MS, []),
    "multiscales-a-string": set_key(*_MS, "0"),
    "datasets-missing": _ms(lambda ms: ms.pop("datasets")),
    "datasets-empty": _ms(lambda ms: ms.update(datasets=[])),
    "dataset-path-missing": _ms(lambda ms: ms["datasets"][0].update(path="nope")),
    "dataset-path-outside": _ms(lambda ms: ms["datasets"][0].update(path="../../..")),
    "axes-missing": _ms(lambda ms: ms.pop("axes")),
    "axes-two": _ms(lambda ms: ms.update(axes=ms["axes"][1:])),
    "axes-numbers": _ms(lambda ms: ms.update(axes=[1, 2, 3])),
    "axes-without-names": _ms(lambda ms: ms.update(axes=[{}, {}, {}])),
    "scale-too-short": _ms(lambda ms: ms["datasets"][0].update(
        coordinateTransformations=[{"type": "scale", "scale": [1]}])),
    "scale-words": _ms(lambda ms: ms["datasets"][0].update(
        coordinateTransformations=[{"type": "scale", "scale": ["a", "b", "c"]}])),
    "transformations-a-string": _ms(lambda ms: ms["datasets"][0].update(coordinateTransformations="x")),
    "omero-channels-numbers": set_key("attributes", "ome", "omero", {"channels": [1, 2, 3]}),
    "mpp-a-word": tilewave_attributes(metadata={"mpp": "small"}),
    "mpp-one-number": tilewave_attributes(metadata={"mpp": [0.5]}),
    "objective-a-word": tilewave_attributes(metadata={"objective_power": "twenty"}),
    "crs-a-number": tilewave_attributes(metadata={"crs": 4326}),
    "channel-names-numbers": tilewave_attributes(metadata={"channel_names": [1, 2, 3]}),
    "origin-one-number": tilewave_attributes(metadata={"origin": [5.0]}),
    "geokeys-words": tilewave_attributes(metadata={"geokeys": {"GeoKeyDirectoryTag": ["a"]}}),
    "metadata-a-list": tilewave_attributes(metadata=[1, 2]),
    "job-record-empty": tilewave_attributes(complete=True),
    "job-record-grid-a-word": tilewave_attributes(complete=True, settings={}, grid="2x2"),
    "job-json-cut": job_json(b'{"settings": {"mod'),
    "job-json-a-list": job_json(b"[1, 2]"),
}

TABLES: dict[str, dict[str, Callable[..., Any]]] = {
    "png": PNG, "png-palette": PALETTE_PNG, "jpeg": JPEG,
    "tiff-strips": {**TIFF_EVERY, **TIFF_MORE, **TIFF_STRUCTURE},
    "tiff-tiles": {**TIFF_EVERY, **TIFF_MORE, **TILED_TIFF}, "ome-tiff": OME_TIFF,
    "bigtiff": {**TIFF_EVERY, **TILED_TIFF}, "svs": {**TIFF_EVERY, **TILED_TIFF, **SVS},
    "landsat": {**TIFF_EVERY, **TILED_TIFF, **GEOTIFF},
    "zarr": ZARR, "ome-zarr": OME_ZARR,
}

#: Damage that reaches the pixels (or lies about them) also runs ``upscale`` on the small
#: sources: the header still reads, so the run gets as far as decoding.
UPSCALE = {
    "png": ("cut-inside-idat", "width-1", "bit-depth-1", "colour-type-grey", "idat-crc-wrong",
            "flip-idat-bytes-0"),
    "png-palette": ("cut-inside-idat", "colour-type-rgb", "trns-garbled", "plte-length-odd"),
    "jpeg": ("cut-at-half", "cut-before-eoi", "size-huge", "dht-garbled", "flip-scan-bytes-0",
             "sof-progressive"),
    "tiff-strips": ("cut-inside-pixels", "cut-last-byte", "compression-jpeg", "bits-per-sample-12",
                    "first-offset-in-header", "first-byte-count-0", "sample-format-float",
                    "planar-separate"),
    "tiff-tiles": ("cut-inside-pixels", "flip-pixel-bytes-0", "flip-pixel-bytes-1",
                   "compression-none", "first-offset-0", "first-byte-count-0", "tile-width-17",
                   "photometric-palette"),
    "ome-tiff": ("ome-size-x-lies", "ome-size-z-lies", "ome-type-lies"),
    "bigtiff": ("cut-inside-pixels", "bits-per-sample-12", "compression-unknown",
                "samples-per-pixel-5", "last-byte-count-huge"),
    "zarr": ("chunk-cut-half", "chunk-garbage", "chunk-empty", "chunk-is-folder",
             "chunk-shape-smaller", "shape-bigger", "shape-smaller", "dtype-int8", "fill-value-a-word"),
    "ome-zarr": ("level-chunk-cut-half", "scale-words"),
}
#: Zarr damage again with tiles of 16 pixels: the 64-pixel chunks are then copied into a
#: working store first (the streaming ingest) instead of read in place by the tiles.
UPSCALE_INGEST = {
    "zarr": ("chunk-cut-half", "chunk-garbage", "chunk-empty"),
    "ome-zarr": ("level-chunk-cut-half",),
}
COMMANDS = {
    "info": ["info", "{input}"],
    "upscale": ["upscale", "{input}", "{output}", "--local", "--quiet"],
    "upscale-ingest": ["upscale", "{input}", "{output}", "--local", "--quiet", "--tile", "16"],
}

# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    source: str
    mutation: str
    command: str  # a key of COMMANDS

    @property
    def id(self) -> str:
        return f"{self.command}-{self.source}-{self.mutation}"

    def rng(self) -> np.random.Generator:
        """The same draws for ``info`` and ``upscale`` of one damaged input."""
        return np.random.default_rng([SEED, zlib.crc32(f"{self.source}/{self.mutation}".encode())])


CASES = [Case(source, name, "info") for source, table in TABLES.items() for name in table] + [
    Case(source, name, command) for command, subset in (("upscale", UPSCALE), ("upscale-ingest", UPSCALE_INGEST))
    for source, names in subset.items() for name in names]
assert all(c.mutation in TABLES[c.source] for c in CASES), "UPSCALE names a mutation no table has"

#: Cases that fail for a reason outside the input modules, marked xfail(strict=True).
OUTSIDE: dict[str, str] = {}


@dataclasses.dataclass
class Result:
    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    problems: list[str]


def _digest(path: pathlib.Path) -> str:
    """Every file's name and bytes, and every folder's name, under ``path``."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode() + (b"/" if p.is_dir() else b"\0"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _make_input(case: Case, originals: pathlib.Path, where: pathlib.Path) -> pathlib.Path:
    source = SOURCES[case.source]
    original = originals / source.file_name
    path = where / source.file_name
    mutate = TABLES[case.source][case.mutation]
    if original.is_dir():
        shutil.copytree(original, path)
        mutate(path, case.rng())
    else:
        path.write_bytes(mutate(original.read_bytes(), case.rng()))
    return path


def _run(case: Case, originals: pathlib.Path, where: pathlib.Path) -> Result:
    where.mkdir(parents=True)
    try:
        path = _make_input(case, originals, where)
    except Exception as exc:  # a mutation that does not fit its source: the test's own bug
        return Result([], None, "", "", 0.0, [f"the mutation failed: {exc!r}"])
    before = _digest(path)
    args = [sys.executable, "-m", "tilewave.cli"] + [
        a.format(input=path, output=where / "out.zarr") for a in COMMANDS[case.command]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIME_LIMIT_S)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    seconds = time.perf_counter() - started
    problems = []
    lines = stderr.strip().splitlines()
    if code is None:
        problems.append(f"still running after {TIME_LIMIT_S} s; killed")
    elif code not in (0, 2):
        problems.append(f"exit code {code}")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("printed a traceback")
    if len(lines) > 1:
        problems.append(f"{len(lines)} lines on stderr")
    if code == 2 and not (lines and lines[0].startswith("tilewave: error: ")):
        problems.append("exit 2 without a 'tilewave: error:' line")
    if _digest(path) != before:
        problems.append("changed its input")
    if not problems:  # keep a failing case's files for a look, drop the rest (the GeoTIFF is 18 MB)
        shutil.rmtree(where)
    return Result(args, code, stdout, stderr, seconds, problems)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The undamaged sources (those from ../shared/data only where present)."""
    folder = tmp_path_factory.mktemp("fuzz-sources")
    for source in SOURCES.values():
        if not source.shared or (SHARED_DATA / source.file_name).exists():
            source.write(folder / source.file_name)
    return folder


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, originals: pathlib.Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[Case, Result]:
    """Runs every selected case, ``CONCURRENCY`` at a time."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_case" and hasattr(item, "callspec")]
    runnable = [c for c in (selected or CASES) if (originals / SOURCES[c.source].file_name).exists()]
    work = tmp_path_factory.mktemp("fuzz-cases")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = {c: pool.submit(_run, c, originals, work / c.id) for c in runnable}
        out = {c: f.result() for c, f in futures.items()}
    request.config.stash[_WALL] = time.perf_counter() - started
    return out


_WALL = pytest.StashKey[float]()


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=OUTSIDE[case.id])] if case.id in OUTSIDE else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: Case, results: dict[Case, Result]) -> None:
    if case not in results:
        pytest.skip(f"{SHARED_DATA / SOURCES[case.source].file_name} is not present beside this checkout")
    r = results[case]
    if r.problems:
        pytest.fail(f"{' '.join(r.args[3:])}: {'; '.join(r.problems)} (exit {r.returncode}, "
                    f"{r.seconds:.1f} s)\n--- stderr ---\n{r.stderr[-3000:]}", pytrace=False)


def test_summary(results: dict[Case, Result], request: pytest.FixtureRequest) -> None:
    codes = collections.Counter(r.returncode for r in results.values())
    commands = collections.Counter(c.command for c in results)
    failed = sum(bool(r.problems) for r in results.values())
    slowest = max(results.items(), key=lambda kv: kv[1].seconds, default=None)
    if os.environ.get("TILEWAVE_FUZZ_REPORT"):  # every case's exit code and stderr, as JSON
        pathlib.Path(os.environ["TILEWAVE_FUZZ_REPORT"]).write_text(json.dumps(
            {c.id: {"exit": r.returncode, "seconds": round(r.seconds, 2), "stderr": r.stderr,
                    "problems": r.problems} for c, r in results.items()}, indent=1))
    print(f"\nfuzz: {len(results)} cases ({', '.join(f'{n} {k}' for k, n in commands.items())}) "
          f"from seed {SEED}, exit codes seen {dict(sorted(codes.items(), key=str))}, "
          f"{failed} with problems ({sum(c.id in OUTSIDE for c in results)} expected: OUTSIDE), "
          f"{request.config.stash.get(_WALL, 0.0):.0f} s"
          + (f"; slowest {slowest[0].id} {slowest[1].seconds:.1f} s" if slowest else ""))
    assert results
