"""Opening input images lazily, checking them, and describing them.

:func:`open_input` reads only headers and metadata: TIFF family files through tifffile
(series 0, level 0 of a pyramid), PNG and JPEG through their headers, Zarr arrays and
OME-Zarr images in place. :func:`lazy_pixels` then gives a dask array over the pixels,
read chunk by chunk (TIFF, Zarr) for the streaming ingest.

Each format is read by its own module (:mod:`.tiff` with :mod:`.tiff_metadata`,
:mod:`.png`, :mod:`.jpeg`, :mod:`.zarr`); :mod:`.base` holds :class:`InputImage` and the
checks, :mod:`.whole` the decoding of PNG and JPEG files.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import InputError, InputNotFoundError
from .. import location
from .base import SUPPORTED_DTYPES, InputImage, check_supported
from .base import _short as _short
from .jpeg import _JPEG_MAGIC, _open_jpeg
from .png import _PNG_MAGIC, _open_png
from .tiff import _TIFF_MAGIC, _open_tiff, _TiffReader
from .tiff import _tiff_axes as _tiff_axes
from .tiff import _tifffile_problems as _tifffile_problems
from .whole import _decode_whole
from .zarr import _open_zarr, _WindowedReader

# ``_short``, ``_tiff_axes`` and ``_tifffile_problems`` (imported as themselves) stay
# importable from here for the storage modules that use them.

__all__ = ["SUPPORTED_DTYPES", "InputImage", "check_supported", "lazy_pixels", "open_input"]


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
        if location.is_local(path) and not os.access(path, os.R_OK):
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


def lazy_pixels(image: InputImage, chunk: int, level: int = 0) -> Any:
    """A dask array ``(c, y, x)`` over the input's full-resolution pixels (or those of its
    pyramid ``level``, for TIFF inputs that have one).

    TIFF and Zarr inputs are read chunk by chunk as dask computes; PNG and JPEG files are
    not tiled formats and are decoded once, whole (their size is bounded by the formats).
    """
    import dask.array as da

    if image.array is not None:
        from ..arrays import ArrayReader

        reader = ArrayReader(image.array)
        return da.from_array(_WindowedReader(reader), chunks=(image.channels, chunk, chunk),
                             asarray=True, fancy=False)
    if image.format in ("png", "jpeg"):
        pixels = _decode_whole(image)
        return da.from_array(pixels, chunks=(image.channels, chunk, chunk))
    return da.from_array(_TiffReader(image.path, level), chunks=(image.channels, chunk, chunk),
                         asarray=True, fancy=False)
