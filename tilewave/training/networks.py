"""The networks tilewave fine-tunes, behind one interface: how a batch of
low-resolution crops with a margin becomes the output of their cores, and how the result
is written as a weights file ``--model`` takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn

from ..errors import SettingsError


class Trainee(Protocol):
    """A network being trained on crops of ``core + 2 * margin`` low-resolution pixels."""

    net: nn.Module
    scale: int
    #: Low-resolution pixels around the core that the network reads but is not scored on.
    margin: int
    #: Core sizes must be multiples of this (UniBA's block).
    multiple: int
    #: The architecture's name in training records (``span``, ``uniba``).
    arch: str

    def forward(self, lr: torch.Tensor, origin: tuple[int, int],
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """The output of the cores of ``lr``, a ``(n, 3, core + 2m, core + 2m)`` batch
        whose top-left core pixel lies at ``origin`` in image coordinates; ``condition``
        ``(n, 1)`` holds the inputs' JPEG levels (ignored by unconditioned networks)."""
        ...

    def save(self, path: str, record: dict[str, Any]) -> None:
        """Write the network as a weights file ``--model`` runs, with ``record``."""
        ...


@dataclass
class SpanTrainee:
    """SPAN (its folded, inference form) scored away from the zero padding of its
    borders, as tiles are run: a margin of 8 input pixels."""

    net: nn.Module
    scale: int
    margin: int = 8
    multiple: int = 1
    arch: str = "span"

    def forward(self, lr: torch.Tensor, origin: tuple[int, int],
                condition: torch.Tensor | None = None) -> torch.Tensor:
        k = self.margin * self.scale
        out = self.net(lr, condition) if getattr(self.net, "conditions", 0) else self.net(lr)
        return out[..., k:-k, k:-k]

    def save(self, path: str, record: dict[str, Any]) -> None:
        from ..models.span.weights import save_span

        save_span(self.net, path, record)  # type: ignore[arg-type]


class UniBATrainee:
    """A UniBA network (one-step), its halo as the margin, cores in whole blocks."""

    arch = "uniba"

    def __init__(self, net: nn.Module):
        from ..models.uniba.config import UniBAConfig

        cfg = getattr(net, "cfg", None)
        if not isinstance(cfg, UniBAConfig) or cfg.diffusion:
            raise SettingsError("only one-step UniBA weights can be fine-tuned here (not "
                                "uniba-diff); start from uniba-x2 or uniba-x2-scan")
        self.net, self.cfg = net, cfg
        self.scale, self.margin, self.multiple = cfg.scale, cfg.halo, cfg.block

    def forward(self, lr: torch.Tensor, origin: tuple[int, int],
                condition: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.net.forward_tile(lr, origin, None,  # type: ignore[operator]
                                       condition if self.cfg.conditions else None)
        return cast(torch.Tensor, out)

    def save(self, path: str, record: dict[str, Any]) -> None:
        from ..models.uniba.train import save_checkpoint

        save_checkpoint(self.net, path, record)  # type: ignore[arg-type]


def trainee_for(model: str, conditions: tuple[str, ...] | None = None) -> Trainee:
    """The network of the registered model or weights file ``model``, ready to train
    (SPAN and one-step UniBA models); with ``conditions``, taking those too (new input
    channels start at zero weight)."""
    from ..models import load_model
    from ..models.rgb_net import RGBNetModel
    from ..models.span.arch import SpanNet
    from ..models.uniba import UniBA

    loaded = load_model(model)
    if isinstance(loaded, UniBA) and not hasattr(loaded, "sampler"):
        net = loaded.net if conditions is None else loaded.net.with_conditions(conditions)
        return UniBATrainee(net.train().requires_grad_(True))
    if isinstance(loaded, RGBNetModel) and isinstance(loaded.net, SpanNet):
        span = loaded.net if conditions is None else loaded.net.with_conditions(len(conditions))
        return SpanTrainee(span.train().requires_grad_(True), loaded.descriptor.scale)
    raise SettingsError(f"model {model!r} cannot be fine-tuned: tilewave tunes SPAN "
                        "(span-x2, span-x2-scan) and UniBA (uniba-x2, uniba-x2-scan) models "
                        "and weights files of theirs")
