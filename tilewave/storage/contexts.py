"""The outgoing contexts of finished tiles, one file each in the output's state folder:
written by the producing worker, read by the consuming one, deleted once that consumer is
in the ledger; ``--resume`` hands them on from there."""

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

    def load(self) -> Any:
        return pickle.loads(location.read_bytes(self.path))


class ContextStore:
    """Outgoing contexts of finished tiles, one file each, for ``--resume``."""

    def __init__(self, output: str):
        self.output = output
        self.root = layout.contexts_dir(output)

    def path(self, producer: TileIndex, direction: str) -> str:
        return layout.context_path(self.output, producer, direction)

    def save(self, producer: TileIndex, direction: str, value: Any) -> PersistedContext:
        path = self.path(producer, direction)
        location.write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
                             durable=True)
        return PersistedContext(path)

    def existing(self, producer: TileIndex, direction: str) -> PersistedContext | None:
        path = self.path(producer, direction)
        return PersistedContext(path) if location.exists(path) else None

    def remove(self, producer: TileIndex, direction: str) -> None:
        location.remove_file(self.path(producer, direction))
