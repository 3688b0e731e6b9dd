"""The pyramid of an existing OME-Zarr output built in streaming dask passes, one per
level, as ``benchmarks/export.py`` measures it. It gives the pixels tilewave's own gives,
built chunk by chunk in a job's tile DAG (:mod:`tilewave.pipeline.pyramid_plan`): both
halve with :func:`tilewave.storage.pyramid.downsample_window`.

Every level is one pass: a task reads a few source chunks and writes one whole
destination chunk of its own, so memory is a handful of chunks whatever the image size.

    python benchmarks/dask_pyramid.py OUTPUT.ome.zarr     # prints the levels' paths
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import cast

import dask
import dask.array as da
import numpy as np
import zarr

from tilewave.storage.ome import FULL_RESOLUTION, SMALLEST, level_attributes, level_shapes, set_levels
from tilewave.storage.pyramid import downsample_window


def _halve(block: np.ndarray) -> np.ndarray:
    _, h, w = block.shape
    return downsample_window(block, h // 2, w // 2)


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
    return a.map_blocks(_halve, dtype=source.dtype, chunks=out_chunks)


def build_pyramid(output: str, smallest: int = SMALLEST,
                  on_level: Callable[[str], None] | None = None, done: tuple[str, ...] = ()) -> list[str]:
    """Add the missing levels ``1, 2, ...`` to the OME-Zarr group ``output``.

    Levels named in ``done`` are taken as complete (a resumed build); ``on_level`` is
    called with each level's path once it is written. Returns every level's path, finest
    first, and points the ``multiscales`` metadata at them.
    """
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
        with dask.config.set(scheduler="threads", num_workers=2):
            pixels.store(target, lock=False)
        if on_level is not None:
            on_level(path)
    set_levels(group, paths)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", help="an OME-Zarr group whose level 0 is written")
    print(build_pyramid(ap.parse_args().output))


if __name__ == "__main__":
    main()
