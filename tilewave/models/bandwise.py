"""Any number of bands through a model made for one or three: each band on its own.

Satellite stacks have 7 to 13 bands and a model takes 1 (grey) or 3 (RGB) channels. A
window whose channel count the model does not take runs band by band: as a grey image
where the model takes one channel, else replicated to three channels with the three
outputs averaged back (as a grey image runs through an RGB network). Each band's output
is the model's output for that band alone, so a band's pixels do not depend on the others
and its nodata, range and dtype are kept as for a one-band image.

Only window models (``halo`` and ``blend`` modes) run band by band: a context model
passes one context per tile, not per band, and the plan refuses it for such inputs.
"""

from __future__ import annotations

import torch

from .base import TileModel, TileRequest, TileResult, runs_bandwise


class Bandwise:
    """A window model that takes any channel count, band by band where it must."""

    def __init__(self, inner: TileModel):
        self.inner = inner
        self.descriptor = inner.descriptor

    def to(self, device: torch.device, half: bool = False) -> Bandwise:
        self.inner = self.inner.to(device, half)
        return self

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if not runs_bandwise(self.descriptor, channels):
            return self.inner.forward_image(x)
        one = 1 in self.descriptor.channels
        outputs = []
        for band in x.split(1, dim=1):
            if one:
                outputs.append(self.inner.forward_image(band))
            else:
                outputs.append(self.inner.forward_image(band.expand(-1, 3, -1, -1))
                               .mean(dim=1, keepdim=True))
        return torch.cat(outputs, dim=1)

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        return self.inner.forward_tile(x, request)

    def __getattr__(self, name: str):  # the rest of the model's own attributes
        if name == "inner":  # not set yet: no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.inner, name)
