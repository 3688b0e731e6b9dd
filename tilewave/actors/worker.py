"""The tile worker: a thin holder of one loaded model around
:func:`tilewave.pipeline.tile_work.process_tile`.

:class:`TileWorker` is a plain class; :mod:`tilewave.actors.pools` turns it into a Ray
actor, and the in-process pool uses it as it is. Importing this module imports no torch:
the driver needs the class to start actors, and only the actors load models.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from ..pipeline.tile_job import TileDone, TileJob


class TileWorker:
    """Runs tiles of one job with one loaded model."""

    def __init__(self, job: TileJob):
        from ..models import load_model
        from ..models.bicubic import Bicubic
        from ..pipeline.tile_work import TileSetup, to_cpu
        from ..storage.arrays import ArrayReader, ArrayWriter
        from ..storage.job_state import ContextStore
        from .device import pick_device

        device = pick_device()
        model = load_model(job.model, job.scale, job.sampler)
        half = device.type == "cuda" and model.descriptor.supports_half
        model.to(device, half)
        reader, writer = ArrayReader(job.source), ArrayWriter(job.output_array)
        store = ContextStore(job.contexts_in) if job.contexts_in else None

        def keep(producer: tuple[int, int], direction: str, value: Any) -> Any:
            # Files rather than the object store carry contexts, so a row of them waiting
            # for the next row costs disk (and page cache), not memory that grows with
            # the image's width.
            return store.save(producer, direction, to_cpu(value))  # type: ignore[union-attr]

        self.name = f"{socket.gethostname()}:{os.getpid()}:{device}"
        self.setup = TileSetup(
            job.grid, job.mode, model, lambda w: reader.read(*w), writer.write,
            keep if store is not None else None, job.ramp, device, half,
            Bicubic(job.scale) if job.adaptive else None, job.nodata,
            job.input_path or job.source.path, self.name)

    def describe(self) -> str:
        return self.name

    def process(self, row: int, col: int, inbound: Mapping[str, Any] | None = None) -> TileDone:
        """Run tile ``(row, col)``; raises the user's error if it fails."""
        from ..pipeline.tile_work import process_tile

        return process_tile(self.setup, row, col, inbound)
