"""Gaussian noise keyed by position: every value is a pure function of
``(seed, step, channel, y, x)`` in global output coordinates.

A stream generator (``torch.randn`` with a seed) gives values that depend on the order
they are drawn in, so a tiled sampler would produce different noise for every tile
size, worker count, retry or resume. Here each value is a hash of its coordinates
instead (a counter-based generator), so any window of the noise field is the same
wherever and whenever it is drawn: a tile, the whole image, a resumed run.

The hash is SplitMix64's finaliser (Steele, Lea and Flood, OOPSLA 2014), applied to the
coordinates folded in one at a time; the 64 bits of one hash give two 32-bit uniforms,
turned into one standard normal by the Box-Muller transform.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (arithmetic wraps modulo 2**64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _fold(key: np.ndarray, value: np.ndarray | int) -> np.ndarray:
    """Fold one more coordinate into a key."""
    return _mix(key ^ _mix(np.asarray(value, dtype=np.int64).astype(np.uint64).reshape(-1)))


def position_noise(seed: int, step: int, channels: int, y0: int, y1: int, x0: int, x1: int
                   ) -> np.ndarray:
    """Standard normal noise of the window ``[y0, y1) x [x0, x1)`` of step ``step``,
    as a ``(channels, y1 - y0, x1 - x0)`` float32 array.

    Coordinates may be negative or lie past the image (padding draws noise too).
    """
    key = _fold(_fold(np.zeros(1, np.uint64), seed), step)  # 1-element arrays: wrapping
    rows = _fold(key, np.arange(y0, y1))                     # without overflow warnings
    # The column enters raw (a key XOR a small number collides only when two row keys
    # differ in their low bits alone), then two rounds spread it over all 64 bits.
    cols = np.arange(x0, x1, dtype=np.int64).astype(np.uint64)
    out = np.empty((channels, y1 - y0, x1 - x0), np.float32)
    for c in range(channels):
        h = _mix(_mix(_fold(rows, c)[:, None] ^ cols[None, :]))
        u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32  # in (0, 1)
        u2 = ((h & _LOW32).astype(np.float64) + 0.5) / 2.0**32
        out[c] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out
