"""What a real scan does to an image, as a low-resolution input made from a clean one.

Whole-slide scanners store JPEG tiles (Aperio: quality 30 to 90, often in RGB rather than
YCbCr, so every channel gets the luminance table), photos carry YCbCr JPEG with 4:2:0 or
4:4:4 chroma, and sensors add noise before compression. Satellite scenes are 16-bit
measurements that fill a small part of their range. :class:`ScanDegradation` draws one
such history per crop; the functions below are its steps, kept separate so that the
benchmarks degrade their test images with exactly the same code.

Everything works on ``(c, h, w)`` float32 arrays in unit space (the integer maximum is
1.0), the space tilewave's models see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: How JPEG stores colour: YCbCr with chroma halved both ways (``420``), YCbCr at full
#: resolution (``444``), or the RGB channels as they are, each with the luminance table
#: (``rgb``, Aperio's ``JPEG/RGB``).
Chroma = Literal["420", "444", "rgb"]
CHROMAS: tuple[Chroma, ...] = ("420", "444", "rgb")
Resample = Literal["bicubic", "box"]


def box_downscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """The mean of every ``scale`` x ``scale`` block (sizes cut to whole blocks): what a
    sensor with ``scale`` times larger pixels measures."""
    c, h, w = pixels.shape
    h, w = h // scale * scale, w // scale * scale
    blocks = pixels[:, :h, :w].reshape(c, h // scale, scale, w // scale, scale)
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def bicubic_downscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Antialiased bicubic downscaling (torch's), clipped to [0, 1]: the degradation the
    clean models were trained to invert."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    out = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True,
                        align_corners=False)
    return out[0].clamp(0, 1).numpy()


def downscale(pixels: np.ndarray, scale: int, kind: Resample) -> np.ndarray:
    return box_downscale(pixels, scale) if kind == "box" else bicubic_downscale(pixels, scale)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int, chroma: Chroma) -> bytes:
    """``(c, h, w)`` unit-space pixels (1 or 3 channels) as a baseline JPEG, quantised
    with the IJG tables scaled to ``quality`` (what libjpeg, Pillow and scanners use)."""
    import imagecodecs

    data = to_uint8(pixels)
    data = data[0] if data.shape[0] == 1 else np.ascontiguousarray(data.transpose(1, 2, 0))
    if data.ndim == 2 or chroma == "444":
        return bytes(imagecodecs.jpeg8_encode(data, level=quality, subsampling="444"))
    if chroma == "rgb":
        return bytes(imagecodecs.jpeg8_encode(data, level=quality, colorspace="RGB",
                                              outcolorspace="RGB"))
    return bytes(imagecodecs.jpeg8_encode(data, level=quality, subsampling="420"))


def jpeg_roundtrip(pixels: np.ndarray, quality: int, chroma: Chroma) -> np.ndarray:
    """``pixels`` after JPEG compression at ``quality``, decoded, in unit space."""
    import imagecodecs

    decoded = imagecodecs.jpeg8_decode(jpeg_bytes(pixels, quality, chroma))
    decoded = decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
    return decoded.astype(np.float32) / 255.0


@dataclass(frozen=True, kw_only=True)
class Degraded:
    """One training pair's input, and what was done to make it."""

    #: The low-resolution input, ``(c, h / scale, w / scale)`` in unit space.
    lr: np.ndarray
    #: The high-resolution target after the same range change as the input.
    hr: np.ndarray
    #: The factor the crop's range was multiplied by (1 for 8-bit histories): losses are
    #: divided by it, so a dim 16-bit crop counts as much as a bright one.
    gain: float
    history: str
    #: The JPEG quality the input was compressed at (None: not compressed), which a
    #: conditioned model is told as the job tells it of a scan's.
    quality: int | None = None


@dataclass(frozen=True, kw_only=True)
class ScanDegradation:
    """The distribution a scan-aware model is trained on: each crop gets a downscaling,
    maybe a 16-bit range, maybe sensor noise, and maybe JPEG."""

    scale: int = 2
    #: Probability that a crop is not JPEG-compressed (clean or noisy only).
    clean: float = 0.35
    quality: tuple[int, int] = (30, 95)
    chromas: tuple[Chroma, ...] = CHROMAS
    #: Probability of box (sensor-like) rather than bicubic downscaling. Both are kept
    #: rare: a model cannot tell them apart, and each costs the other sharpness (at 0.3
    #: box and 0.25 noise, clean bicubic inputs lost 0.25 dB more in a 600-step trial).
    box: float = 0.12
    #: Probability and largest standard deviation (unit space) of Gaussian sensor noise.
    noisy: float = 0.12
    noise_max: float = 0.006
    #: Probability of a 16-bit history: the crop's range squeezed to a random part of
    #: [0, 1] (gain 0.03 to 0.5) and quantised to 16 bits, never JPEG-compressed.
    dim: float = 0.15

    def draw(self, hr: np.ndarray, rng: random.Random) -> Degraded:
        """One degraded input for the ``(c, h, w)`` unit-space crop ``hr``."""
        steps = []
        gain = 1.0
        dim = rng.random() < self.dim
        if dim:
            gain = rng.uniform(0.03, 0.5)
            offset = rng.uniform(0.0, 1.0 - gain)
            hr = (hr * gain + offset).astype(np.float32)
            steps.append(f"range x{gain:.2f}+{offset:.2f}")
        kind: Resample = "box" if rng.random() < self.box else "bicubic"
        lr = downscale(hr, self.scale, kind)
        steps.append(kind)
        if rng.random() < self.noisy:
            sigma = rng.uniform(0.0, self.noise_max) * (gain if dim else 1.0)
            noise = np.random.default_rng(rng.getrandbits(63)).standard_normal(lr.shape)
            lr = np.clip(lr + sigma * noise.astype(np.float32), 0.0, 1.0)
            steps.append(f"noise {sigma:.4f}")
        quality = None
        if dim:
            lr = np.rint(lr * 65535.0).astype(np.float32) / 65535.0
        elif rng.random() >= self.clean:
            quality = rng.randint(*self.quality)
            chroma = rng.choice(self.chromas) if lr.shape[0] == 3 else "444"
            lr = jpeg_roundtrip(lr, quality, chroma)
            steps.append(f"jpeg q{quality} {chroma}")
        else:
            lr = np.rint(lr * 255.0).astype(np.float32) / 255.0
        return Degraded(lr=lr, hr=hr, gain=gain, history=", ".join(steps), quality=quality)
