"""Reading a safetensors file's header without torch: tensor names, dtypes, shapes and
the ``__metadata__`` strings, which is all describing a model needs."""

from __future__ import annotations

import json
import struct
from typing import Any

#: The safetensors format caps its JSON header at 100 MB; a larger length is not a header.
MAX_HEADER = 100_000_000


def read_header(path: str) -> dict[str, Any]:
    """The JSON header of a safetensors file: each tensor's dtype, shape and offsets, and
    ``__metadata__``. Read by hand because safetensors' reader imports torch for ``pt``.

    The file starts with the header's length (8 bytes, little-endian), then the header.
    """
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError("shorter than a safetensors header")
        (size,) = struct.unpack("<Q", prefix)
        if size > MAX_HEADER:
            raise ValueError(f"header length {size} is beyond the format's limit")
        raw = f.read(size)
    if len(raw) != size:
        raise ValueError("truncated header")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header
