"""Image metadata carried from input to output, and its OME-NGFF form.

Inputs describe themselves with a plain dict (see ``InputImage.metadata``):

``mpp``              ``[y, x]`` micrometres per pixel (slides, OME images)
``objective_power``  the scanner objective's magnification (slides)
``channel_names``    one name per channel
``crs``, ``crs_name`` the GeoTIFF coordinate reference system (``EPSG:n``) and its citation
``pixel_size``       ``[y, x]`` ground size of a pixel in CRS units
``origin``           ``[x, y]`` CRS coordinates of the raster's origin (see ``raster_type``)
``raster_type``      1: the origin is the corner of pixel (0, 0) (PixelIsArea); 2: its centre
``geokeys``          the GeoTIFF GeoKey directory, doubles and ASCII params, verbatim
``linear_unit``      the CRS's linear unit, where it is a unit OME-NGFF knows (``meter``)
``nodata``           the value that marks pixels without data

:func:`scaled` is what an upscaled output inherits; :func:`ome_attributes` writes it in
OME-NGFF 0.5 form (``multiscales`` with units and per-level physical scales, ``omero``
channel labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Keys whose values do not change with the pixel grid.
_UNCHANGED = ("channel_names", "crs", "crs_name", "raster_type", "geokeys", "linear_unit", "nodata")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any, positive: bool = False) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value)
            and (not positive or all(v > 0 for v in value)))


def _geokeys(value: Any) -> bool:
    if not isinstance(value, dict) or not set(value) <= {"GeoKeyDirectoryTag", "GeoDoubleParamsTag",
                                                        "GeoAsciiParamsTag"}:
        return False
    shorts, doubles = value.get("GeoKeyDirectoryTag", []), value.get("GeoDoubleParamsTag", [])
    return (isinstance(shorts, list) and all(isinstance(v, int) and 0 <= v < 65536 for v in shorts)
            and isinstance(doubles, list) and all(_number(v) for v in doubles)
            and isinstance(value.get("GeoAsciiParamsTag", ""), str))


#: What a well-formed value of each key looks like.
_WELL_FORMED = {
    "mpp": lambda v: _pair(v, positive=True),
    "objective_power": lambda v: _number(v) and v > 0,
    "channel_names": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
    "crs": lambda v: isinstance(v, str),
    "crs_name": lambda v: isinstance(v, str),
    "pixel_size": lambda v: _pair(v, positive=True),
    "origin": _pair,
    "raster_type": lambda v: v in (1, 2) and not isinstance(v, bool),
    "geokeys": _geokeys,
    "linear_unit": lambda v: isinstance(v, str),
    # GDAL's nodata may be NaN.
    "nodata": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def well_formed(meta: Any) -> dict[str, Any]:
    """The entries of ``meta`` that have the form described above; the rest are left out.

    Metadata read back from a store (what a tilewave output inherited) is only a
    description of the pixels: an entry that cannot be read is dropped, as an
    unreadable field of a slide's description is, rather than refusing the image.
    """
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if k in _WELL_FORMED and _WELL_FORMED[k](v)}


def scaled(meta: dict[str, Any], scale: int) -> dict[str, Any]:
    """The metadata of ``meta``'s image upscaled ``scale`` times.

    Pixel sizes shrink by the scale; the objective power grows by it (an x2 upscale of a
    20x scan is viewed as a 40x one); the georeferenced origin stays where it was, moved by
    half a pixel only where it marks a pixel's centre rather than its corner.
    """
    out = {k: meta[k] for k in _UNCHANGED if k in meta}
    if "mpp" in meta:
        out["mpp"] = [v / scale for v in meta["mpp"]]
    if "objective_power" in meta:
        out["objective_power"] = meta["objective_power"] * scale
    if "pixel_size" in meta:
        out["pixel_size"] = [v / scale for v in meta["pixel_size"]]
    if "origin" in meta:
        x, y = meta["origin"]
        if meta.get("raster_type") == 2 and "pixel_size" in meta:
            # The centre of the first pixel moves towards the corner as pixels shrink.
            py, px = meta["pixel_size"]
            x, y = x - px / 2 + px / scale / 2, y + py / 2 - py / scale / 2
        out["origin"] = [x, y]
    return out


def physical_pixel(meta: dict[str, Any]) -> tuple[list[float], str | None]:
    """``([y, x] size of a pixel, unit)`` for OME-NGFF, or ``([1, 1], None)``."""
    if "mpp" in meta:
        return list(meta["mpp"]), "micrometer"
    if "pixel_size" in meta and meta.get("linear_unit"):
        return list(meta["pixel_size"]), meta["linear_unit"]
    return [1.0, 1.0], None


def ome_attributes(name: str, level_paths: Sequence[str], downsample: int, meta: dict[str, Any],
                   channels: int, dtype: np.dtype) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attributes for a ``(c, y, x)`` pyramid.

    Level ``i`` is ``downsample ** i`` times coarser than level 0; its ``scale`` is in the
    physical unit of the axes where the input had one, in pixels of level 0 otherwise.
    """
    (py, px), unit = physical_pixel(meta)
    space: dict[str, Any] = {"type": "space", **({"unit": unit} if unit else {})}
    datasets = []
    for i, path in enumerate(level_paths):
        f = downsample ** i
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, py * f, px * f]}]
        if i:
            # A level's pixel centre sits at the centre of the block of level-0 pixels it
            # averages, not on the first of them.
            transforms.append({"type": "translation",
                               "translation": [0.0, py * (f - 1) / 2, px * (f - 1) / 2]})
        datasets.append({"path": path, "coordinateTransformations": transforms})
    names = meta.get("channel_names") or _default_names(channels)
    top = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    colours = ["FF0000", "00FF00", "0000FF"] if channels in (3, 4) else ["FFFFFF"] * channels
    colours += ["FFFFFF"] * (channels - len(colours))
    return {
        "version": "0.5",
        "multiscales": [{
            "name": name,
            "axes": [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}],
            "datasets": datasets,
        }],
        "omero": {"channels": [
            {"label": str(label), "color": colours[i], "active": True,
             "window": {"min": 0.0, "max": top, "start": 0.0, "end": top}}
            for i, label in enumerate(names)
        ]},
    }


def _default_names(channels: int) -> list[str]:
    return {1: ["grey"], 3: ["red", "green", "blue"], 4: ["red", "green", "blue", "alpha"]}.get(
        channels, [f"channel {i}" for i in range(channels)])
