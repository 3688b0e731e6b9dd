"""PNG inputs: the header and the chunks before the pixel data, checked without decoding
the pixels (which :mod:`.whole` decodes once, whole)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from ...errors import InputError
from .. import location
from ..compression import Compression
from .base import InputImage

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

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
    return InputImage(path=path, format="png", shape=(channels, height, width), dtype=dtype,
                      chunks=None, levels=((height, width),),
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
