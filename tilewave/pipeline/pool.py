"""What the pipeline asks of tile workers, and of what starts them: the two protocols
that :mod:`tilewave.actors` implements (Ray actors, or this process). The pipeline knows
only these; Ray is imported in :mod:`tilewave.actors` alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .indices import WorkIndex
from .messages import TileDone, TileJob

#: The contexts a tile receives, by direction.
Inbound = Mapping[str, Any]


class TilePool(Protocol):
    """Workers that run one stage's tiles and pyramid chunks."""

    #: Tiles computing at once, and the worker processes they run in (0: this process).
    workers: int
    processes: int
    #: How many tiles may be submitted and not yet completed.
    capacity: int
    #: Told of every tile or chunk submitted again after its worker was lost (pools that
    #: never lose a worker never call it).
    on_retry: Callable[[WorkIndex, str], None] | None

    def submit(self, index: WorkIndex, inbound: Inbound, step: int | None = None) -> None:
        """Run tile ``(row, col)`` with its ``inbound`` contexts (only its sampler
        ``step``, if given), or pyramid chunk ``(level, row, col)``."""
        ...

    def wait(self) -> list[TileDone]:
        """Block until at least one submitted tile finished; raise if one failed."""
        ...

    def in_flight(self) -> int:
        """Submitted and not yet returned by :meth:`wait`."""
        ...

    @property
    def retried(self) -> int:
        """Tiles and chunks submitted again because their worker was lost."""
        ...

    def retarget(self, job: TileJob) -> None:
        """Run ``job``'s tiles from now on (a cohort's next input), keeping the workers and
        their model where ``job`` runs the same one. Only between jobs: nothing in flight."""
        ...

    def close(self) -> None:
        """Stop the workers (and give back what this process changed for them)."""
        ...


class PoolLauncher(Protocol):
    """Starts each stage's workers, on the job's executor (joined once for all stages)."""

    def __call__(self, job: TileJob, tiles: int, label: str) -> AbstractContextManager[TilePool]:
        """Workers for ``job`` (at most one per one of its ``tiles`` left), closed on leaving."""
        ...

    def close(self) -> None:
        """Leave the cluster this launcher joined or started, if any."""
        ...
