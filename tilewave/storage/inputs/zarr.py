"""Zarr inputs: Zarr arrays and OME-Zarr images, described and read in place (workers
read their windows through :class:`~tilewave.storage.arrays.ArrayReader`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from .. import location
from ..arrays import ArraySpec
from ..metadata import well_formed
from .base import InputImage, _short


def _guess_axes(shape: tuple[int, ...], path: str) -> str:
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        if shape[0] <= 4 and shape[2] > 4:
            return "cyx"
        if shape[2] <= 4 and shape[0] > 4:
            return "yxc"
    raise InputError(
        f"input {path!r} is a Zarr array of shape {shape} whose channel axis cannot be told; "
        "store it as (c, y, x) with dimension_names set, or as an OME-Zarr image"
    )


def _open_zarr(path: str) -> InputImage:
    import zarr

    try:
        node = zarr.open(path, mode="r")
        if not isinstance(node.attrs.asdict(), dict):
            raise TypeError("its attributes are not a JSON object")
    except Exception as exc:
        if any(location.exists(location.join(path, name)) for name in ("zarr.json", ".zarray", ".zgroup")):
            raise InputError(
                f"input {path!r} has malformed Zarr metadata ({type(exc).__name__}: {_short(exc)}); "
                "check its zarr.json, or copy the store again"
            ) from None
        raise InputError(
            f"input {path!r} is a folder but not a Zarr array or group ({_short(exc)}); "
            "point to a Zarr array, an OME-Zarr image or an image file"
        ) from None
    try:
        return _describe_zarr(path, node)
    except InputError:
        raise
    except Exception as exc:  # malformed metadata: missing keys, datasets or axes
        raise InputError(
            f"input {path!r} has malformed Zarr or OME-Zarr metadata ({type(exc).__name__}: "
            f"{_short(exc)}); check the store"
        ) from None


def _describe_zarr(path: str, node: Any) -> InputImage:
    import zarr

    fmt = "zarr"
    levels: list[tuple[int, int]] = []
    meta: dict[str, Any] = {}
    if isinstance(node, zarr.Group):
        # User metadata, any JSON: malformed shapes end in the caller's one-line error.
        ome: Any = node.attrs.get("ome", node.attrs.asdict())
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        if not multiscales:
            raise InputError(
                f"input {path!r} is a Zarr group without OME-Zarr multiscales metadata; "
                "point to the array inside it instead"
            )
        ms: Any = multiscales[0]
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])).lower()
        datasets = ms["datasets"]
        array_path = location.join(path, datasets[0]["path"])
        fmt = "ome-zarr"
        for ds in datasets:
            arr: Any = node[ds["path"]]
            by = dict(zip(axes, arr.shape))
            levels.append((by["y"], by["x"]))
        scale = next((t["scale"] for t in datasets[0].get("coordinateTransformations", [])
                      if t.get("type") == "scale"), None)
        units = {a.get("name"): a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
        job = node.attrs.get("tilewave")
        if isinstance(job, dict):
            meta.update(well_formed(job.get("metadata")))  # what a tilewave output inherited
        if scale and units.get("y") in ("micrometer", "micron") and units.get("x") in ("micrometer", "micron"):
            meta["mpp"] = [float(scale[axes.index("y")]), float(scale[axes.index("x")])]
        labels = [ch.get("label") for ch in (ome.get("omero") or {}).get("channels", [])]
        if "channel_names" not in meta and labels and all(labels):
            meta["channel_names"] = labels
        array = zarr.open_array(array_path, mode="r")
    else:
        array = node
        array_path = path
        names = getattr(array.metadata, "dimension_names", None)
        if names and all(names):
            axes = "".join(n.lower()[0] for n in names)
        else:
            axes = _guess_axes(array.shape, path)
    if (not set(axes) <= set("tczyx") or "y" not in axes or "x" not in axes
            or len(axes) != array.ndim or len(set(axes)) != len(axes)):
        raise InputError(f"input {path!r} has axes {axes!r}; tilewave needs y, x and optionally c, t, z")
    by = dict(zip(axes, array.shape))
    for extra in "tz":
        if by.get(extra, 1) != 1:
            raise InputError(
                f"input {path!r} has {by[extra]} planes along {extra!r}; extract a single plane first"
            )
    if not levels:
        levels.append((by["y"], by["x"]))
    chunk_by = dict(zip(axes, array.chunks))
    shape = (by.get("c", 1), by["y"], by["x"])
    return InputImage(path=path, format=fmt, shape=shape, dtype=np.dtype(array.dtype),
                      chunks=(chunk_by["y"], chunk_by["x"]), levels=tuple(levels), metadata=meta,
                      array=ArraySpec(array_path, axes))


class _WindowedReader:
    """Presents an :class:`ArrayReader` as a ``(c, y, x)`` array to dask."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = reader.dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        cs, ys, xs = key
        try:
            return self.reader.read(ys.start or 0, ys.stop, xs.start or 0, xs.stop)[cs]
        except Exception as exc:  # the codecs and Zarr raise their own error types
            raise InputError(
                f"input {self.reader.spec.path!r} is damaged: its pixels in rows {ys.start}:"
                f"{ys.stop}, columns {xs.start}:{xs.stop} cannot be read ({_short(exc)}); "
                "copy the complete store again"
            ) from None
