"""Streaming copy of any input into a chunked Zarr v3 array, with dask.

Memory is bounded by a few chunks: dask reads a chunk from the input, writes it to its
own chunk of the destination, and forgets it.
"""

from __future__ import annotations

import os
from typing import Any

import dask
import zarr

from ..errors import OutputExistsError
from .arrays import ArraySpec
from .inputs import InputImage, lazy_pixels


class _TqdmCallback(dask.callbacks.Callback):
    """Advances a tqdm bar as dask finishes its store tasks."""

    def __init__(self, bar: Any):
        super().__init__()
        self._bar = bar

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
        if isinstance(key, tuple) and str(key[0]).startswith("store"):
            self._bar.update(1)


def ingest(image: InputImage, dest: str, chunk: int = 512, progress: bool = True) -> ArraySpec:
    """Copy ``image`` into a new ``(c, y, x)`` Zarr v3 array at ``dest``, chunk by chunk."""
    from tqdm.auto import tqdm

    if os.path.exists(dest):
        raise OutputExistsError(f"store {dest!r} exists; choose another path")
    pixels = lazy_pixels(image, chunk)
    target = zarr.create_array(
        dest,
        shape=image.shape,
        chunks=(image.channels, chunk, chunk),
        dtype=image.dtype,
        dimension_names=("c", "y", "x"),
        fill_value=0,
        # Ingest writes every chunk, zeros included: a missing chunk must mean "not copied".
        config={"write_empty_chunks": True},
    )
    target.attrs["tilewave"] = {"source": os.path.abspath(image.path), "format": image.format,
                                "metadata": image.metadata}
    n_chunks = pixels.npartitions
    with tqdm(total=n_chunks, unit="chunk", desc="ingest", disable=not progress, leave=False) as bar:
        # Two threads: one decodes while the other compresses; more only adds memory here.
        with _TqdmCallback(bar), dask.config.set(scheduler="threads", num_workers=2):
            pixels.store(target, lock=False)
    return ArraySpec(dest, "cyx")
