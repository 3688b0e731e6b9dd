"""The OME-Zarr 0.5 output image: a Zarr v3 group whose array ``0`` is the full
resolution, ``(c, y, x)``, chunked to the output tile grid, and whose arrays ``1``,
``2``, ... are the pyramid levels, created empty with the job (:func:`create_levels`)
and filled chunk by chunk as the chunks below them are written (:mod:`.pyramid`).

The group's ``tilewave`` attribute holds the job record and ``metadata``: what the output
inherited from its input (pixel size, objective power, channel names, georeferencing,
nodata; :mod:`.metadata`), already adjusted for the scale. A georeferenced output also
carries its CRS and transform where GDAL reads them, and every array's ``fill_value`` is
the input's nodata (:mod:`.geozarr`).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import zarr

from . import geozarr, location
from .metadata import ome_attributes

FULL_RESOLUTION = "0"
#: Each pyramid level is this many times smaller than the one before, on each axis.
DOWNSAMPLE = 2
#: Stop adding levels once the longest side is at most this many pixels.
SMALLEST = 1024


def create_output(
    path: str,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    chunk: tuple[int, int],
    name: str,
    metadata: dict[str, Any] | None = None,
    extra_attributes: dict[str, Any] | None = None,
) -> str:
    """Create the output group and its empty full-resolution array; returns the array's path.

    The array is chunked exactly to the output tile grid (no sharding), so every tile
    writes whole chunks of its own and concurrent workers never share one.
    """
    metadata = metadata or {}
    dtype = np.dtype(dtype)
    # Not mode "w-": the job's lock (``.tilewave/``) is already there, taken before this.
    if location.exists(location.join(path, "zarr.json")):
        raise FileExistsError(f"{path!r} already holds a Zarr group or array")
    group = zarr.open_group(path, mode="a", zarr_format=3)
    attrs: dict[str, Any] = {"ome": ome_attributes(name, [FULL_RESOLUTION], DOWNSAMPLE, metadata,
                                                   shape[0], dtype)}
    if extra_attributes:
        attrs.update(extra_attributes)
    attrs.setdefault("tilewave", {})["metadata"] = metadata
    attrs.update(geozarr.group_attributes(metadata))
    group.attrs.update(attrs)
    group.create_array(
        FULL_RESOLUTION,
        shape=shape,
        chunks=(shape[0], *chunk),
        dtype=dtype,
        dimension_names=("c", "y", "x"),
        fill_value=geozarr.fill_value(metadata, dtype),
        attributes=geozarr.array_attributes(metadata),
    )
    geozarr.write_coordinates(group, metadata, shape[1], shape[2])
    return f"{path.rstrip('/')}/{FULL_RESOLUTION}"


def level_shapes(shape: tuple[int, int, int], smallest: int = SMALLEST) -> list[tuple[int, int, int]]:
    """Shapes of levels 0, 1, ...: halved (rounded up) until the longest side <= ``smallest``."""
    shapes = [shape]
    while max(shapes[-1][1:]) > smallest:
        c, h, w = shapes[-1]
        shapes.append((c, -(-h // DOWNSAMPLE), -(-w // DOWNSAMPLE)))
    return shapes


def read_metadata(group: zarr.Group) -> dict[str, Any]:
    """The inherited metadata a tilewave output records (empty for other OME-Zarr images)."""
    job = group.attrs.get("tilewave")
    return dict(job.get("metadata") or {}) if isinstance(job, dict) else {}


def set_levels(group: zarr.Group, level_paths: list[str]) -> None:
    """Point the ``multiscales`` metadata at ``level_paths`` (finest first)."""
    # The group and its ``ome`` attribute are the ones create_output wrote.
    arr = cast(zarr.Array, group[level_paths[0]])
    ome = cast(dict[str, Any], group.attrs["ome"])
    name = ome["multiscales"][0].get("name", "")
    group.attrs["ome"] = ome_attributes(name, level_paths, DOWNSAMPLE, read_metadata(group),
                                        arr.shape[0], np.dtype(arr.dtype))


def level_attributes(group: zarr.Group) -> dict[str, Any]:
    """The attributes of a pyramid level of ``group``."""
    return geozarr.array_attributes(read_metadata(group))


def create_levels(output: str, shapes: list[tuple[int, int]], chunks: list[tuple[int, int]]) -> list[str]:
    """Create the arrays of levels ``1, 2, ...`` of ``output`` that do not exist yet (a
    resumed job keeps what its levels hold); returns every level's path, finest first."""
    group = zarr.open_group(output, mode="r+")
    base = cast(zarr.Array, group[FULL_RESOLUTION])
    paths = [FULL_RESOLUTION]
    for i, ((h, w), (ch, cw)) in enumerate(zip(shapes[1:], chunks[1:]), start=1):
        paths.append(str(i))
        if str(i) not in group:
            shape = (base.shape[0], h, w)
            group.create_array(str(i), shape=shape, chunks=(base.shape[0], ch, cw),
                               dtype=base.dtype, dimension_names=("c", "y", "x"),
                               fill_value=base.fill_value, attributes=level_attributes(group))
    return paths


def finish_levels(output: str, paths: list[str]) -> None:
    """Point the ``multiscales`` metadata of ``output`` at its levels, once all exist."""
    set_levels(zarr.open_group(output, mode="r+"), paths)
