"""What ``tilewave info`` prints: an image's geometry and metadata, and for a tilewave
output, the job that wrote it and how far it got."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from . import location
from .inputs import _short, open_input
from .ledger import Ledger
from .manifest import Manifest


def describe(path: str) -> dict[str, Any]:
    """Facts about the image at ``path``, in display order."""
    image = open_input(path, check=False)
    c, h, w = image.shape
    facts: dict[str, Any] = {
        "path": image.path,
        "format": image.format,
        "size": f"{w} x {h} pixels",
        "channels": c,
        "dtype": str(image.dtype),
        "chunks": f"{image.chunks[1]} x {image.chunks[0]}" if image.chunks else "none (whole file)",
        "levels": [f"{lw} x {lh}" for lh, lw in image.levels],
    }
    if image.compression is not None:
        facts["compression"] = image.compression.describe()
    meta = image.metadata
    if "mpp" in meta:
        facts["pixel size"] = f"{meta['mpp'][1]:.6g} x {meta['mpp'][0]:.6g} um"
    if "objective_power" in meta:
        facts["objective"] = f"{meta['objective_power']:g}x"
    if "crs" in meta:
        facts["crs"] = meta["crs"] + (f" ({meta['crs_name']})" if "crs_name" in meta else "")
    if "pixel_size" in meta:
        unit = {"meter": "m"}.get(meta.get("linear_unit", ""), "(CRS units)")
        facts["ground pixel"] = f"{meta['pixel_size'][1]:g} x {meta['pixel_size'][0]:g} {unit}"
    if "origin" in meta:
        facts["origin"] = f"x={meta['origin'][0]:.10g}, y={meta['origin'][1]:.10g}"
    if "nodata" in meta:
        facts["nodata"] = meta["nodata"]
    if "channel_names" in meta:
        facts["channel names"] = ", ".join(meta["channel_names"])
    from .associated import associated_sizes

    extras = associated_sizes(path)
    if extras:
        facts["associated"] = ", ".join(f"{name} {w} x {h}" for name, (w, h) in extras.items())
    if location.isdir(path):
        facts.update(_job_facts(path))
    return facts


def _job_facts(path: str) -> dict[str, Any]:
    """What the job record of a tilewave output says, or nothing for other stores."""
    try:
        manifest = Manifest.read(path)
        job = manifest.as_dict() if manifest is not None else None
        if job is None:
            return {}
        s = job["settings"]
        rows, cols = job["grid"]
        done = rows * cols if job.get("complete") else len(Ledger(path).done())
        return {
            "written by": (f"tilewave {job['tilewave']}: {s['model']} x{s['scale']}, "
                           f"{s['mode']} mode, tile {s['tile']}"
                           + (", consistent with the input" if s.get("consistent") else "")),
            "from": job["input"]["path"],
            "tiles done": f"{done} of {rows * cols}" + ("" if job.get("complete") else
                                                         " (incomplete: rerun with --resume)"),
        }
    except Exception as exc:  # a record edited or cut short by hand, or by a crash
        raise InputError(
            f"input {path!r} has a damaged tilewave job record ({type(exc).__name__}: "
            f"{_short(exc)}); rerun the job that wrote it with --overwrite"
        ) from None
