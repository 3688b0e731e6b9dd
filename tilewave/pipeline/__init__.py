"""The tile grid, the raster-order DAG scheduler, blending, the work of one tile, the job
plan and its phases, and the driver loop. Members load on first use (the work of one
tile needs torch; planning and scheduling do not)."""

from __future__ import annotations

from .._lazy import lazy_attributes, lazy_dir

__all__ = [
    "RAMPS", "ContextTable", "Ramp", "RunStats", "Tile", "TileGrid", "Wavefront",
    "reference_upscale", "run_tile", "run_tiles",
]

_LAZY = {
    "RAMPS": ".blend", "Ramp": ".blend", "Tile": ".grid", "TileGrid": ".grid",
    "RunStats": ".runner", "run_tiles": ".runner", "reference_upscale": ".upscale_window",
    "run_tile": ".upscale_window", "ContextTable": ".wavefront", "Wavefront": ".wavefront"}
__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(globals(), _LAZY)
