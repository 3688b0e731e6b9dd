"""The outgoing contexts of finished tiles, one file each in the output's state folder:
written by the producing worker, read by the consuming one, deleted once that consumer is
in the ledger; ``--resume`` hands them on from there. Under ``--schedule step`` a context
is one sampler step's, and a tile's sampler state waits between its steps likewise
(:class:`StateStore`)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ..pipeline.indices import TileIndex
from . import layout, location


@dataclass(frozen=True)
class PersistedContext:
    """A context that lives in the job's context store rather than in memory."""

    path: str
    #: The pickled size, for the driver's count of context bytes in flight.
    nbytes: int = 0

    def load(self) -> Any:
        return pickle.loads(location.read_bytes(self.path))


class ContextStore:
    """Outgoing contexts of finished tiles, one file each, for ``--resume``."""

    def __init__(self, output: str):
        self.output = output
        self.root = layout.contexts_dir(output)

    def path(self, producer: TileIndex, direction: str, step: int | None = None) -> str:
        return layout.context_path(self.output, producer, direction, step)

    def save(self, producer: TileIndex, direction: str, value: Any,
             step: int | None = None) -> PersistedContext:
        return _save(self.path(producer, direction, step), value)

    def existing(self, producer: TileIndex, direction: str,
                 step: int | None = None) -> PersistedContext | None:
        path = self.path(producer, direction, step)
        return PersistedContext(path, location.stat(path)[0] or 0) if location.exists(path) else None

    def remove(self, producer: TileIndex, direction: str, step: int | None = None) -> None:
        location.remove_file(self.path(producer, direction, step))


class StateStore:
    """Sampler states between a tile's steps (``--schedule step``), one file per tile and
    step: step ``k`` reads what step ``k - 1`` left and writes its own under a new name,
    so a step run again after a crash reads the same state as the first attempt did."""

    def __init__(self, output: str):
        self.output = output
        self.root = layout.states_dir(output)

    def path(self, tile: TileIndex, step: int) -> str:
        return layout.state_path(self.output, tile, step)

    def save(self, tile: TileIndex, step: int, value: Any) -> None:
        _save(self.path(tile, step), value)

    def load(self, tile: TileIndex, step: int) -> Any:
        return PersistedContext(self.path(tile, step)).load()

    def exists(self, tile: TileIndex, step: int) -> bool:
        return location.exists(self.path(tile, step))

    def remove(self, tile: TileIndex, step: int) -> None:
        location.remove_file(self.path(tile, step))


def _save(path: str, value: Any) -> PersistedContext:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    location.write_bytes(path, payload, durable=True)
    return PersistedContext(path, len(payload))
