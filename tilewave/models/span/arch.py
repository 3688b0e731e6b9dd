"""SPAN (Swift Parameter-free Attention Network; Wan et al., 2024) in its inference form.

During training every 3x3 convolution of SPAN is a sum of three branches; they fold into
one 3x3 convolution for inference, which is what the shipped ncnn files hold. This module
is that folded network, laid out after the ncnn graph:

    x -> (x - mean) * 255 -> head -> 6 blocks -> tail
    fuse(concat[head out, tail out, block 1 out, block 6's first activation]) -> upsample

Each block computes ``c1 -> SiLU -> c2 -> SiLU -> c3 = o`` and returns
``(o + input) * (sigmoid(o) - 1/2)``: the parameter-free attention.

A conditioned network (``conditions`` > 0, ``span-x2-scan``) takes, besides the pixels,
one constant channel per condition (:mod:`tilewave.models.conditions`) into its first
convolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class SpanBlock(nn.Module):
    """One attention block: three 3x3 convolutions and a parameter-free attention map."""

    def __init__(self, features: int):
        super().__init__()
        self.c1 = _conv3(features, features)
        self.c2 = _conv3(features, features)
        self.c3 = _conv3(features, features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = F.silu(self.c1(x))
        if torch.is_grad_enabled():  # training keeps every map for the backward pass
            out = self.c3(F.silu(self.c2(first)))
            return (out + x) * (torch.sigmoid(out) - 0.5), first
        # The same arithmetic in place, on maps nothing else holds: a tile's peak holds
        # fewer feature maps (span-x2, two tiles at once in one worker: about 170 MiB
        # less), and the output is the same to the bit.
        out = self.c3(F.silu(self.c2(first), inplace=True))
        gate = torch.sigmoid(out).sub_(0.5)
        return out.add_(x).mul_(gate), first


class SpanNet(nn.Module):
    """SPAN with folded convolutions, for RGB images in [0, 1]."""

    mean: torch.Tensor  # a registered buffer

    def __init__(self, scale: int, features: int = 48, channels: int = 3, blocks: int = 6,
                 img_range: float = 255.0, conditions: int = 0):
        super().__init__()
        self.scale = scale
        self.img_range = img_range
        self.conditions = conditions
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.head = _conv3(channels + conditions, features)
        self.blocks = nn.ModuleList(SpanBlock(features) for _ in range(blocks))
        self.tail = _conv3(features, features)
        self.fuse = nn.Conv2d(4 * features, features, 1)
        self.upsample = _conv3(features, channels * scale * scale)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(n, channels, h, w)`` in [0, 1]; ``condition`` ``(n, conditions)``."""
        z = (x - self.mean) * self.img_range
        if self.conditions:
            if condition is None:
                condition = torch.zeros(x.shape[0], self.conditions, dtype=x.dtype, device=x.device)
            maps = condition.to(x.dtype).view(x.shape[0], -1, 1, 1).expand(-1, -1, *x.shape[-2:])
            z = torch.cat([z, maps * self.img_range], dim=1)
        head = self.head(z)
        out, first_block = head, None
        for block in self.blocks:
            out, first = block(out)
            first_block = out if first_block is None else first_block
        assert first_block is not None  # the network has at least one block
        fused = self.fuse(torch.cat([head, self.tail(out), first_block, first], dim=1))
        return F.pixel_shuffle(self.upsample(fused), self.scale)

    def convolutions(self) -> list[nn.Conv2d]:
        """The convolutions in the order the ncnn graph runs them."""
        convs = [self.head]
        for block in cast("Iterable[SpanBlock]", self.blocks):
            convs += [block.c1, block.c2, block.c3]
        return convs + [self.tail, self.fuse, self.upsample]

    def with_conditions(self, conditions: int) -> SpanNet:
        """This network taking ``conditions`` more input channels, their weights at zero:
        it computes exactly what it did until training moves them."""
        if conditions == self.conditions:
            return self
        grown = SpanNet(self.scale, self.head.out_channels, self.mean.shape[1], len(self.blocks),
                        self.img_range, conditions)
        state = self.state_dict()
        head = torch.zeros_like(grown.head.weight)
        head[:, : self.head.in_channels] = state["head.weight"]
        state["head.weight"] = head
        grown.load_state_dict(state)
        return grown.train(self.training)
