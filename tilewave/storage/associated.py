"""A slide's associated images (label, macro, thumbnail): read from the input, kept in the
output beside the pyramid, written into TIFF exports. They are not upscaled.

They live in the OME-Zarr output as small ``(y, x, c)`` arrays in a group ``associated``
(``OUTPUT/associated/label``, ...), which OME-Zarr readers pass over and
:mod:`~tilewave.storage.tiff_export` writes where slide readers look for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import zarr

from . import location

#: The names slide readers know, in the order exports write them.
NAMES = ("thumbnail", "label", "macro")
GROUP = "associated"
T = TypeVar("T")
#: Files that may be slides with associated images (tifffile opens local files only).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi")


def _named_series(path: str, take: Callable[[Any], T]) -> dict[str, T]:
    """``take(series)`` of each associated image of the Aperio SVS slide at ``path``, by
    name in :data:`NAMES` order; empty for other inputs, and where reading fails (the
    pyramid was read already; a damaged extra is not worth failing for)."""
    if not location.is_local(path) or not path.lower().endswith(SLIDE_SUFFIXES):
        return {}
    import tifffile

    found: dict[str, T] = {}
    try:
        with tifffile.TiffFile(path) as tf:
            # Aperio SVS keeps them as named series; asking other files for their series
            # would parse them again (and repeat their warnings) for nothing.
            if not tf.is_svs:
                return {}
            for series in tf.series[1:]:
                name = (series.name or "").lower()
                if name in NAMES and name not in found:
                    found[name] = take(series)
    except Exception:  # I/O and every codec's own errors
        return {}
    return {name: found[name] for name in NAMES if name in found}


def read_associated(path: str) -> dict[str, np.ndarray]:
    """The associated images of the input at ``path`` (an Aperio SVS slide), by name;
    empty for other inputs. Only 8-bit RGB images are kept (what slide TIFFs hold)."""
    pixels = _named_series(path, lambda series: series.asarray())
    return {name: p for name, p in pixels.items()
            if p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3}


def associated_sizes(path: str) -> dict[str, tuple[int, int]]:
    """The ``(width, height)`` of each associated image of an input (an Aperio SVS slide)
    or of a tilewave output, by name, without decoding them; empty where there are none."""
    if location.isdir(path):
        try:
            group = zarr.open_group(path, mode="r")
        except Exception:  # not a Zarr group: a folder of something else has none
            return {}
        if GROUP not in group:
            return {}
        sub = cast(zarr.Group, group[GROUP])
        shapes = {name: cast(zarr.Array, sub[name]).shape for name in NAMES if name in sub}
        return {name: (int(shape[1]), int(shape[0])) for name, shape in shapes.items()}
    return _named_series(path, lambda series: (int(series.shape[1]), int(series.shape[0])))


def write_associated(store: str, images: dict[str, np.ndarray]) -> None:
    """Keep ``images`` in the output ``store`` (replacing any kept before)."""
    if not images:
        return
    group = zarr.open_group(store, mode="r+")
    sub = group.require_group(GROUP)
    for name, pixels in images.items():
        sub.create_array(name, data=pixels, chunks=pixels.shape, overwrite=True)


def load_associated(store: str) -> dict[str, np.ndarray]:
    """The associated images kept in ``store``, by name (empty where there are none)."""
    group = zarr.open_group(store, mode="r")
    if GROUP not in group:
        return {}
    sub = cast(zarr.Group, group[GROUP])
    return {name: np.asarray(cast(zarr.Array, sub[name])[:]) for name in NAMES if name in sub}
