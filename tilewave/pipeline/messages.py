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
from .grid import TileGrid
from .indices import TileIndex
from .pyramid_plan import PyramidPlan


@dataclass(frozen=True, kw_only=True)
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
    #: The pyramid levels the workers compute between tiles; None: no pyramid.
    pyramid: PyramidPlan | None = None
    #: Tiles a worker runs through its model as one batch (halo and blend modes); None:
    #: the device's default (:func:`tilewave.actors.device.default_batch`).
    batch: int | None = None
    #: Flush every output chunk to disk before reporting it written (``--durable``).
    durable: bool = True
    #: The back-projection stage of ``--consistent``: where the job's input is read, and
    #: how many times smaller it is than this stage's (its ``model`` is then ignored).
    guide: ArraySpec | None = None
    guide_scale: int = 0
    #: What a conditioned model is told about the stage's input (its JPEG quality).
    condition: dict[str, Any] | None = None
    #: Tiles run one sampler step at a time (``--schedule step``): states wait between
    #: steps in the working store (under ``contexts_in``).
    stepwise: bool = False
    #: ``fp32`` keeps a model that allows half precision in float32 on a GPU (``--precision``).
    precision: str = "auto"

    def level_array(self, level: int) -> str:
        """The path of pyramid level ``level``'s array, a sibling of ``output_array``."""
        return f"{self.output_array.rsplit('/', 1)[0]}/{level}"


@dataclass(kw_only=True, frozen=True)
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
    #: 0 for a tile; ``k`` for chunk ``(row, col)`` of pyramid level ``k``.
    level: int = 0
    #: A sampler's ``(steps run, steps asked for)`` on this tile (``(0, k)`` for an easy
    #: tile of an adaptive job); None for one-pass models.
    steps: tuple[int, int] | None = None
    #: CRC-32 of the pixels written (:func:`tilewave.storage.arrays.checksum`), which
    #: the ledger records for ``--verify``; None where the writer keeps none.
    checksum: int | None = None
    #: The sampler step this was, under ``--schedule step``; None: the whole tile.
    step: int | None = None

    @property
    def index(self) -> TileIndex | tuple[int, int, int]:
        """``(row, col)`` of a tile, ``(level, row, col)`` of a pyramid chunk."""
        return (self.row, self.col) if self.level == 0 else (self.level, self.row, self.col)
