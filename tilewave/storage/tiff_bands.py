"""Reading a TIFF's level 0 in row bands, top to bottom, each strip or tile decoded once.

Reading a striped TIFF window by window decodes a strip once for every window that
crosses it, so a single-strip file is decoded once per column of chunks. Here the image
is read in full-width bands instead: the strips (or rows of tiles) a band needs are
decoded once, and the last one, when it reaches into the next band, is kept for it.
Uncompressed strips are not decoded at all: the rows a band needs are mapped from the
file (local files) or read (object stores), so a single-strip file costs one band of
memory rather than the whole image.

:meth:`TiffBands.open` returns None for layouts this does not cover (volumes, subsampled
pixels other than JPEG's, bit-packed pixels, pages that do not map onto channels); those are read window by
window as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from . import location
from .inputs import _short, _tiff_axes, _tifffile_problems

#: JPEG compressions, whose segments need the page's tables and header to decode.
_JPEG_COMPRESSIONS = (6, 7, 33007, 34892)


@dataclass(frozen=True)
class _Plane:
    """One group of output channels stored as its own set of segments."""

    page: Any
    #: Index of the plane's first segment in the page's offsets and byte counts.
    first: int
    #: The output channels it holds.
    channels: slice


#: A decoded (or mapped) part of a row of segments: the output channels, first column
#: and first image row it covers, and its pixels ``(rows, columns, contig samples)``.
_Piece = tuple[slice, int, int, np.ndarray]


def decode_segment(page: Any, data: bytes | None, index: int, args: dict[str, Any]
                   ) -> np.ndarray | None:
    """Strip or tile ``index`` of ``page`` decoded by tifffile: ``(rows, columns, contig
    samples)``, tiles padded to their full size; None for a segment the file leaves empty."""
    decoded, _, _ = page.keyframe.decode(data, index, **args)
    return None if decoded is None else decoded[0]


class TiffBands:
    """Full-width row bands ``(c, rows, width)`` of a TIFF's level 0, top to bottom.

    Each band is ``band_rows`` high (the last one may be lower). Iterate once; close (or
    use as a context manager) to release the file.
    """

    def __init__(self, path: str, handle: Any, tiff: Any, planes: list[_Plane],
                 shape: tuple[int, int, int], dtype: np.dtype, band_rows: int):
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.band_rows = band_rows
        self._handle = handle
        self._tiff = tiff
        self._planes = planes
        key = planes[0].page.keyframe
        self._tiled = bool(key.is_tiled)
        #: Image rows per row of segments (a strip, or a row of tiles).
        self._unit = int(key.tilelength if self._tiled else min(key.rowsperstrip or shape[1], shape[1]))
        self._unit_width = int(key.tilewidth) if self._tiled else shape[2]
        self._columns = math.ceil(shape[2] / self._unit_width)
        self._contig = int(key.samplesperpixel) if key.planarconfig == 1 else 1
        self._raw = _is_raw(key, dtype)
        self._file_dtype = np.dtype(tiff.byteorder + dtype.char)
        self._args: dict[str, Any] = {"_fullsize": self._tiled}
        if key.compression in _JPEG_COMPRESSIONS:
            self._args["jpegheader"] = key.jpegheader
        #: The last row of segments decoded, kept while the next band still needs it.
        self._kept: tuple[int, list[_Piece]] | None = None

    @property
    def uncompressed(self) -> bool:
        """The file stores its pixels uncompressed (and they are mapped, not decoded)."""
        return self._raw

    @classmethod
    def open(cls, path: str, band_rows: int) -> TiffBands | None:
        """Bands of the TIFF at ``path``, or None where its layout is not covered."""
        import tifffile

        handle = location.open_file(path)
        try:
            with _tifffile_problems():
                tiff = tifffile.TiffFile(handle)
                layout = _layout(tiff, path)
        except Exception:
            handle.close()
            raise
        if layout is None:
            tiff.close()
            handle.close()
            return None
        planes, shape, dtype = layout
        return cls(path, handle, tiff, planes, shape, dtype, band_rows)

    def __enter__(self) -> TiffBands:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._kept = None
        self._tiff.close()
        self._handle.close()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, band)`` for every band, top to bottom."""
        c, height, width = self.shape
        for y0 in range(0, height, self.band_rows):
            y1 = min(height, y0 + self.band_rows)
            band = np.empty((c, y1 - y0, width), self.dtype)
            for unit in range(y0 // self._unit, math.ceil(y1 / self._unit)):
                lo, hi = max(y0, unit * self._unit), min(y1, (unit + 1) * self._unit)
                for channels, x0, top, pixels in self._rows(unit, lo, hi):
                    part = pixels[lo - top:hi - top, : width - x0]
                    band[channels, lo - y0:hi - y0, x0:x0 + part.shape[1]] = part.transpose(2, 0, 1)
            yield y0, band

    # ------------------------------------------------------------------ segments

    def _rows(self, unit: int, lo: int, hi: int) -> list[_Piece]:
        """Pieces covering image rows ``lo:hi`` of segment row ``unit``."""
        if self._raw:
            return self._raw_rows(unit, lo, hi)
        if self._kept is None or self._kept[0] != unit:
            self._kept = None  # before decoding the next: one row of segments at a time
            self._kept = (unit, self._decode_unit(unit))
        pieces = self._kept[1]
        if hi >= min(self.shape[1], (unit + 1) * self._unit):
            self._kept = None  # its last rows: no later band needs it
        return pieces

    def _decode_unit(self, unit: int) -> list[_Piece]:
        """Decode every segment of segment row ``unit``, in every plane, once."""
        top = unit * self._unit
        rows = min(self._unit, self.shape[1] - top)
        pieces: list[_Piece] = []
        for plane in self._planes:
            page = plane.page
            first = plane.first + unit * self._columns
            indices = list(range(first, first + self._columns))
            offsets = [page.dataoffsets[i] for i in indices]
            counts = [page.databytecounts[i] for i in indices]
            args = dict(self._args)
            if "jpegheader" in args:
                args["jpegtables"] = page.jpegtables
            fh = self._tiff.filehandle
            try:
                for data, index in fh.read_segments(offsets, counts, indices, sort=False, flat=True):
                    x0 = (index - first) * self._unit_width
                    pixels = decode_segment(page, data, index, args)
                    if pixels is None:  # the file leaves it empty: zeros, as tifffile reads it
                        pixels = np.zeros((rows, min(self._unit_width, self.shape[2] - x0),
                                           self._contig), self.dtype)
                    elif (pixels.shape[0] < rows or pixels.shape[2] != self._contig
                          or pixels.shape[1] < min(self._unit_width, self.shape[2] - x0)):
                        raise ValueError(f"a segment decodes to shape {pixels.shape}")
                    pieces.append((plane.channels, x0, top, pixels))
            except InputError:
                raise
            except Exception as exc:  # the codecs raise their own error types
                raise self._damaged(top, top + rows, exc) from None
        return pieces

    def _raw_rows(self, unit: int, lo: int, hi: int) -> list[_Piece]:
        """Image rows ``lo:hi`` of uncompressed strip ``unit``, mapped (local files) or
        read (object stores) without decoding the rest of the strip."""
        width, row_bytes = self.shape[2], self.shape[2] * self._contig * self.dtype.itemsize
        top = unit * self._unit
        rows = min(self._unit, self.shape[1] - top)
        pieces: list[_Piece] = []
        for plane in self._planes:
            index = plane.first + unit
            offset = int(plane.page.dataoffsets[index])
            count = int(plane.page.databytecounts[index])
            if offset <= 0 or count <= 0:  # the file leaves it empty: zeros
                pixels = np.zeros((hi - lo, width, self._contig), self.dtype)
            elif count < rows * row_bytes:
                raise self._damaged(top, top + rows, ValueError(
                    f"the strip holds {count} bytes of its {rows * row_bytes}"))
            else:
                start, size = offset + (lo - top) * row_bytes, (hi - lo) * row_bytes
                try:
                    pixels = self._read(start, size).reshape(hi - lo, width, self._contig)
                except (OSError, ValueError) as exc:  # a file shorter than its header says
                    raise self._damaged(top, top + rows, exc) from None
            pieces.append((plane.channels, 0, lo, pixels))
        return pieces

    def _read(self, start: int, size: int) -> np.ndarray:
        """``size`` bytes of pixels at ``start`` of the file, in its byte order."""
        if location.is_local(self.path):
            # A mapping of just these bytes, dropped with the band: mapping the whole file
            # would leave every page read resident in this process until the end.
            return np.memmap(self.path, self._file_dtype, "r", offset=start,
                             shape=(size // self._file_dtype.itemsize,))
        fh = self._tiff.filehandle
        with fh.lock:
            fh.seek(start)
            data = fh.read(size)
        if len(data) < size:
            raise ValueError("the file ends inside its pixels")
        return np.frombuffer(data, self._file_dtype)

    def _damaged(self, y0: int, y1: int, exc: BaseException) -> InputError:
        return InputError(
            f"input {self.path!r} is damaged: its pixels in rows {y0}:{y1}, columns "
            f"0:{self.shape[2]} cannot be decoded ({_short(exc)}); copy the complete file again"
        )


def _is_raw(page: Any, dtype: np.dtype) -> bool:
    """Strips whose bytes are the pixels, in rows, as they are stored (byte order aside)."""
    return bool(not page.is_tiled and page.compression == 1 and page.predictor == 1
                and page.fillorder == 1 and not page.is_subsampled
                and page.bitspersample == 8 * dtype.itemsize)


def _layout(tiff: Any, path: str) -> tuple[list[_Plane], tuple[int, int, int], np.dtype] | None:
    """The planes of series 0, level 0, that make up its channels; None where the layout
    is not one this reads (the window-by-window path reads those)."""
    if not tiff.series:
        return None
    series = tiff.series[0]
    letters, _ = _tiff_axes(series.axes, series.shape, path)
    pages = list(series.levels[0].pages) if series.levels else []
    if not pages or any(p is None for p in pages):
        return None
    key = pages[0].keyframe
    dtype = np.dtype(series.dtype)
    # tifffile decodes chroma-subsampled pixels only from JPEG (the usual SVS tiles).
    subsampled = key.is_subsampled and key.compression not in _JPEG_COMPRESSIONS
    if (key.dtype is None or np.dtype(key.dtype) != dtype or subsampled
            or key.imagedepth != 1 or getattr(key, "tiledepth", 1) != 1
            or key.sampleformat == 5 or key.bitspersample not in (8, 16, 32, 64)):
        return None
    separate, _, height, width, contig = key.shaped
    if any(tuple(p.keyframe.shaped) != tuple(key.shaped) or p.keyframe.hash != key.hash
           for p in pages):
        return None
    if len(pages) == 1:
        if separate > 1 and contig > 1:
            return None
        channels = separate * contig
        planes = [_Plane(pages[0], s * _segments_per_plane(key), slice(s, s + 1))
                  for s in range(separate)] if separate > 1 else [_Plane(pages[0], 0, slice(None))]
    else:
        # One page per channel (an OME-TIFF's CYX, say): only where nothing else varies.
        if letters != "cyx" or separate * contig != 1 or len(pages) != math.prod(series.shape[:-2]):
            return None
        channels = len(pages)
        planes = [_Plane(p, 0, slice(i, i + 1)) for i, p in enumerate(pages)]
    for plane in planes:
        n = len(plane.page.dataoffsets)
        if n != len(plane.page.databytecounts) or n < plane.first + _segments_per_plane(key):
            return None
    return planes, (channels, int(height), int(width)), dtype


def _segments_per_plane(page: Any) -> int:
    """Strips, or tiles, of one plane of ``page``."""
    if page.is_tiled:
        return math.ceil(page.imagelength / page.tilelength) * math.ceil(page.imagewidth / page.tilewidth)
    rows = min(page.rowsperstrip or page.imagelength, page.imagelength)
    return math.ceil(page.imagelength / rows)
