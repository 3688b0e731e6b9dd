"""Scheduling policies, one small class each, free of Ray so they are tested alone.

* :class:`RowsAhead`: how far below the first unfinished row a tile may start.
* :func:`share_nodes`: how many tiles at once each node's worker process runs.
* :class:`LeastLoaded`: which worker gets the next tile.
* :class:`RetryLostTiles`: how often a tile may lose its worker before the run gives up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import WorkerLostError

#: Tiles a GPU worker runs through its model at once (``--batch``) unless told otherwise.
GPU_BATCH = 4


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


@dataclass(frozen=True)
class Placement:
    """One worker process: the node it runs on and how many tiles it computes at once."""

    node: str | None
    slots: int


def share_nodes(tiles_at_once: int, nodes: dict[str, int]) -> list[Placement]:
    """Spread ``tiles_at_once`` over ``nodes`` (node id -> CPUs): one worker process per
    node, with as many slots as it has CPUs, the largest nodes filled first.

    One process per node holds one copy of the model and of torch, instead of one per
    core. Raises ValueError when the nodes have fewer CPUs than ``tiles_at_once``.
    """
    if tiles_at_once > sum(nodes.values()):
        raise ValueError(f"{tiles_at_once} tiles at once need more than the nodes' "
                         f"{sum(nodes.values())} CPUs")
    out: list[Placement] = []
    left = tiles_at_once
    for node, cpus in sorted(nodes.items(), key=lambda kv: (-kv[1], kv[0])):
        if left <= 0:
            break
        if cpus >= 1:
            out.append(Placement(node, min(cpus, left)))
            left -= out[-1].slots
    return out


@dataclass
class LeastLoaded:
    """Dispatch to the worker with the lowest load per slot (the lowest index on ties)."""

    workers: int
    slots: list[int] | None = None
    load: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.load = [0] * self.workers
        if self.slots is None:
            self.slots = [1] * self.workers

    def pick(self) -> int:
        """The worker to give the next tile to; counts it as queued there."""
        slots = self.slots or []
        k = min(range(self.workers), key=lambda i: self.load[i] / slots[i])
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
    lost: dict[tuple[int, ...], int] = field(default_factory=dict)

    def record_loss(self, index: tuple[int, ...], cause: str) -> None:
        """Count a lost attempt of ``index``; raises once it has lost too many."""
        self.lost[index] = self.lost.get(index, 0) + 1
        if self.lost[index] > self.attempts:
            raise WorkerLostError(
                f"tile {index} lost its worker {self.attempts} times ({cause}); the cluster "
                "is failing: rerun with --resume to keep the finished tiles")
