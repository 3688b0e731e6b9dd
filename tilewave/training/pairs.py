"""Training pairs: a high-resolution crop and the low-resolution input a degradation
makes of it, batched as tensors."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.conditions import jpeg_level
from .crops import CropSource, augment, pick
from .degradation import Degraded

#: Makes a crop's low-resolution input: a :class:`~.degradation.ScanDegradation`'s
#: ``draw``, or a fixed one (``tilewave tune``).
Degrade = Callable[[np.ndarray, random.Random], Degraded]
#: The largest weight of a crop's loss: a dim crop (gain 0.03) would otherwise weigh 33
#: bright ones, and one such batch can throw the network off (seen: fine-tuning SPAN
#: diverged after 600 steps).
MAX_WEIGHT = 8.0


@dataclass(frozen=True)
class Batch:
    #: ``(n, 3, core + 2m, core + 2m)`` inputs, margin included.
    lr: torch.Tensor
    #: ``(n, 3, core * s, core * s)`` targets of the cores.
    hr: torch.Tensor
    #: ``(n,)`` weights of each crop's loss (the inverse of its range's gain).
    weight: torch.Tensor
    #: ``(n, 1)`` JPEG levels of the inputs (:func:`~tilewave.models.conditions.jpeg_level`),
    #: for a conditioned network.
    condition: torch.Tensor


class PairSampler:
    """Draws batches of ``core``-pixel crops with a ``margin`` (low-resolution pixels)."""

    def __init__(self, sources: Sequence[CropSource], degrade: Degrade, scale: int, core: int,
                 margin: int):
        self.sources, self.degrade = list(sources), degrade
        self.scale, self.core, self.margin = scale, core, margin

    def pair(self, rng: random.Random) -> tuple[np.ndarray, np.ndarray, float, float]:
        s, m, core = self.scale, self.margin, self.core
        hr = augment(pick(self.sources, rng).crop((core + 2 * m) * s, rng), rng)
        made = self.degrade(hr, rng)
        target = made.hr[:, m * s : (m + core) * s, m * s : (m + core) * s]
        return (made.lr, np.ascontiguousarray(target), min(1.0 / made.gain, MAX_WEIGHT),
                jpeg_level(made.quality))

    def batch(self, n: int, rng: random.Random) -> Batch:
        pairs = [self.pair(rng) for _ in range(n)]
        return Batch(torch.from_numpy(np.stack([p[0] for p in pairs])),
                     torch.from_numpy(np.stack([p[1] for p in pairs])),
                     torch.tensor([p[2] for p in pairs], dtype=torch.float32),
                     torch.tensor([[p[3]] for p in pairs], dtype=torch.float32))
