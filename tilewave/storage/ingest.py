"""Streaming copy of any input into a chunked Zarr v3 array.

TIFF family files are copied in full-width bands of one chunk row (see
:mod:`.tiff_bands`): every strip or tile is decoded once, and each band write covers
whole chunks, so no two writes share a chunk. One thread decodes the next band while the
current one is compressed and written. Memory is bounded by about two bands plus one
strip, whatever the image height.

Other inputs, and TIFF layouts the bands do not cover, go through dask: it reads a chunk
from the input, writes it to its own chunk of the destination, and forgets it.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import zarr
from zarr.codecs import ZstdCodec

from ..errors import OutputExistsError
from .arrays import ArraySpec
from .inputs import InputImage, _tifffile_problems, lazy_pixels
from .tiff_bands import TiffBands

#: Formats :func:`open_input` reads with tifffile.
_TIFF_FORMATS = ("tiff", "svs", "ome-tiff", "geotiff")
#: The working copy is written once and read back a few times: zstd's level 1 compresses
#: image data 3-4 times faster than its default level 3, for about 3 % more bytes.
_ZSTD_LEVEL = 1


class _TqdmCallback(dask.callbacks.Callback):
    """Advances a tqdm bar as dask finishes its store tasks."""

    def __init__(self, bar: Any):
        super().__init__()
        self._bar = bar

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
        if isinstance(key, tuple) and str(key[0]).startswith("store"):
            self._bar.update(1)


def ingest(image: InputImage, dest: str, chunk: int = 512, progress: bool = True,
           label: str = "") -> ArraySpec:
    """Copy ``image`` into a new ``(c, y, x)`` Zarr v3 array at ``dest``, chunk by chunk
    (its progress bar named after ``label``)."""
    from tqdm.auto import tqdm

    if os.path.exists(dest):
        raise OutputExistsError(f"store {dest!r} exists; choose another path")
    bands = _tiff_bands(image, chunk)
    try:
        target = zarr.create_array(
            dest,
            shape=image.shape,
            chunks=(image.channels, chunk, chunk),
            dtype=image.dtype,
            dimension_names=("c", "y", "x"),
            fill_value=0,
            # An uncompressed input gets an uncompressed copy: the disk it takes is the
            # input's own size, and compressing it would be the slowest step by far.
            compressors=None if bands is not None and bands.uncompressed else ZstdCodec(level=_ZSTD_LEVEL),
            # Ingest writes every chunk, zeros included: a missing chunk must mean "not copied".
            config={"write_empty_chunks": True},
        )
        target.attrs["tilewave"] = {"source": os.path.abspath(image.path), "format": image.format,
                                    "metadata": image.metadata}
        n_chunks = math.ceil(image.height / chunk) * math.ceil(image.width / chunk)
        with tqdm(total=n_chunks, unit="chunk", desc=f"{label}ingest", disable=not progress,
                  leave=False) as bar:
            if bands is not None:
                _store_bands(bands, target, bar, math.ceil(image.width / chunk))
            else:
                _store_chunks(image, chunk, target, bar)
    finally:
        if bands is not None:
            bands.close()
    return ArraySpec(dest, "cyx")


def _tiff_bands(image: InputImage, chunk: int) -> TiffBands | None:
    """Bands of one chunk row of a TIFF input; None for other inputs and for layouts the
    bands do not cover."""
    if image.array is not None or image.format not in _TIFF_FORMATS:
        return None
    try:
        bands = TiffBands.open(image.path, chunk)
    except Exception:  # open_input read this file: the chunked path gives any error
        return None
    if bands is not None and (bands.shape != image.shape or bands.dtype != image.dtype):
        bands.close()
        return None
    return bands


def _store_bands(bands: TiffBands, target: Any, bar: Any, chunks_per_band: int) -> None:
    """Write every band into ``target``, decoding the next while the current is written."""
    rows = iter(bands)
    # tifffile logs, rather than raises, some damage it reads past; keep it off stderr,
    # as open_input does.
    with _tifffile_problems(), ThreadPoolExecutor(1, thread_name_prefix="ingest-decode") as pool:
        pending = pool.submit(next, rows, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, rows, None)
            y0, band = item
            target[:, y0:y0 + band.shape[1], :] = band
            del item, band  # before the next band is taken
            bar.update(chunks_per_band)


def _store_chunks(image: InputImage, chunk: int, target: Any, bar: Any) -> None:
    """Copy ``image`` chunk by chunk through dask."""
    pixels = lazy_pixels(image, chunk)
    # Two threads: one decodes while the other compresses; more only adds memory here.
    with _TqdmCallback(bar), dask.config.set(scheduler="threads", num_workers=2):
        pixels.store(target, lock=False)
