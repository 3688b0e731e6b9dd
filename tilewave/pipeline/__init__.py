"""The tile grid, the raster-order DAG scheduler, blending, per-tile compute, and the
driver loop."""

from .blend import RAMPS, Ramp
from .plan import Tile, TileGrid
from .runner import RunStats, run_tiles
from .tile_compute import reference_upscale, run_tile
from .wavefront import ContextTable, Wavefront

__all__ = [
    "RAMPS", "ContextTable", "Ramp", "RunStats", "Tile", "TileGrid", "Wavefront",
    "reference_upscale", "run_tile", "run_tiles",
]
