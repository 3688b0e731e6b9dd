"""Chaos soak: long jobs under repeated faults end with a clean run's bytes.

On a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head
without CPUs and three worker nodes of one CPU, each its own raylet), for each mode:

1. a clean run, ``tilewave upscale IN CLEAN --model M --address A --workers 2 --json``;
2. the same job under chaos, to another output: a random tile worker process is killed
   (SIGKILL) every few seconds, a worker node is removed (its raylet and every process on
   it die) and a fresh one added every ``--node-every`` seconds, and the driver itself is
   killed (SIGKILL) ``--driver-kills`` times, each time resumed with ``--resume``;
3. every array of the chaos output (level 0 and the pyramid) compared with the clean one,
   byte for byte.

Modes: ``halo`` (span-x2), ``context`` (uniba-x2, contexts handed from tile to tile and
persisted for resume), ``blend`` (span-x2 in blend mode, pixel contexts).

Reported per mode: faults injected; tiles retried (from the ``events.log`` of killed
drivers and the final report); recorded tiles read back after the unclean stops; time
lost per fault (chaos wall time, all driver sessions, minus the clean run's, over the
faults); the peak memory (PSS) of the whole cluster.

    python benchmarks/soak.py                       # 3 to 5 minutes of chaos a mode here
    python benchmarks/soak.py --quick --modes halo  # the short version the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, TreeSampler, last_json_object, machine_info, machine_line  # noqa: E402

RESULTS = REPO / "docs" / "benchmarks" / "soak.json"
MODES = {
    "halo": ["--model", "span-x2"],
    "context": ["--model", "uniba-x2"],
    "blend": ["--model", "span-x2", "--mode", "blend", "--overlap", "8"],
}


@dataclass
class Chaos:
    """How often each fault strikes."""

    worker_every: float = 4.0
    node_every: float = 25.0
    driver_kills: int = 5
    #: Seconds a driver session runs before it is killed (uniform in this range)...
    driver_life: tuple[float, float] = (20.0, 40.0)
    #: ... or sooner, once it recorded this fraction of the tiles it had left (uniform in
    #: this range), so that a kill always lands mid-job, however fast the job runs.
    driver_progress: tuple[float, float] = (0.3, 0.7)


@dataclass
class Outcome:
    mode: str
    tiles: int
    clean_seconds: float
    chaos_seconds: float
    sessions: int
    worker_kills: int = 0
    node_swaps: int = 0
    driver_kills: int = 0
    tiles_retried: int = 0
    verified: int = 0
    repaired: int = 0
    peak_pss_mib: float = 0.0
    equal: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def faults(self) -> int:
        return self.worker_kills + self.node_swaps + self.driver_kills

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["faults"] = self.faults
        out["seconds_lost_per_fault"] = round((self.chaos_seconds - self.clean_seconds)
                                              / max(1, self.faults), 2)
        return out


def _tile_workers() -> list[Any]:
    """Tile worker processes of this soak's own cluster (its nodes are this process's
    children), never those of another Ray instance on the machine."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "TileWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _input(path: Path, side: int, width: int) -> Path:
    """A real photo (scikit-image's astronaut) repeated to ``side`` x ``width``."""
    import numpy as np
    import zarr
    from skimage import data

    if path.exists():
        return path
    tile = np.ascontiguousarray(data.astronaut().transpose(2, 0, 1))
    reps = (1, -(-side // tile.shape[1]), -(-width // tile.shape[2]))
    pixels = np.tile(tile, reps)[:, :side, :width]
    arr = zarr.create_array(str(path), shape=pixels.shape, chunks=(3, 64, 64), dtype="uint8",
                            dimension_names=("c", "y", "x"))
    arr[:] = pixels
    return path


def _cli(src: Path, out: Path, args: list[str], address: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "tilewave.cli", "upscale", str(src), str(out), *args,
            "--tile", "64", "--address", address, "--workers", "2", "--json", "--quiet", *extra]


class WorkerKiller:
    """Kills a random tile worker process every few seconds, on a thread, until stopped.
    (Nodes are swapped on the main thread: Ray starts a node's processes only there.)"""

    def __init__(self, every: float, rng: random.Random):
        self.every, self.rng = every, rng
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="chaos")

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.every):
            workers = _tile_workers()
            if workers:
                try:
                    self.rng.choice(workers).send_signal(signal.SIGKILL)
                    self.kills += 1
                except psutil.Error:  # it died on its own meanwhile
                    pass


def _swap_node(cluster: Any, nodes: list[Any], rng: random.Random) -> None:
    victim = rng.choice(nodes)
    cluster.remove_node(victim, allow_graceful=False)
    nodes.remove(victim)
    nodes.append(cluster.add_node(num_cpus=1))


def _recorded(out: Path) -> int:
    """Tiles the ledger of ``out`` lists as done (0 before it exists)."""
    from tilewave.storage.ledger import Ledger

    return len(Ledger(str(out)).done())


