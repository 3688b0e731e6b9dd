"""The work of one pyramid chunk: read the level below, average 2 x 2 blocks, write the
chunk. Runs on the tile workers, between tiles, as :mod:`.pyramid_plan` releases it."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import PyramidChunkFailedError, first_line, user_error
from ..storage.pyramid import downsample_window
from .indices import Window
from .messages import TileDone
from .pyramid_plan import PyramidPlan

#: Reads ``(c, h, w)`` pixels of a window of a level.
ReadLevel = Callable[[int, Window], np.ndarray]
#: Writes ``(c, h, w)`` pixels into a level at ``(y0, x0)``; returns their checksum.
WriteLevel = Callable[[int, int, int, np.ndarray], "int | None"]


@dataclass(kw_only=True, frozen=True)
class PyramidSetup:
    plan: PyramidPlan
    read: ReadLevel
    write: WriteLevel
    worker: str = ""
    #: The value of pixels without data: averaged over the valid ones only.
    nodata: float | None = None


def process_chunk(setup: PyramidSetup, level: int, row: int, col: int) -> TileDone:
    """Compute chunk ``(row, col)`` of pyramid ``level`` from the level below; raises the
    user's error (:class:`~tilewave.errors.PyramidChunkFailedError` for a bug)."""
    start = time.perf_counter()
    window = setup.plan.window(level, row, col)
    try:
        source = setup.read(level - 1, setup.plan.source((level, row, col)))
        y0, y1, x0, x1 = window
        written = setup.write(level, y0, x0,
                              downsample_window(source, y1 - y0, x1 - x0, setup.nodata))
    except Exception as exc:
        known = user_error(exc)
        if known is not None:
            raise known from None
        raise PyramidChunkFailedError(level, row, col, window, first_line(exc),
                                      traceback.format_exc()) from None
    return TileDone(row=row, col=col, seconds=time.perf_counter() - start, worker=setup.worker,
                    level=level, checksum=written)
