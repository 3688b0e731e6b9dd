"""Pyramid levels of an OME-Zarr output.

A job computes them chunk by chunk as part of its tile DAG
(:mod:`tilewave.pipeline.pyramid_plan`), each chunk by :func:`downsample_window` on a
worker, into arrays :func:`tilewave.storage.ome.create_levels` made; :func:`build_pyramid` builds them for an
existing image in streaming dask passes. Both give the same pixels.

Each level averages 2 x 2 blocks of the one before (the last row and column are repeated
where a size is odd) and is rounded back to the image's dtype, so 16-bit data stays
16-bit. Levels are added until the longest side is at most ``smallest`` pixels. Every
level is one streaming dask pass: a task reads a few source chunks and writes one whole
destination chunk of its own, so memory is a handful of chunks whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import dask
import dask.array as da
import numpy as np
import zarr

from .ingest import _TqdmCallback
from .nodata import nodata_mask
from .ome import FULL_RESOLUTION, SMALLEST, level_attributes, level_shapes, set_levels


def _halve(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    c, h, w = block.shape
    return _rounded(block.reshape(c, h // 2, 2, w // 2, 2).astype(np.float32).mean(axis=(2, 4)), dtype)


def _rounded(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Means back in ``dtype``: rounded and clipped for integers."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(dtype)
    return mean.astype(dtype)


def downsample_window(pixels: np.ndarray, height: int, width: int,
                      nodata: float | None = None) -> np.ndarray:
    """``height`` x ``width`` pixels averaging 2 x 2 blocks of ``(c, h, w)`` ``pixels``,
    whose last row or column (an image's odd edge) is repeated where ``h`` or ``w`` falls
    one short of twice the output. With ``nodata``, a block averages its valid pixels
    only, and is nodata where all four are."""
    c, h, w = pixels.shape
    pad_y, pad_x = 2 * height - h, 2 * width - w
    if pad_y not in (0, 1) or pad_x not in (0, 1):
        raise ValueError(f"{h} x {w} pixels do not halve to {height} x {width}")
    if pad_y or pad_x:
        pixels = np.pad(pixels, ((0, 0), (0, pad_y), (0, pad_x)), mode="edge")
    mask = nodata_mask(pixels, nodata)
    if mask is None or nodata is None:
        return _halve(pixels, pixels.dtype)
    return _halve_valid(pixels, mask, nodata)


def _halve_valid(block: np.ndarray, mask: np.ndarray, nodata: float) -> np.ndarray:
    """2 x 2 means over the pixels ``mask`` does not mark; ``nodata`` where it marks all."""
    c, h, w = block.shape
    valid = (~mask).reshape(1, h // 2, 2, w // 2, 2).astype(np.float32)
    values = np.where(mask[None], 0, block).astype(np.float32).reshape(c, h // 2, 2, w // 2, 2)
    count = valid.sum(axis=(2, 4))
    mean = (values * valid).sum(axis=(2, 4)) / np.maximum(count, 1)
    out = _rounded(mean, block.dtype)
    out[:, count[0] == 0] = np.asarray(nodata).astype(block.dtype)
    return out


def downsampled(source: zarr.Array) -> da.Array:
    """A lazy ``(c, y, x)`` array half the size of ``source`` (rounded up)."""
    a = da.from_zarr(source)
    _, h, w = a.shape
    if h % 2 or w % 2:
        a = da.pad(a, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    # Every chunk must be of even size for the 2 x 2 blocks not to straddle chunks.
    even = tuple(tuple(-(-n // 2) * 2 for n in dim) for dim in a.chunks)
    if even != a.chunks:
        step = tuple(max(2, 2 * (dim[0] // 2)) for dim in a.chunks)
        a = a.rechunk(step)
    out_chunks = tuple(tuple(n // 2 for n in dim) if i else dim for i, dim in enumerate(a.chunks))
    return a.map_blocks(_halve, np.dtype(source.dtype), dtype=source.dtype, chunks=out_chunks)


def build_pyramid(output: str, smallest: int = SMALLEST, progress: bool = True,
                  on_level: Callable[[str], None] | None = None, done: tuple[str, ...] = ()) -> list[str]:
    """Add the missing levels ``1, 2, ...`` to the OME-Zarr group ``output``.

    Levels named in ``done`` are taken as complete (a resumed job); ``on_level`` is called
    with each level's path once it is written. Returns every level's path, finest first,
    and points the ``multiscales`` metadata at them.
    """
    from tqdm.auto import tqdm

    group = zarr.open_group(output, mode="r+")
    # The output's levels are arrays tilewave created: ``0`` by the job, the rest here.
    base = cast(zarr.Array, group[FULL_RESOLUTION])
    c, h, w = base.shape
    shapes = level_shapes((c, h, w), smallest)
    paths = [FULL_RESOLUTION]
    for i, shape in enumerate(shapes[1:], start=1):
        path = str(i)
        source = cast(zarr.Array, group[paths[-1]])
        paths.append(path)
        if path in done:
            continue
        chunks = (shape[0], min(base.chunks[1], shape[1]), min(base.chunks[2], shape[2]))
        target = group.create_array(path, shape=shape, chunks=chunks, dtype=base.dtype,
                                    dimension_names=("c", "y", "x"), fill_value=base.fill_value,
                                    attributes=level_attributes(group), overwrite=True)
        pixels = downsampled(source).rechunk(chunks)
        with tqdm(total=pixels.npartitions, unit="chunk", desc=f"pyramid level {i}",
                  disable=not progress, leave=False) as bar:
            with _TqdmCallback(bar), dask.config.set(scheduler="threads", num_workers=2):
                pixels.store(target, lock=False)
        if on_level is not None:
            on_level(path)
    set_levels(group, paths)
    return paths
