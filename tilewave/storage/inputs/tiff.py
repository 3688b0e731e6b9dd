"""TIFF family inputs: TIFF, BigTIFF, OME-TIFF, SVS and GeoTIFF files, through tifffile.

:func:`_open_tiff` describes series 0 (level 0 of a pyramid) and refuses damaged or
truncated files; :class:`_TiffReader` reads windows of a level for dask. What tifffile
logs while parsing is collected by :func:`_tifffile_problems` rather than printed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...errors import InputError
from .. import location
from ..compression import TIFF_COMPRESSION, Compression, jpeg_compression
from .base import InputImage, _short
from .tiff_metadata import _tiff_metadata

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
    return InputImage(path=path, format=fmt, shape=(c, shape_by_axis["y"], shape_by_axis["x"]),
                      dtype=dtype, chunks=(int(chunks[0]), int(chunks[1])), levels=levels,
                      metadata=metadata, compression=compression)


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
