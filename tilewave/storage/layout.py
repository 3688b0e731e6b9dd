"""The names of a job's working state: every file tilewave keeps in an output's
``.tilewave`` folder while a job runs, named here and nowhere else.

* ``job.json``: the job record (:mod:`.manifest`): settings and the input's fingerprint.
* ``ledger.log``: one line per finished tile or pyramid chunk (:class:`.ledger.Ledger`).
  Where files cannot be appended to (object stores), ``ledger/`` instead: a folder of
  whole objects ``000000000.log``, ``000000001.log``, ... read in order.
* ``contexts/``: outgoing contexts of finished tiles whose consumers have not finished,
  ``ROW_COL_DIRECTION.pkl``; under ``--schedule step`` one per sampler step,
  ``ROW_COL_DIRECTION_sSTEP.pkl``.
* ``states/``: under ``--schedule step``, the sampler state a tile's step left for its
  next one, ``ROW_COL_sSTEP.pkl``.
* ``work.zarr`` and ``guide.zarr``: the input (and the back-projection stage's guide)
  copied into tile-sized chunks.
* ``lock``: held with ``flock`` by the running job's driver; where there is no flock,
  ``lease.json``, the expiring lease it renews (:mod:`.lease`).
* ``running``: present while a run writes the output; found by the next run, it says
  the last one did not stop cleanly.
* ``events.log``: tiles run again after their worker was lost.
* ``errors.log``: tracebacks of failed tiles and unreadable input chunks.

When the job completes the folder is removed (the record moves into the output group's
attributes), so a finished output is a clean OME-Zarr image.
"""

from __future__ import annotations

from .backends import backend_for

#: The folder of a job's working state, inside its output.
STATE_DIR = ".tilewave"
MANIFEST = "job.json"
LEDGER_FILE = "ledger.log"
LEDGER_FOLDER = "ledger"
CONTEXTS = "contexts"
STATES = "states"
WORK_COPY = "work.zarr"
GUIDE_COPY = "guide.zarr"
LOCK = "lock"
LEASE = "lease.json"
RUNNING = "running"
EVENTS_LOG = "events.log"
ERRORS_LOG = "errors.log"
#: Prefix of the empty folder made and removed to learn whether a place is writable.
PROBE_PREFIX = ".tilewave-probe-"


def state_dir(output: str) -> str:
    """The ``.tilewave`` folder of ``output``."""
    return backend_for(output).join(output, STATE_DIR)


def _in_state(output: str, name: str) -> str:
    return backend_for(output).join(output, STATE_DIR, name)


def manifest_path(output: str) -> str:
    """The running job's record."""
    return _in_state(output, MANIFEST)


def ledger_path(output: str) -> str:
    """The ledger: one file where the backend appends, else a folder of batch objects."""
    return _in_state(output, LEDGER_FILE if backend_for(output).appendable else LEDGER_FOLDER)


def ledger_batch(folder: str, number: int) -> str:
    """Batch ``number`` of a ledger kept as a folder: zero-padded, so that names sort in
    the order they were written."""
    return backend_for(folder).join(folder, f"{number:09d}.log")


def contexts_dir(output: str) -> str:
    """The folder of persisted contexts."""
    return _in_state(output, CONTEXTS)


def context_path(output: str, producer: tuple[int, int], direction: str,
                 step: int | None = None) -> str:
    """The context tile ``producer`` left towards ``direction`` (at sampler ``step``,
    when its steps run one at a time)."""
    suffix = "" if step is None else f"_s{step}"
    return backend_for(output).join(contexts_dir(output),
                                    f"{producer[0]}_{producer[1]}_{direction}{suffix}.pkl")


def states_dir(output: str) -> str:
    """The folder of sampler states between a tile's steps."""
    return _in_state(output, STATES)


def state_path(output: str, tile: tuple[int, int], step: int) -> str:
    """The sampler state tile ``tile`` reached after its step ``step``."""
    return backend_for(output).join(states_dir(output), f"{tile[0]}_{tile[1]}_s{step}.pkl")


def work_copy(output: str) -> str:
    """The input copied into tile-sized chunks."""
    return _in_state(output, WORK_COPY)


def guide_copy(output: str) -> str:
    """The back-projection stage's guide (the job's input) copied likewise."""
    return _in_state(output, GUIDE_COPY)


def lock_path(output: str) -> str:
    """The file the running job's driver holds with ``flock``."""
    return _in_state(output, LOCK)


def lease_path(output: str) -> str:
    """The lease object of outputs where there is no ``flock``."""
    return _in_state(output, LEASE)


def running_marker(output: str) -> str:
    """Present while a run writes ``output``."""
    return _in_state(output, RUNNING)


def events_log(output: str) -> str:
    """Tiles run again after their worker was lost."""
    return _in_state(output, EVENTS_LOG)


def errors_log(output: str) -> str:
    """Tracebacks of what failed."""
    return _in_state(output, ERRORS_LOG)
