"""How an input's pixels were compressed, and for JPEG, at what quality.

A JPEG stream carries the quantisation tables its encoder used (DQT segments). Nearly
every encoder (libjpeg and libjpeg-turbo, Pillow, OpenCV, GDAL, scanners' libraries)
scales the two example tables of the JPEG standard (ITU-T T.81, Annex K) with the
Independent JPEG Group's formula, so the quality setting can be read back by finding the
quality whose scaled luminance table is the file's: exactly, for those encoders, and to
the nearest match otherwise. TIFF files keep the tables in their ``JPEGTables`` tag or in
each tile's stream.

Only headers and one tile's first bytes are read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: The JPEG standard's example luminance table (Annex K, Table K.1), in natural order.
_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
#: Natural-order index of each position of the zigzag scan, in which DQT stores tables.
_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)
#: TIFF compression codes, as names.
TIFF_COMPRESSION = {1: "none", 5: "LZW", 6: "old-style JPEG", 7: "JPEG", 8: "deflate",
                    32946: "deflate", 34712: "JPEG 2000", 33003: "JPEG 2000", 33005: "JPEG 2000",
                    50000: "zstd", 34887: "LERC", 50001: "WebP", 32773: "PackBits", 34925: "LZMA"}


@dataclass(frozen=True, kw_only=True)
class Compression:
    """What ``tilewave info`` says about an input's compression."""

    #: ``JPEG``, ``deflate``, ``none``, ``PNG``, ...
    kind: str
    #: For JPEG: the IJG quality (1-100) whose tables are the file's, or the nearest.
    quality: int | None = None
    #: The tables are exactly the IJG ones at ``quality``.
    exact: bool = False
    #: For JPEG: ``YCbCr 4:2:0``, ``YCbCr 4:4:4``, ``RGB``, ``grey`` ...
    colour: str | None = None

    @property
    def lossy_jpeg(self) -> bool:
        return self.kind == "JPEG"

    def describe(self) -> str:
        if self.kind != "JPEG":
            return self.kind
        parts = []
        if self.quality is not None:
            parts.append(f"quality {self.quality}" + ("" if self.exact else " (nearest IJG tables)"))
        if self.colour:
            parts.append(self.colour)
        return "JPEG" + (f" ({', '.join(parts)})" if parts else "")


def ijg_table(quality: int, base: tuple[int, ...] = _LUMINANCE) -> list[int]:
    """``base`` scaled to ``quality`` as libjpeg does (baseline: entries capped at 255)."""
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((v * scale + 50) // 100, 1), 255) for v in base]


def _segments(stream: bytes) -> Iterator[tuple[int, bytes]]:
    """The ``(marker, body)`` of each header segment of a JPEG stream (or of a TIFF's
    ``JPEGTables``), up to the start of the scan; bytes that are no marker end the walk."""
    pos = 2 if stream[:2] == b"\xff\xd8" else 0
    while pos + 4 <= len(stream) and stream[pos] == 0xFF:
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a segment
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return
        (length,) = struct.unpack(">H", stream[pos + 2 : pos + 4])
        yield marker, stream[pos + 4 : pos + 2 + length]
        pos += 2 + length


def quantisation_tables(stream: bytes) -> dict[int, list[int]]:
    """The DQT tables of a JPEG stream (or of a TIFF's ``JPEGTables``), by table id, in
    natural order."""
    tables: dict[int, list[int]] = {}
    for marker, body in _segments(stream):
        if marker != 0xDB:
            continue
        i = 0
        while i < len(body):
            precision, table_id = body[i] >> 4, body[i] & 15
            size = 128 if precision else 64
            raw = body[i + 1 : i + 1 + size]
            if len(raw) < size:
                break
            values = struct.unpack(">64H", raw) if precision else tuple(raw)
            natural = [0] * 64
            for k, v in enumerate(values):
                natural[_ZIGZAG[k]] = v
            tables[table_id] = natural
            i += 1 + size
    return tables


def estimate_quality(luminance: list[int]) -> tuple[int, bool]:
    """The IJG quality whose luminance table is closest to ``luminance`` (natural order),
    and whether it matches exactly. Ties go to the higher quality."""
    best, best_error = 100, None
    for q in range(100, 0, -1):
        error = sum(abs(a - b) for a, b in zip(ijg_table(q), luminance))
        if best_error is None or error < best_error:
            best, best_error = q, error
    return best, best_error == 0


def _sampling(stream: bytes) -> tuple[list[tuple[int, int, int]], bool]:
    """The frame's components ``(id, h, v)`` and whether an Adobe marker says RGB."""
    adobe_rgb = False
    for marker, body in _segments(stream):
        if marker == 0xEE and body[:5] == b"Adobe" and len(body) >= 12:
            adobe_rgb = body[11] == 0
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(body) >= 6:
            count = body[5]
            parts = [(body[6 + 3 * k], body[7 + 3 * k] >> 4, body[7 + 3 * k] & 15)
                     for k in range(count) if 8 + 3 * k < len(body) + 1]
            return parts, adobe_rgb
    return [], adobe_rgb


def colour_of(stream: bytes, photometric_rgb: bool | None = None) -> str | None:
    """``grey``, ``RGB`` or ``YCbCr 4:x:x`` from a stream's frame (and a TIFF's
    photometric interpretation, which says RGB for Aperio's ``JPEG/RGB``)."""
    parts, adobe_rgb = _sampling(stream)
    if not parts:
        return None
    if len(parts) == 1:
        return "grey"
    ids = bytes(p[0] for p in parts[:3])
    if photometric_rgb or adobe_rgb or ids == b"RGB":
        return "RGB" + ("" if all(p[1:] == (1, 1) for p in parts) else " (subsampled)")
    (h0, v0), rest = parts[0][1:], [p[1:] for p in parts[1:]]
    if all(r == (h0, v0) for r in rest):
        return "YCbCr 4:4:4"
    if (h0, v0) == (2, 2) and all(r == (1, 1) for r in rest):
        return "YCbCr 4:2:0"
    if (h0, v0) == (2, 1) and all(r == (1, 1) for r in rest):
        return "YCbCr 4:2:2"
    return "YCbCr (other subsampling)"


def jpeg_compression(tables_stream: bytes, frame_stream: bytes | None = None,
                     photometric_rgb: bool | None = None) -> Compression:
    """The JPEG facts of a stream whose tables are in ``tables_stream`` and frame header
    in ``frame_stream`` (the same stream for a JPEG file)."""
    tables = quantisation_tables(tables_stream)
    if 0 not in tables and frame_stream is not None:
        tables = quantisation_tables(frame_stream) or tables
    quality, exact = estimate_quality(tables[0]) if 0 in tables else (None, False)
    colour = colour_of(frame_stream if frame_stream is not None else tables_stream, photometric_rgb)
    return Compression(kind="JPEG", quality=quality, exact=exact, colour=colour)
