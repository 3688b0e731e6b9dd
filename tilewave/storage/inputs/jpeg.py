"""JPEG inputs: the header's segments and frame, checked without decoding the pixels
(which :mod:`.whole` decodes once, whole), and the quality of its tables."""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from ...errors import InputError
from .. import location
from ..compression import jpeg_compression
from .base import InputImage, _short

_JPEG_MAGIC = b"\xff\xd8\xff"


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
    return InputImage(path=path, format="jpeg", shape=(channels, height, width),
                      dtype=np.dtype("uint8"), chunks=None, levels=((height, width),),
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
