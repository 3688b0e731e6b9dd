"""RRDBNet, the generator of ESRGAN and Real-ESRGAN (Wang et al., 2018 and 2021).

A body of residual-in-residual dense blocks at input resolution, then two nearest x2
upsamplings, each followed by a 3x3 convolution and a leaky ReLU, and two output
convolutions. Inputs and outputs are RGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the block input and all earlier outputs."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(features + i * growth, growth if i < 4 else features, 3, padding=1)
            for i in range(5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in self.convs[:4]:
            seen.append(_lrelu(conv(torch.cat(seen, dim=1))))
        return self.convs[4](torch.cat(seen, dim=1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks with a scaled residual around them."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.dense = nn.ModuleList(DenseBlock(features, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.dense:
            out = block(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """The x4 RRDB generator (two x2 nearest-neighbour upsamplings)."""

    scale = 4

    def __init__(self, features: int = 64, growth: int = 32, blocks: int = 23, channels: int = 3):
        super().__init__()
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.body = nn.ModuleList(RRDB(features, growth) for _ in range(blocks))
        self.body_tail = nn.Conv2d(features, features, 3, padding=1)
        self.up1 = nn.Conv2d(features, features, 3, padding=1)
        self.up2 = nn.Conv2d(features, features, 3, padding=1)
        self.hr = nn.Conv2d(features, features, 3, padding=1)
        self.out = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        body = feat
        for block in self.body:
            body = block(body)
        feat = feat + self.body_tail(body)
        feat = _lrelu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.out(_lrelu(self.hr(feat)))

    def convolutions(self) -> list[nn.Conv2d]:
        """The convolutions in the order the ncnn graph runs them."""
        convs = [self.head]
        for rrdb in cast("Iterable[RRDB]", self.body):
            for block in cast("Iterable[DenseBlock]", rrdb.dense):
                convs += list(cast("Iterable[nn.Conv2d]", block.convs))
        return convs + [self.body_tail, self.up1, self.up2, self.hr, self.out]
