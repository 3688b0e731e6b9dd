"""What the driver tells a worker about a job, and what a worker says back about a tile:
small, picklable, free of pixels and of torch (the driver never imports it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models.base import SamplerSettings, TilingMode
from ..storage.arrays import ArraySpec
from .blend import Ramp
from .directions import Direction
from .plan import TileGrid

Index = tuple[int, int]


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to set itself up: names and paths, no pixels."""

    model: str
    scale: int
    grid: TileGrid
    mode: TilingMode
    ramp: Ramp
    source: ArraySpec
    output_array: str
    #: Job output folder whose context store carries outgoing contexts from producer to
    #: consumer; None when tiles do not depend on their neighbours.
    contexts_in: str | None
    #: The input as the user named it, for messages (``source`` may be a working copy).
    input_path: str = ""
    #: Route easy tiles (:mod:`tilewave.pipeline.difficulty`) to bicubic, hard ones to
    #: the model; ``nodata`` is the input's nodata value, if it declares one.
    adaptive: bool = False
    nodata: float | None = None
    #: Sampler settings of a multi-step model.
    sampler: SamplerSettings | None = None


@dataclass(frozen=True)
class TileDone:
    """What a worker reports for a finished tile."""

    row: int
    col: int
    seconds: float
    worker: str
    #: Handles to the contexts this tile left for its neighbours, by outbound direction.
    outbound: Mapping[Direction, Any] = field(default_factory=dict)
    #: The tile was easy and took the cheap path (``adaptive`` jobs only).
    cheap: bool = False

    @property
    def index(self) -> Index:
        return (self.row, self.col)
