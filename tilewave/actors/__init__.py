"""Workers that hold a model and process tiles, and the pools that run them (Ray actors,
or in process)."""

from .cluster import ClusterInfo, connect, disconnect
from .pools import Completion, InProcessPool, RayPool, TilePool
from .worker import TileDone, TileError, TileWorker, WorkerJob

__all__ = [
    "ClusterInfo", "Completion", "InProcessPool", "RayPool", "TileDone", "TileError",
    "TilePool", "TileWorker", "WorkerJob", "connect", "disconnect",
]
