"""What every input reader shares: :class:`InputImage`, what tilewave knows about an input
before reading any pixel; :func:`check_supported`, whether tilewave can upscale it; and
the short form of an error that a one-line message quotes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError
from .. import location
from ..arrays import ArraySpec
from ..compression import Compression

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))


@dataclass(kw_only=True, frozen=True)
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
