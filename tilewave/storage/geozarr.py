"""Georeferencing and nodata of an OME-Zarr output, where GDAL's Zarr driver reads them.

OME-NGFF has no place for a coordinate reference system, so a georeferenced output
carries it where GDAL (3.11 and newer read tilewave's Zarr v3 codecs) finds it:

* every level array has ``_CRS`` (``{"url": ...}``), which GDAL's Zarr driver reads
  since 3.4, and the ``proj:code`` Zarr convention;
* the group has 1-D ``y`` and ``x`` arrays of level 0's pixel-centre coordinates, from
  which GDAL derives level 0's affine transform (they are its "indexing variables").

Coarser levels get the CRS but no transform in GDAL. The ``spatial:`` and
``multiscales`` conventions, which GDAL 3.13 reads for per-level transforms and
overviews, are left out: OME-Zarr's levels are sibling arrays sharing the dimension
names ``y`` and ``x`` at different sizes, and GDAL 3.13.3 crashes (SIGSEGV) opening such
a group when an array names them in ``spatial:dimensions`` or a ``multiscales`` layout
lists them.

Nodata: a Zarr v3 array must have a ``fill_value`` and GDAL reports it as every band's
nodata. An output whose input has nodata uses that value, so GDAL reports exactly the
input's; an output without nodata keeps 0, which GDAL still reports (see
``docs/gis.md``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import zarr

#: Names of the 1-D coordinate arrays; they match level 0's ``dimension_names``.
COORDINATE_ARRAYS = ("y", "x")
#: Coordinates per chunk of the ``x``/``y`` arrays (512 KiB of float64).
_COORDINATE_CHUNK = 65536

_PROJ = {
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}


def fill_value(meta: dict[str, Any], dtype: np.dtype) -> int | float:
    """The ``fill_value`` of an output's arrays: the input's nodata where it has one that
    ``dtype`` holds, else 0."""
    nodata = meta.get("nodata")
    dtype = np.dtype(dtype)
    if not isinstance(nodata, (int, float)) or isinstance(nodata, bool):
        return 0
    if np.issubdtype(dtype, np.floating):
        return float(nodata)
    info = np.iinfo(dtype)
    if math.isfinite(nodata) and nodata == int(nodata) and info.min <= nodata <= info.max:
        return int(nodata)
    return 0


def _epsg(meta: dict[str, Any]) -> int | None:
    match = re.fullmatch(r"EPSG:(\d+)", str(meta.get("crs", "")))
    return int(match.group(1)) if match else None


def geotransform(meta: dict[str, Any]) -> tuple[float, float, float, float, float, float] | None:
    """Level 0's affine transform in GDAL's order, ``(x0, px, 0, y0, 0, -py)``, or None
    without an EPSG-coded CRS and a north-up grid.

    ``(x0, y0)`` is the corner of pixel (0, 0) whatever the input's raster type, as GDAL
    reports it.
    """
    if "pixel_size" not in meta or "origin" not in meta or _epsg(meta) is None:
        return None
    py, px = (float(v) for v in meta["pixel_size"])
    x, y = (float(v) for v in meta["origin"])
    if meta.get("raster_type") == 2:
        x, y = x - px / 2, y + py / 2
    return (x, px, 0.0, y, 0.0, -py)


def array_attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """Attributes that give a level array its CRS; empty without one."""
    if geotransform(meta) is None:
        return {}
    code = _epsg(meta)
    return {
        "_CRS": {"url": f"http://www.opengis.net/def/crs/EPSG/0/{code}"},
        "proj:code": f"EPSG:{code}",
        "zarr_conventions": [_PROJ],
    }


def group_attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """The group's CRS, for readers that look for it there; empty without one."""
    if geotransform(meta) is None:
        return {}
    return {"proj:code": f"EPSG:{_epsg(meta)}", "zarr_conventions": [_PROJ]}


def write_coordinates(group: zarr.Group, meta: dict[str, Any], height: int, width: int) -> None:
    """The ``y`` and ``x`` arrays of level 0's pixel-centre coordinates, from which GDAL
    takes its transform; nothing without a CRS."""
    gt = geotransform(meta)
    if gt is None:
        return
    x0, px, _, y0, _, neg_py = gt
    for name, n, start, step in (("y", height, y0, neg_py), ("x", width, x0, px)):
        values = start + step * (np.arange(n, dtype=np.float64) + 0.5)
        arr = group.create_array(name, shape=(n,), chunks=(min(n, _COORDINATE_CHUNK),),
                                 dtype="float64", dimension_names=(name,),
                                 fill_value=float("nan"), overwrite=True)
        arr[:] = values
