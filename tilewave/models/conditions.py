"""What a conditioned model is told about its input besides the pixels.

A scan-aware model reads ``jpeg_quality``: how strongly the input was JPEG-compressed,
as the job reads it from the file's own quantisation tables
(:mod:`tilewave.storage.compression`). It enters the network as one constant input
channel, ``(100 - quality) / 100`` (0 for an input that is not JPEG-compressed), so a
tile computes the same thing wherever it is cut, and the channel's weights, started at
zero, leave the model it was fine-tuned from unchanged until training moves them.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The one condition there is: the input's JPEG quality (None: not JPEG-compressed).
JPEG_QUALITY = "jpeg_quality"
CONDITIONS = (JPEG_QUALITY,)


def jpeg_level(quality: int | None) -> float:
    """The channel's value for an input JPEG-compressed at ``quality`` (1-100), or not."""
    return 0.0 if quality is None else (100 - min(max(int(quality), 1), 100)) / 100


def levels(names: tuple[str, ...], given: Mapping[str, object] | None) -> list[float]:
    """The channel values of a model conditioned on ``names``, from what the job knows."""
    given = given or {}
    out = []
    for name in names:
        if name != JPEG_QUALITY:
            raise ValueError(f"unknown condition {name!r}")
        value = given.get(name)
        out.append(jpeg_level(value if isinstance(value, int) else None))
    return out
