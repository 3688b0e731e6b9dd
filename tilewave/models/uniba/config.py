"""The UniBA architecture's settings, apart from the network so that describing a
checkpoint needs no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class UniBAConfig:
    """The shape of a UniBA network, kept as JSON in its checkpoint's metadata."""

    scale: int = 2
    channels: int = 3
    block: int = 8  # low-resolution pixels per block side
    patch: int = 2  # low-resolution pixels per token side
    dim: int = 64
    heads: int = 2
    layers: int = 4
    mlp_ratio: int = 2
    stem: int = 48
    stem_layers: int = 4
    #: A multi-step bridge model (``uniba-diff``) rather than one-step regression.
    diffusion: bool = False
    #: Names of the conditions the stem takes as constant input channels
    #: (:mod:`tilewave.models.conditions`): ``uniba-x2-scan`` takes the JPEG quality.
    conditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON gives a list; the frozen configuration keeps a tuple.
        object.__setattr__(self, "conditions", tuple(self.conditions))

    @property
    def tokens_per_side(self) -> int:
        return self.block // self.patch

    @property
    def stem_margin(self) -> int:
        """Pixels the stem's unpadded 3 x 3 convolutions consume on each side."""
        return self.stem_layers

    @property
    def halo(self) -> int:
        """Input pixels a tile reads around itself: one block for the neighbourhood
        cross-attention, plus the stem's margin."""
        return self.block + self.stem_margin

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
