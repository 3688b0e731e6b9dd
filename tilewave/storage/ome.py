"""The OME-Zarr 0.5 output image: a Zarr v3 group whose array ``0`` is the full
resolution, ``(c, y, x)``, chunked to the output tile grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

FULL_RESOLUTION = "0"


def multiscales_metadata(name: str, pixel_size_um: tuple[float, float] | None) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attributes for a single-level ``(c, y, x)`` image."""
    space: dict[str, Any] = {"type": "space"}
    if pixel_size_um is not None:
        space["unit"] = "micrometer"
    scale = [1.0, *(pixel_size_um if pixel_size_um is not None else (1.0, 1.0))]
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}],
                "datasets": [
                    {"path": FULL_RESOLUTION,
                     "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ],
    }


def create_output(
    path: str,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    chunk: tuple[int, int],
    name: str,
    pixel_size_um: tuple[float, float] | None = None,
    extra_attributes: dict[str, Any] | None = None,
) -> str:
    """Create the output group and its empty full-resolution array; returns the array's path.

    The array is chunked exactly to the output tile grid (no sharding), so every tile
    writes whole chunks of its own and concurrent workers never share one.
    """
    group = zarr.open_group(path, mode="w-", zarr_format=3)
    attrs: dict[str, Any] = {"ome": multiscales_metadata(name, pixel_size_um)}
    if extra_attributes:
        attrs.update(extra_attributes)
    group.attrs.update(attrs)
    group.create_array(
        FULL_RESOLUTION,
        shape=shape,
        chunks=(shape[0], *chunk),
        dtype=dtype,
        dimension_names=("c", "y", "x"),
        fill_value=0,
    )
    return f"{path.rstrip('/')}/{FULL_RESOLUTION}"
