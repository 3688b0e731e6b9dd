"""The tile worker: holds one model, reads its own input window, runs the tile, writes
its own output chunk, and returns only small things.

:class:`TileWorker` is a plain class; :mod:`tilewave.actors.pools` turns it into a Ray
actor, and the in-process executor uses it as it is.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import STORAGE_ERRNOS

from ..models import load_model
from ..models.base import OUTBOUND, TilingMode
from ..models.bicubic import Bicubic
from ..pipeline.blend import Ramp
from ..pipeline.difficulty import assess
from ..pipeline.plan import TileGrid
from ..pipeline.tile_compute import run_tile
from ..storage.arrays import ArrayReader, ArraySpec, ArrayWriter
from ..storage.job_state import ContextStore, PersistedContext
from .device import pick_device


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs to set itself up: names and paths, no pixels."""

    model: str
    scale: int
    grid: TileGrid
    mode: TilingMode
    ramp: Ramp
    source: ArraySpec
    output_array: str
    #: Job output folder whose context store carries outgoing contexts from producer to
    #: consumer (None in ``halo`` mode, which has none).
    contexts_in: str | None
    #: The input as the user named it, for messages (``source`` may be a working copy).
    input_path: str = ""
    #: Route easy tiles (:mod:`tilewave.pipeline.difficulty`) to bicubic, hard ones to
    #: the model; ``nodata`` is the input's nodata value, if it declares one.
    adaptive: bool = False
    nodata: float | None = None


@dataclass(frozen=True)
class TileDone:
    """What a worker reports for a finished tile."""

    row: int
    col: int
    seconds: float
    worker: str
    #: Directions whose context this tile saved to the job's context store.
    contexts: tuple[str, ...] = ()
    #: The tile was easy and took the cheap path (``adaptive`` jobs only).
    cheap: bool = False


class BadPixels(ValueError):
    """The input holds values tilewave refuses to guess about (NaN, infinities)."""


class TileError(Exception):
    """A tile failed inside a worker; carries the tile and the worker's traceback.

    ``bad_input`` marks failures caused by the input's pixels and ``storage_full`` those
    where the output's storage refused a write (full, read-only): both stop the run with a
    user error (exit code 2) instead of a tile failure, since the fix is the user's.
    """

    def __init__(self, row: int, col: int, cause: str, details: str, bad_input: bool = False,
                 storage_full: bool = False):
        super().__init__(row, col, cause, details, bad_input, storage_full)
        self.row, self.col, self.cause, self.details = row, col, cause, details
        self.bad_input = bad_input
        self.storage_full = storage_full

    def __str__(self) -> str:
        return f"tile ({self.row}, {self.col}): {self.cause}"


def _to_cpu(value: Any) -> Any:
    """Contexts leave the worker on the CPU, compact: GPU tensors neither pickle nor travel
    well."""
    import torch

    if isinstance(value, torch.Tensor):
        # A model's context is typically a view of a larger tensor (the edge blocks of a
        # tile's keys): copy just its elements, or pickling it would save all of the
        # storage behind it (for uniba-x2, 64 MB per context instead of 1 MB).
        value = value.detach()
        return value.cpu() if value.device.type != "cpu" else value.clone(memory_format=torch.contiguous_format)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class TileWorker:
    """Runs tiles of one job with one loaded model."""

    def __init__(self, job: WorkerJob):
        import os
        import socket

        self.job = job
        self.device = pick_device()
        self.model = load_model(job.model, job.scale)
        self.half = self.device.type == "cuda" and self.model.descriptor.supports_half
        self.model.to(self.device, self.half)
        self.cheap = Bicubic(job.scale) if job.adaptive else None
        self.reader = ArrayReader(job.source)
        self.writer = ArrayWriter(job.output_array)
        self.contexts = ContextStore(job.contexts_in) if job.contexts_in else None
        self.name = f"{socket.gethostname()}:{os.getpid()}:{self.device}"

    def describe(self) -> str:
        return self.name

    def process(self, row: int, col: int, left: Any = None, top: Any = None,
                top_left: Any = None) -> TileDone:
        """Run tile (row, col) and save its outgoing contexts; returns its report.

        Inbound contexts arrive as :class:`PersistedContext` handles and are loaded here.
        """
        start = time.perf_counter()
        try:
            inbound = {k: v.load() if isinstance(v, PersistedContext) else v
                       for k, v in (("left", left), ("top", top), ("top_left", top_left))}
            grid = self.job.grid
            tile = grid[row, col]
            window = self.reader.read(*tile.read)
            if window.dtype.kind == "f" and not np.isfinite(window).all():
                c, y, x = (int(v) for v in np.argwhere(~np.isfinite(window))[0])
                raise BadPixels(
                    f"has NaN or infinite values (first at x={tile.read[2] + x}, "
                    f"y={tile.read[0] + y}, channel {c}); tilewave does not guess what they "
                    "mean: replace them (with 0 or the nodata value) and run again")
            model, half, cheap = self.model, self.half, False
            if self.cheap is not None:
                cy0, cy1, cx0, cx1 = tile.core
                ry0, _, rx0, _ = tile.read
                core_pixels = window[:, cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0]
                if assess(core_pixels, self.job.nodata).easy:
                    model, half, cheap = self.cheap, False, True
            core, outbound = run_tile(model, grid, tile, window, self.job.mode, inbound,
                                      self.job.ramp, self.device, half)
            oy0, oy1, ox0, ox1 = grid.out_window(tile.core)
            if core.shape[1:] != (oy1 - oy0, ox1 - ox0):
                # Writing it would spill into the neighbours' chunks.
                raise ValueError(f"the model returned {core.shape[1]} x {core.shape[2]} output "
                                 f"pixels for a tile of {oy1 - oy0} x {ox1 - ox0}")
            self.writer.write(oy0, ox0, core)
            saved = []
            if self.contexts is not None:
                # Every existing consumer gets a file, None included, so that a missing
                # file on resume always means a lost context. Files rather than the
                # object store carry contexts, so a row of them waiting for the next row
                # costs disk (and page cache), not memory that grows with the width.
                for direction, (dr, dc) in OUTBOUND.items():
                    if grid.contains(row + dr, col + dc):
                        self.contexts.save((row, col), direction, _to_cpu(outbound.get(direction)))
                        saved.append(direction)
        except BadPixels as exc:
            raise TileError(row, col, str(exc), traceback.format_exc(), bad_input=True) from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise TileError(row, col, f"{type(exc).__name__}: {exc}"[:300],
                                traceback.format_exc()) from None
            raise TileError(row, col, f"{exc.strerror} while writing tile ({row}, {col})",
                            traceback.format_exc(), storage_full=True) from None
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            raise TileError(row, col, cause, traceback.format_exc()) from None
        return TileDone(row, col, time.perf_counter() - start, self.name, tuple(saved), cheap)