def _retries(out: Path) -> int:
    log = out / ".tilewave" / "events.log"
    return sum(" retry " in line for line in log.read_text().splitlines()) if log.exists() else 0


def soak_mode(mode: str, src: Path, work: Path, cluster: Any, nodes: list[Any], chaos: Chaos,
              rng: random.Random, env: dict[str, str]) -> Outcome:
    import numpy as np
    import zarr

    args = MODES[mode]
    clean, out = work / f"{mode}_clean.zarr", work / f"{mode}_chaos.zarr"
    start = time.perf_counter()
    done = subprocess.run(_cli(src, clean, args, cluster.address, []), capture_output=True,
                          text=True, env=env, check=True)
    clean_seconds = time.perf_counter() - start
    tiles = last_json_object(done.stdout)["tiles"]

    outcome = Outcome(mode, tiles, clean_seconds, 0.0, 0)
    retried_before = 0
    log = work / f"{mode}_driver.log"
    start = time.perf_counter()
    next_node = time.monotonic() + chaos.node_every
    with WorkerKiller(chaos.worker_every, rng) as killer:
        while True:
            if outcome.sessions > chaos.driver_kills + 10:
                raise RuntimeError(f"{mode}: the job did not finish in {outcome.sessions} "
                                   f"sessions: {outcome.notes}")
            # A session killed before it made the output left nothing to resume.
            extra = ["--resume"] if outcome.sessions and os.path.exists(out) else []
            outcome.sessions += 1
            with open(log, "w") as err, open(log.with_suffix(".json"), "w") as report_file:
                proc = subprocess.Popen(_cli(src, out, args, cluster.address, extra),
                                        stdout=report_file, stderr=err, env=env,
                                        start_new_session=True)
                killing = outcome.driver_kills < chaos.driver_kills
                kill_at = time.monotonic() + (rng.uniform(*chaos.driver_life) if killing
                                              else float("inf"))
                recorded = _recorded(out)
                kill_after = (recorded + rng.uniform(*chaos.driver_progress) * (tiles - recorded)
                              if killing else float("inf"))
                while proc.poll() is None:
                    if time.monotonic() >= next_node:
                        _swap_node(cluster, nodes, rng)
                        outcome.node_swaps += 1
                        next_node = time.monotonic() + chaos.node_every
                    if time.monotonic() >= kill_at or _recorded(out) >= kill_after:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        outcome.driver_kills += 1
                        break
                    time.sleep(0.2)
            if proc.returncode == -signal.SIGKILL:
                retried_before = _retries(out)
                continue
            if proc.returncode != 0:
                # A tile that lost its worker more often than retries allow stops the job,
                # as it should; the soak resumes it as a user would, and notes it.
                lines = log.read_text().strip().splitlines()
                outcome.notes.append(f"session {outcome.sessions} stopped: "
                                     f"{lines[-1][:200] if lines else proc.returncode}")
                retried_before = _retries(out)
                continue
            report = last_json_object(log.with_suffix(".json").read_text())
            outcome.tiles_retried = retried_before + report.get("retried", 0)
            outcome.verified += report.get("verified", 0)
            outcome.repaired += report.get("repaired", 0)
            break
        outcome.worker_kills = killer.kills
    outcome.chaos_seconds = time.perf_counter() - start
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(clean), mode="r")
    keys = sorted(a.array_keys())
    outcome.equal = keys == sorted(b.array_keys()) and all(
        np.array_equal(a[k][:], b[k][:]) for k in keys)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--quick", action="store_true",
                        help="a small image, one fault of each kind (the tests' version)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON only")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster

    if args.quick:
        side, width = 448, 512
        chaos = Chaos(worker_every=2.0, node_every=8.0, driver_kills=1, driver_life=(60.0, 60.0))
    else:
        side, width = 3072, 2048
        chaos = Chaos()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    env = dict(os.environ)
    sampler = TreeSampler(os.getpid(), interval=0.5)
    sampler.start()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    outcomes = []
    try:
        src = _input(work / "in.zarr", side, width)
        for mode in args.modes:
            mark = len(sampler.timeline)
            outcome = soak_mode(mode, src, work, cluster, nodes, chaos, rng, env)
            outcome.peak_pss_mib = round(max((t[1] for t in sampler.timeline[mark:]), default=0)
                                         / 2**20, 1)
            outcomes.append(outcome)
            if not args.json:
                print(json.dumps(outcome.as_dict()), flush=True)
    finally:
        sampler.stop()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    record = {"command": "python benchmarks/soak.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_line(machine_info()),
              "input": f"{side} x {width} uint8 RGB (astronaut repeated), tiles of 64, x2",
              "chaos": asdict(chaos), "outcomes": [o.as_dict() for o in outcomes]}
    if args.json:
        print(json.dumps(record))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    return 0 if all(o.equal for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
