"""What a job tells its caller: the counters of what ran (:class:`Counts`, one type for a
pass of the driver loop, a stage and the whole job), the :class:`Report` a call to
:func:`tilewave.upscale` returns, and the :class:`Progress` lines and bars it shows."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(kw_only=True)
class Counts:
    """What ran: counted per pass of the driver loop, per stage, and summed for a job."""

    tiles_run: int = 0
    #: Tiles that took the cheap path (``adaptive``): easy tiles upscaled with bicubic.
    tiles_cheap: int = 0
    #: Running the tiles (workers already started; pyramid chunks run among them), and the
    #: pyramid chunks left after the last tile, in seconds.
    tile_seconds: float = 0.0
    pyramid_seconds: float = 0.0
    #: Sampler steps the tiles ran, of those asked for; fewer where tiles stopped early
    #: (``early_stop``) or were easy (``adaptive``).
    steps_run: int = 0
    steps_total: int = 0
    #: Recorded tiles and pyramid chunks read back before resuming (``verify``, or after
    #: a run that did not stop cleanly), and how many of them were taken back to run
    #: again (damaged or missing ones, and what depends on them).
    verified: int = 0
    repaired: int = 0
    #: Tiles and pyramid chunks run again because their worker process or node was lost.
    retried: int = 0
    #: Tiles computing at once, and the worker processes they ran in (0: this process).
    workers: int = 0
    processes: int = 0
    #: The most bytes of contexts waiting for their consumers at once (persisted files).
    peak_context_bytes: int = 0

    def counts(self) -> Counts:
        """These counters alone (of a subclass that carries more)."""
        return Counts(**{f.name: getattr(self, f.name) for f in fields(Counts)})

    @staticmethod
    def total(parts: Iterable[Counts]) -> Counts:
        """The job's counters: sums, but the most workers and processes any stage had."""
        total = Counts()
        for part in parts:
            for f in fields(Counts):
                mine, theirs = getattr(total, f.name), getattr(part, f.name)
                at_once = f.name in ("workers", "processes", "peak_context_bytes")
                setattr(total, f.name, max(mine, theirs) if at_once else mine + theirs)
        return total


@dataclass(kw_only=True)
class Report(Counts):
    """What a call to :func:`tilewave.upscale` did."""

    output: str
    array: str
    shape: tuple[int, int, int]
    dtype: str
    model: str
    scale: int
    mode: str
    tiles: int
    seconds: float
    executor: str
    #: Sampler settings (steps, noise, seed) of the multi-step stages' models.
    sampler: dict[str, Any] | None = None
    #: How a multi-step context model's steps ran (``--schedule``): ``tile`` or ``step``;
    #: None for other models.
    schedule: str | None = None
    #: The output was made consistent with the input (``--consistent``): its tiles are
    #: counted in ``tiles``, after the model's.
    consistent: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """What the user sees while a job runs: one status line per phase, and bars, each
    after ``prefix`` (a cohort's input, where several run at once)."""

    def __init__(self, enabled: bool, prefix: str = ""):
        self.enabled, self.prefix = enabled, prefix

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        # One write, so that lines of threads (a cohort's inputs) and Ray's do not mix; on
        # a terminal, above the bars running there.
        line = f"tilewave: {self.prefix}{text}\n"
        if "tqdm" in sys.modules and sys.stderr.isatty():
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr, end="")
        else:
            sys.stderr.write(line)
        sys.stderr.flush()

    def bar(self, total: int, initial: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="chunk", desc=self.prefix + desc,
                    disable=not self.enabled,
                    dynamic_ncols=True, smoothing=0.1)
