"""Workers that hold a model and process tiles, the pools that run them (Ray actors, or
in process), and the connection to Ray."""

from __future__ import annotations

from .._lazy import lazy_attributes, lazy_dir

__all__ = ["ClusterInfo", "InProcessPool", "RayPool", "TilePool", "TileWorker", "connect",
           "disconnect"]

_LAZY = {
    "ClusterInfo": ".cluster", "connect": ".cluster", "disconnect": ".cluster",
    "InProcessPool": ".pools", "RayPool": ".pools", "TilePool": ".pools",
    "TileWorker": ".worker"}
__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(globals(), _LAZY)
