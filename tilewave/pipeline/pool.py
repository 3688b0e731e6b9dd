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
    """One stage's way into workers that run its tiles and pyramid chunks, and may run
    other stages' (a cohort's inputs) at the same time: ``capacity`` is what this stage
    has submitted plus what no stage holds, and :meth:`wait` with nothing submitted
    waits for room (returning nothing)."""

    #: Tiles computing at once, and the worker processes they run in (0: this process).
    workers: int
    processes: int
    @property
    def capacity(self) -> int:
        """How many tiles may be submitted and not yet completed, now."""
        ...

    #: Told of every tile or chunk submitted again after its worker was lost (pools that
    #: never lose a worker never call it).
    on_retry: Callable[[WorkIndex, str], None] | None

    def submit(self, index: WorkIndex, inbound: Inbound, step: int | None = None) -> None:
        """Run tile ``(row, col)`` with its ``inbound`` contexts (only its sampler
        ``step``, if given), or pyramid chunk ``(level, row, col)``."""
        ...

    def wait(self) -> list[TileDone]:
        """Block until at least one submitted tile finished (or, with none submitted,
        until the workers have room); raise if one failed."""
        ...

    def in_flight(self) -> int:
        """Submitted and not yet returned by :meth:`wait`."""
        ...

    @property
    def retried(self) -> int:
        """Tiles and chunks submitted again because their worker was lost."""
        ...

    def close(self, drain: bool = True) -> None:
        """Leave the workers, giving back this job's share of them; with ``drain``, once
        its tiles still running ended (so nothing writes into its output afterwards)."""
        ...


class PoolLauncher(Protocol):
    """Starts each stage's workers, on the job's executor (joined once for all stages)."""

    def __call__(self, job: TileJob, tiles: int, label: str) -> AbstractContextManager[TilePool]:
        """A way into workers for ``job`` (started for at most its ``tiles`` left, unless
        they serve other jobs too), closed on leaving."""
        ...

    def close(self) -> None:
        """Leave the cluster this launcher joined or started, if any."""
        ...
