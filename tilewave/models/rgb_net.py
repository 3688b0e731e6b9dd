"""Running a pretrained network as a tilewave model of any channel count.

Pretrained super-resolution networks take one or three channels in [0, 1]. For a
three-channel network, grey images are replicated to RGB and the three outputs averaged
back, and RGBA images run RGB through the network and upscale alpha with bicubic
interpolation (whose reach, 2 pixels, is inside the halo of every pretrained network). A one-channel
network runs on each channel in turn. Outputs are clamped to [0, 1], the range the
networks were trained to produce.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .base import ImageModel, ModelDescriptor
from .bicubic import Bicubic


class RGBNetModel(ImageModel):
    """A :class:`~tilewave.models.base.TileModel` around a pretrained ``nn.Module``.

    ``call`` runs the network on a ``(1, net_channels, h, w)`` tensor (the module itself
    by default); ``net`` is what is moved between devices and precisions.
    """

    def __init__(self, net: nn.Module, descriptor: ModelDescriptor,
                 call: Callable[[torch.Tensor], torch.Tensor] | None = None, net_channels: int = 3):
        if net_channels not in (1, 3):
            raise ValueError(f"networks of 1 or 3 channels are supported, not {net_channels}")
        self.net = net.eval().requires_grad_(False)
        self.descriptor = descriptor
        self.call = call or self.net
        self.net_channels = net_channels
        self._alpha = Bicubic(descriptor.scale)
        self._dtype = torch.float32
        #: The condition channels' values (a conditioned network), None otherwise.
        self.condition: list[float] | None = None

    def with_condition(self, given: Mapping[str, object]) -> RGBNetModel:
        """The same network (shared, not copied) told ``given`` about its input."""
        from .conditions import levels

        told = copy.copy(self)
        told.condition = levels(self.descriptor.conditions, given)
        return told

    def to(self, device: torch.device, half: bool = False) -> RGBNetModel:
        self._dtype = torch.float16 if half and self.descriptor.supports_half else torch.float32
        self.net.to(device=device, dtype=self._dtype)
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._dtype)
        if self.condition is not None:
            c = torch.tensor(self.condition, dtype=self._dtype, device=x.device)
            return self.call(x, c.expand(x.shape[0], -1)).float().clamp(0.0, 1.0)  # type: ignore[call-arg]
        return self.call(x).float().clamp(0.0, 1.0)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if self.net_channels == 1:
            return torch.cat([self._run(x[:, i : i + 1]) for i in range(channels)], dim=1)
        if channels not in (1, 3, 4):
            raise ValueError(f"{self.descriptor.name} takes 1, 3 or 4 channels, got {channels}")
        out = self._run(x.expand(-1, 3, -1, -1) if channels == 1 else x[:, :3])
        if channels == 1:
            return out.mean(dim=1, keepdim=True)
        if channels == 4:
            return torch.cat([out, self._alpha.forward_image(x[:, 3:].float())], dim=1)
        return out
