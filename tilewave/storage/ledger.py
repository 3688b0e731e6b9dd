"""The ledger of a job: one line per finished tile or pyramid chunk (with the CRC-32 of
its output chunk), and ``forget`` lines for what a verify took back. One appended file
where the output's backend appends (fsynced, a torn last line dropped), a folder of
whole numbered objects elsewhere (object stores)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..pipeline.indices import TileIndex
from . import layout
from .backends import Backend, backend_for


class LedgerLog(Protocol):
    """Where the ledger's lines are kept: what differs between backends."""

    path: str

    def lines(self) -> list[str]:
        """Every line, each ending in a newline but a last one a crash cut short."""
        ...

    def append(self, text: str) -> None:
        """Add whole lines, durably, before returning."""
        ...


def _split_lines(text: str) -> list[str]:
    """``text`` as lines that keep their newline; a last one without it stays so."""
    *whole, last = text.split("\n")
    return [line + "\n" for line in whole] + ([last] if last else [])


class AppendLog:
    """The ledger as one file, appended to and flushed (``fsync``) at each record."""

    def __init__(self, backend: Backend, path: str):
        self.backend, self.path = backend, path
        self._tidy = False

    def lines(self) -> list[str]:
        if not self.backend.exists(self.path):
            return []
        return _split_lines(self.backend.read_bytes(self.path).decode())

    def append(self, text: str) -> None:
        if not self._tidy:
            self._drop_torn_line()
            self._tidy = True
        self.backend.append_bytes(self.path, text.encode(), durable=True)

    def _drop_torn_line(self) -> None:
        """Cut a last line a crash left unfinished, so the next append starts clean."""
        if not self.backend.exists(self.path):
            return
        data = self.backend.read_bytes(self.path)
        if data and not data.endswith(b"\n"):
            self.backend.write_bytes(self.path, data[: data.rfind(b"\n") + 1], durable=True)


class BatchLog:
    """The ledger as a folder of whole objects, one per record, where files cannot be
    appended to: each is there complete or not at all, so no line is ever torn."""

    def __init__(self, backend: Backend, path: str):
        self.backend, self.path = backend, path
        self._batches = 0

    def lines(self) -> list[str]:
        names = sorted(self.backend.listdir(self.path))
        self._batches = max(self._batches, len(names))
        text = "".join(self.backend.read_bytes(self.backend.join(self.path, n)).decode()
                       for n in names)
        return [line + "\n" for line in text.splitlines()]

    def append(self, text: str) -> None:
        if not text:
            return
        if self._batches == 0:
            self._batches = len(self.backend.listdir(self.path))
        # Numbered on from what is there and never reused, so a resumed job's come after.
        name = layout.ledger_batch(self.path, self._batches)
        self.backend.write_bytes(name, text.encode(), durable=True)
        self._batches += 1


def ledger_log(output: str) -> LedgerLog:
    """The ledger's lines of ``output``: appended where its backend can, else in batches."""
    backend = backend_for(output)
    path = layout.ledger_path(output)
    return AppendLog(backend, path) if backend.appendable else BatchLog(backend, path)


