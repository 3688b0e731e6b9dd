"""``tilewave tune`` on a Ray worker: one actor (on a GPU when the cluster has one) runs
:func:`tilewave.training.tune.tune_weights` on a thread, and the driver polls it for the
progress it shows. The driver passes the paths and settings; the actor reads the input
and writes the weights and checkpoint itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

from ..training.tune import TuneSettings

#: How often the driver asks the actor how far it is.
POLL_S = 0.5


class TuneWorker:
    """Holds one tuning run; :meth:`status` says where it is, or how it ended."""

    def __init__(self, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._status: Any = None
        self._record: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, input_path: str, output: str, settings: TuneSettings) -> None:
        from ..training.tune import tune_weights

        def run() -> None:
            try:
                self._record = tune_weights(input_path, output, settings, self._report)
            except BaseException as exc:  # handed to the driver by status()
                self._error = exc

        self._thread = threading.Thread(target=run, name="tune", daemon=True)
        self._thread.start()

    def _report(self, status: Any) -> None:
        self._status = status

    def status(self) -> tuple[Any, dict[str, Any] | None]:
        """The latest progress report and, once done, the record; raises the run's error."""
        if self._error is not None:
            raise self._error
        return self._status, self._record


def run_on_ray(input_path: str, output: str, settings: TuneSettings, address: str | None,
               report: Callable[[Any], None] | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Tune on one Ray worker of the cluster at ``address`` (a local instance if None)."""
    import ray

    from .cluster import connect, disconnect

    say("joining the Ray cluster at " + address if address else "starting a local Ray instance")
    cluster = connect(address)
    try:
        gpu = cluster.gpus >= 1
        cpus = max(1, int(cluster.cpus))
        say(f"tuning {settings.model} on a worker with "
            + ("a GPU" if gpu else f"{cpus} CPU{'s' * (cpus != 1)}"))
        remote = cast(Any, ray.remote(TuneWorker))
        actor = remote.options(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else cpus,
                               max_concurrency=2).remote(None if gpu else cpus)
        try:
            ray.get(actor.start.remote(input_path, output, settings))
            while True:
                try:
                    status, record = ray.get(actor.status.remote())
                except ray.exceptions.RayTaskError as exc:
                    raise exc.cause if isinstance(exc.cause, Exception) else exc from None
                if status is not None and report is not None:
                    report(status)
                if record is not None:
                    return cast(dict[str, Any], record)
                time.sleep(POLL_S)
        finally:
            ray.kill(actor)
    finally:
        disconnect(cluster)
