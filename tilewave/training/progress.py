"""What a training or tuning run reports while it runs, and the bar that shows it; free
of torch, so a driver can show the progress of a run on a Ray worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    """Where a fine-tuning run is, as its progress reports say after every step."""

    step: int
    seconds: float
    #: The budget, in steps or seconds (``unit``), and how much of it is spent.
    total: float
    done: float
    unit: str
    loss: float | None
    best_score: float | None
    start_score: float | None


#: Told the status after every step (a progress bar, or a Ray actor's status).
Report = Callable[[Status], None]


def progress_bar(desc: str, enabled: bool = True) -> tuple[Report, Callable[[], None]]:
    """A tqdm bar fed by :class:`Status` reports, and the function that closes it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=desc, disable=not enabled, dynamic_ncols=True)

    def report(status: Status) -> None:
        if bar.total != int(status.total):
            bar.total, bar.unit = int(status.total), status.unit
        bar.update(int(status.done) - bar.n)
        shown: dict[str, object] = {"step": status.step} if status.unit == "s" else {}
        if status.loss is not None:
            shown["loss"] = f"{status.loss:.4f}"
        if status.best_score is not None and status.start_score is not None:
            shown["held-out gain"] = f"{status.best_score - status.start_score:+.2f} dB"
        bar.set_postfix(shown, refresh=False)

    return report, bar.close
