"""PNG and JPEG pixels, decoded once and whole: neither format is tiled, and the formats
bound their size."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

from ...errors import InputError
from .. import location
from .base import InputImage, _short
from .jpeg import _jpeg_file


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
