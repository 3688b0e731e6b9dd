"""Scheduling policies, one small class each, free of Ray so they are tested alone.

* :class:`RowsAhead`: how far below the first unfinished row a tile may start.
* :class:`LeastLoaded`: which worker gets the next tile.
* :class:`RetryLostTiles`: how often a tile may lose its worker before the run gives up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import WorkerLostError

Index = tuple[int, int]


@dataclass(frozen=True)
class RowsAhead:
    """Tiles may start at most ``rows`` rows below the first unfinished row (None: any).

    Tiles within a row depend on each other, so parallel work comes from several rows at
    once; but without a cap the first column (which waits only on the tile above) would
    race down the image while one slow tile holds up its row, and every tile it finished
    would keep its contexts alive. With it, live contexts stay within ``rows + 1`` rows.
    """

    rows: int | None = None

    @classmethod
    def for_workers(cls, workers: int, dependent: bool) -> RowsAhead:
        """One row ahead per worker (each advances one row at a time) and one spare to
        hide latency; independent tiles need no cap."""
        return cls(workers + 1 if dependent else None)

    def allows(self, row: int, first_unfinished_row: int) -> bool:
        return self.rows is None or row <= first_unfinished_row + self.rows


@dataclass
class LeastLoaded:
    """Dispatch to the worker with the fewest tiles queued (the lowest index on ties)."""

    workers: int
    load: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.load = [0] * self.workers

    def pick(self) -> int:
        """The worker to give the next tile to; counts it as queued there."""
        k = min(range(self.workers), key=self.load.__getitem__)
        self.load[k] += 1
        return k

    def finished(self, k: int) -> None:
        self.load[k] -= 1


@dataclass
class RetryLostTiles:
    """A tile whose worker died (process or node) runs again, up to ``attempts`` times.

    Running a tile again is safe whether or not the lost attempt got as far as writing:
    a tile only ever (re)writes its own chunk and its own context files.
    """

    attempts: int = 4
    lost: dict[Index, int] = field(default_factory=dict)

    def record_loss(self, index: Index, cause: str) -> None:
        """Count a lost attempt of ``index``; raises once it has lost too many."""
        self.lost[index] = self.lost.get(index, 0) + 1
        if self.lost[index] > self.attempts:
            raise WorkerLostError(
                f"tile {index} lost its worker {self.attempts} times ({cause}); the cluster "
                "is failing: rerun with --resume to keep the finished tiles")
