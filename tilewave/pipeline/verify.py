"""Checking what the ledger says is done before a resumed run trusts it.

A ledger line is written after its chunk, but a power loss can still undo a chunk the
disk had not flushed (without ``--durable``), and disks and people damage files. Every
recorded tile and pyramid chunk is read back from the output: it must decode to the
right shape and, where the ledger recorded one, to the same checksum. What fails is
taken back from the ledger, with everything that was computed from it:

* in a job whose tiles hand contexts on (context and blend modes), the tiles a damaged
  tile depends on, directly or not: every recorded tile above and to the left of it.
  Their contexts were freed when their consumers finished, and running them again is
  the only way to have them back; tiles compute the same bytes every time, so the
  recomputed ones equal what they replace;
* the pyramid chunks above a tile or chunk that runs again.

:func:`to_rerun` is the rule, as plain sets; :func:`check_recorded` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zarr

from ..storage.arrays import ArrayReader, ArraySpec, checksum
from .grid import TileGrid
from .indices import TileIndex, WorkIndex
from .pyramid_plan import Chunk, PyramidPlan


@dataclass(kw_only=True, frozen=True)
class Verdict:
    """What a check found and what must run again."""

    checked: int
    damaged_tiles: frozenset[TileIndex]
    damaged_chunks: frozenset[Chunk]
    rerun_tiles: frozenset[TileIndex]
    rerun_chunks: frozenset[Chunk]

    @property
    def clean(self) -> bool:
        return not (self.rerun_tiles or self.rerun_chunks)

    def describe(self) -> str:
        if self.clean:
            return f"checked {self.checked} recorded tiles and pyramid chunks: all read back intact"
        damaged = len(self.damaged_tiles) + len(self.damaged_chunks)
        return (f"checked {self.checked} recorded tiles and pyramid chunks: {damaged} damaged or "
                f"missing; running {len(self.rerun_tiles)} tiles and {len(self.rerun_chunks)} "
                "pyramid chunks again")


def to_rerun(damaged_tiles: Iterable[TileIndex], damaged_chunks: Iterable[Chunk],
             done_tiles: set[TileIndex], done_chunks: set[Chunk], dependent: bool,
             pyramid: PyramidPlan | None, partial: Iterable[TileIndex] = ()
             ) -> tuple[set[TileIndex], set[Chunk]]:
    """The recorded tiles and chunks to take back, given the damaged ones; ``partial``
    are tiles part-way through their sampler steps (``--schedule step``)."""
    damaged = set(damaged_tiles)
    tiles = set(damaged)
    started = done_tiles | set(partial)
    if dependent and damaged:
        # A tile's contexts come from the tiles above and to its left, and theirs from
        # the tiles above and to their left: every recorded tile in the rectangle. Under
        # --schedule step that includes tiles part-way through their steps: the contexts
        # of steps their neighbours ran are gone, and a neighbour run again needs them.
        tiles = {(r, c) for (r, c) in started
                 if any(r <= dr and c <= dc for dr, dc in damaged)}
    chunks = set(damaged_chunks) & done_chunks
    if pyramid is not None:
        stale: list[tuple[int, int, int]] = [(0, r, c) for r, c in tiles] + sorted(chunks)
        while stale:
            level, row, col = stale.pop()
            for parent in pyramid.parents(level, row, col):
                if parent in done_chunks and parent not in chunks:
                    chunks.add(parent)
                    stale.append(parent)
    return tiles & started, chunks


def _intact(reader: ArrayReader, window: tuple[int, int, int, int], expected: int | None) -> bool:
    y0, y1, x0, x1 = window
    try:
        pixels = reader.read(y0, y1, x0, x1)
    except OSError:
        raise  # the storage's to say (unreachable, forbidden), not the chunk's
    except Exception:  # a chunk that does not decode is damaged, whatever the decoder says
        return False
    if pixels.shape[1:] != (y1 - y0, x1 - x0):
        return False
    return expected is None or checksum(pixels) == expected


def check_recorded(store: str, grid: TileGrid, pyramid: PyramidPlan | None,
                   recorded: dict[WorkIndex, int | None], dependent: bool,
                   on_checked: Callable[[int], None] | None = None,
                   threads: int = 4, partial: Iterable[TileIndex] = ()) -> Verdict:
    """Read back every entry of ``recorded`` (the ledger's entries and checksums) from
    the output ``store``; see the module's docstring."""
    group = zarr.open_group(store, mode="r")
    readers: dict[int, ArrayReader] = {}

    def reader(level: int) -> ArrayReader:
        if level not in readers:
            readers[level] = ArrayReader(ArraySpec(f"{store.rstrip('/')}/{level}"))
        return readers[level]

    reader(0)
    if pyramid is not None:
        for level in range(1, pyramid.levels + 1):
            if str(level) in group:
                reader(level)

    def window(entry: WorkIndex) -> tuple[int, int, int, int]:
        if len(entry) == 2:
            return grid.out_window(grid[entry[0], entry[1]].core)
        assert pyramid is not None
        return pyramid.window(*entry)

    def check(entry: WorkIndex) -> tuple[WorkIndex, bool]:
        level = 0 if len(entry) == 2 else entry[0]
        if len(entry) == 3 and (pyramid is None or level not in readers):
            return entry, False
        ok = _intact(readers[level], window(entry), recorded[entry])
        if on_checked is not None:
            on_checked(1)
        return entry, ok

    entries = [e for e in recorded if len(e) == 2 and grid.contains(*e)] + [
        e for e in recorded if len(e) == 3]
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(check, entries))
    bad_tiles = {(e[0], e[1]) for e, ok in results if not ok and len(e) == 2}
    bad_chunks = {(e[0], e[1], e[2]) for e, ok in results if not ok and len(e) == 3}
    done_tiles = {(e[0], e[1]) for e in entries if len(e) == 2}
    done_chunks = {(e[0], e[1], e[2]) for e in entries if len(e) == 3}
    tiles, chunks = to_rerun(bad_tiles, bad_chunks, done_tiles, done_chunks, dependent, pyramid,
                             partial)
    return Verdict(checked=len(entries), damaged_tiles=frozenset(bad_tiles),
                   damaged_chunks=frozenset(bad_chunks), rerun_tiles=frozenset(tiles),
                   rerun_chunks=frozenset(chunks))