class Ledger:
    """Append-only record of finished tiles; the driver is its only writer.

    Kept by a :class:`LedgerLog`: on a local (or mounted) filesystem one file, appended
    and fsynced; on an object store one new object per :meth:`record`.

    A line is ``row col`` (a tile) or ``level row col`` (a pyramid chunk), followed by
    ``c=XXXXXXXX``, the CRC-32 of the pixels written, where the worker reported one. A
    line ``forget row col`` (or ``forget level row col``) takes an entry back: what
    ``--verify`` found damaged, to be run again. Under ``--schedule step`` a line
    ``step row col k`` says that tile's sampler step ``k`` is done (its last step is
    recorded as the tile).
    """

    def __init__(self, output: str, log: LedgerLog | None = None):
        self._log = log if log is not None else ledger_log(output)
        self.path = self._log.path
        #: What the ledger holds, read once: this object is the ledger's only writer.
        self._known: dict[tuple[int, ...], int | None] | None = None

    def _entries(self) -> dict[tuple[int, ...], int | None]:
        """Every recorded entry and its checksum; a line torn by a crash is ignored."""
        if self._known is None:
            self._known = self._read()
        return self._known

    def _read(self) -> dict[tuple[int, ...], int | None]:
        entries: dict[tuple[int, ...], int | None] = {}
        for line in self._log.lines():
            parsed = _parse(line) if line.endswith("\n") else None
            if parsed is None:
                continue
            entry, crc, forget = parsed
            if forget:
                entries.pop(entry, None)
                if len(entry) == 2:  # a tile taken back runs all its sampler steps again
                    for e in [e for e in entries if len(e) == 4 and e[1:3] == entry]:
                        del entries[e]
            else:
                entries[entry] = crc
        return entries

    def done(self) -> set[TileIndex]:
        """Tiles recorded as finished: ``(row, col)``."""
        return {(e[0], e[1]) for e in self._entries() if len(e) == 2}

    def done_chunks(self) -> set[tuple[int, int, int]]:
        """Pyramid chunks recorded as finished: ``(level, row, col)``."""
        return {(e[0], e[1], e[2]) for e in self._entries() if len(e) == 3}

    def steps_done(self) -> dict[TileIndex, int]:
        """How many sampler steps each unfinished tile has run (``--schedule step``)."""
        done = self.done()
        out: dict[TileIndex, int] = {}
        for e in self._entries():
            if len(e) == 4 and (e[1], e[2]) not in done:
                out[(e[1], e[2])] = max(out.get((e[1], e[2]), 0), e[3] + 1)
        return out

    def checksums(self) -> dict[tuple[int, ...], int | None]:
        """The checksum recorded with each finished tile and chunk (None: none recorded)."""
        return {e: c for e, c in self._entries().items() if len(e) < 4}

    def record(self, entries: Iterable[tuple[int, ...]],
               checksums: Iterable[int | None] | None = None) -> None:
        """Append finished tiles ``(row, col)``, pyramid chunks ``(level, row, col)`` and
        sampler steps (:func:`step_entry`) with the checksums of what was written,
        flushed to disk before returning."""
        entries = list(entries)
        crcs = list(checksums) if checksums is not None else [None] * len(entries)
        lines = "".join(_line(e) + (f" c={c:08x}" if c is not None else "") + "\n"
                        for e, c in zip(entries, crcs))
        if self._known is not None:
            self._known.update(zip(entries, crcs))
        self._log.append(lines)

    def forget(self, entries: Iterable[tuple[int, ...]]) -> None:
        """Take entries back, so that a resumed run does them again."""
        entries = list(entries)
        self._known = None  # read again: a tile taken back takes its steps with it
        self._log.append("".join("forget " + " ".join(map(str, e)) + "\n" for e in entries))

    def close(self) -> None:
        """Nothing stays open between records; kept so that callers may close a ledger."""


#: The first number of a sampler step's entry, which no tile or chunk entry has.
_STEP = -1


def step_entry(row: int, col: int, step: int) -> tuple[int, int, int, int]:
    """The ledger entry of step ``step`` of tile ``(row, col)`` (not its last)."""
    return (_STEP, row, col, step)


def _line(entry: tuple[int, ...]) -> str:
    if len(entry) == 4:
        return "step " + " ".join(map(str, entry[1:]))
    return " ".join(map(str, entry))


def _parse(line: str) -> tuple[tuple[int, ...], int | None, bool] | None:
    """``(entry, checksum, forget)`` of a ledger line, or None if it is not one."""
    words = line.split()
    forget = bool(words) and words[0] == "forget"
    if forget:
        words = words[1:]
    step = bool(words) and words[0] == "step"
    if step:
        words = words[1:]
    crc = None
    if words and words[-1].startswith("c="):
        try:
            crc = int(words.pop()[2:], 16)
        except ValueError:
            return None
    if len(words) not in ((3,) if step else (2, 3)) or not all(w.isdigit() for w in words):
        return None
    numbers = tuple(int(w) for w in words)
    return (step_entry(*numbers) if step else numbers), crc, forget
