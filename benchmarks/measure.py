"""Measuring a command the way the benchmarks report it: wall time, and the peak memory
of its whole process tree (the command plus every process it starts, Ray's daemons and
workers included), sampled in a background thread.

The memory of a tree is the sum over its processes of PSS (proportional set size: a page
shared by k processes counts 1/k in each, so the sum is a fair total; RSS is used for any
process whose PSS cannot be read) and, separately, the sum of RSS (which counts shared
pages once per process, so it over-states the total). When the tree runs a Ray instance,
the object store's use is polled from its raylet too, and its peak is reported.

Reading PSS makes the kernel walk each process's page tables: at 0.1 s the sampler takes
roughly a third of one core, which slows the measured job a little on a small machine;
the sampler's own CPU time is recorded with every measurement.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
#: What the measured command's own process is called in breakdowns (for ``tilewave``
#: commands, the driver).
ROOT_LABEL = "driver"
MIB = 2**20
TIMELINE_POINTS = 100


# --------------------------------------------------------------------------- sampling


def process_label(proc: psutil.Process, root_pid: int) -> str | None:
    """A short name for the kind of process: ``driver`` (the root), ``raylet``,
    ``gcs_server``, ``ray::TileWorker``, ``ray::IDLE``, ``log_monitor.py``, ...; None
    when its command line cannot be read (a process that is exiting)."""
    if proc.pid == root_pid:
        return ROOT_LABEL
    try:
        cmdline = proc.cmdline()
    except (psutil.Error, OSError):
        cmdline = []
    if not cmdline:
        return None
    first = cmdline[0]
    if first.startswith("ray::"):
        # Actors retitle themselves per call (ray::TileWorker.process); group by class.
        return first.split()[0].split(".")[0]
    exe = os.path.basename(first)
    if exe.startswith("python"):
        script = next((a for a in cmdline[1:] if not a.startswith("-")), "")
        return os.path.basename(script) or exe
    return exe


@dataclass
class Sample:
    """The memory of the process tree at one instant."""

    t: float
    pss: int
    rss: int
    processes: int
    #: label -> (PSS, RSS) summed over the processes of that kind.
    by_label: dict[str, tuple[int, int]]


@dataclass
class TreeSampler:
    """Samples the memory of a process and all its descendants in a background thread.

    Every process ever seen in the tree is remembered, so one re-parented away from it
    (as daemons are when their parent exits) still counts until it exits.
    """

    root_pid: int
    interval: float = 0.1
    samples: int = 0
    #: CPU seconds the sampling thread used (reading PSS makes the kernel walk page tables).
    cpu_seconds: float = 0.0
    #: Every sample as (seconds, total PSS, total RSS, {label: PSS}).
    timeline: list[tuple[float, int, int, dict[str, int]]] = field(default_factory=list)
    pss_fallbacks: set[str] = field(default_factory=set)
    peak_pss: Sample | None = None
    peak_rss: Sample | None = None
    #: label -> the highest PSS that kind of process reached (not necessarily at once).
    label_peak_pss: dict[str, int] = field(default_factory=dict)
    #: label -> the most processes of that kind seen at once.
    label_max_count: dict[str, int] = field(default_factory=dict)
    #: pid -> (label, CPU seconds, user and system) as last read: what each process used
    #: up to its last sample (one that exits between samples loses at most an interval).
    cpu_by_pid: dict[int, tuple[str, float]] = field(default_factory=dict)
    _known: dict[int, psutil.Process] = field(default_factory=dict)
    _labels: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def survivors(self) -> list[psutil.Process]:
        """Processes of the tree still alive (after the job ended, these are leaks)."""
        alive = []
        self._tree()  # picks up children started since the last sample
        for proc in self._known.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        return alive

    def label_of(self, proc: psutil.Process) -> str:
        """``proc``'s kind, as last seen when its command line could be read."""
        label = process_label(proc, self.root_pid) or self._labels.get(proc.pid)
        if label is None:
            try:
                label = proc.name()
            except psutil.Error:
                label = "?"
        self._labels[proc.pid] = label
        return label

    def _run(self) -> None:
        cpu = time.thread_time()
        while not self._stop.is_set():
            began = time.perf_counter()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - began)))
        self.cpu_seconds = time.thread_time() - cpu

    def _tree(self) -> list[psutil.Process]:
        """The live processes of the tree, including re-parented ones seen before."""
        try:
            root = self._known.setdefault(self.root_pid, psutil.Process(self.root_pid))
            children = root.children(recursive=True)
        except psutil.Error:
            children = []  # the driver exited; its former descendants are still known
        for child in children:
            # Keyed by pid and checked against the creation time, in case a pid is reused
            # (psutil reads a process's creation time once, when it first meets it).
            known = self._known.get(child.pid)
            try:
                if known is None or known.create_time() != child.create_time():
                    self._known[child.pid] = child
                    self._labels.pop(child.pid, None)
            except psutil.Error:
                continue
        for pid, proc in list(self._known.items()):
            if not proc.is_running():
                del self._known[pid]
        return list(self._known.values())

    def sample(self) -> Sample | None:
        """Take one sample now; returns it (None when no process could be read)."""
        total_pss = total_rss = count = 0
        by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for proc in self._tree():
            try:
                try:
                    info = proc.memory_full_info()
                    rss, pss = info.rss, getattr(info, "pss", None)
                except psutil.AccessDenied:
                    rss, pss = proc.memory_info().rss, None
                # Read every time: Ray's processes retitle themselves (a worker starts as
                # default_worker.py, becomes ray::IDLE, then ray::TileWorker).
                label = self.label_of(proc)
                times = proc.cpu_times()
                self.cpu_by_pid[proc.pid] = (label, times.user + times.system)
                if pss is None:
                    pss = rss
                    self.pss_fallbacks.add(label)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited between listing and reading: it no longer holds memory
            total_pss += pss
            total_rss += rss
            count += 1
            entry = by_label[label]
            entry[0] += pss
            entry[1] += rss
            entry[2] += 1
        if not count:
            return None
        s = Sample(time.perf_counter() - self._t0, total_pss, total_rss, count,
                   {k: (v[0], v[1]) for k, v in by_label.items()})
        self.samples += 1
        self.timeline.append((s.t, s.pss, s.rss, {k: v[0] for k, v in by_label.items()}))
        if self.peak_pss is None or s.pss > self.peak_pss.pss:
            self.peak_pss = s
        if self.peak_rss is None or s.rss > self.peak_rss.rss:
            self.peak_rss = s
        for label, (pss, _, n) in by_label.items():
            self.label_peak_pss[label] = max(self.label_peak_pss.get(label, 0), pss)
            self.label_max_count[label] = max(self.label_max_count.get(label, 0), n)
        return s

    def cpu_seconds_by_label(self) -> dict[str, float]:
        """label -> CPU seconds its processes used (as of their last samples)."""
        out: dict[str, float] = defaultdict(float)
        for label, seconds in self.cpu_by_pid.values():
            out[label] += seconds
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


# --------------------------------------------------------------------------- object store


@dataclass
class ObjectStorePoller:
    """Polls the object store use of the Ray instance a process tree started.

    The raylet's command line names the instance's GCS address; the statistics come from
    the RPC ``ray memory --stats-only`` makes, asked by a helper process of ours (a Ray
    client in this process would be terminated by Ray when the instance goes away).
    Nothing is polled for a tree that runs no Ray.
    """

    sampler: TreeSampler
    interval: float = 0.25
    peak_bytes: int = 0
    capacity_bytes: int = 0
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _helper: subprocess.Popen | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="object-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._helper is not None and self._helper.poll() is None:
            self._helper.kill()
        if self._thread is not None:
            self._thread.join()

    def _gcs_address(self) -> str | None:
        for proc in list(self.sampler._known.values()):
            try:
                cmdline = proc.cmdline()
            except (psutil.Error, OSError):
                continue
            if cmdline and os.path.basename(cmdline[0]) == "raylet":
                for arg in cmdline:
                    if arg.startswith("--gcs-address="):
                        return arg.split("=", 1)[1]
        return None

    def _run(self) -> None:
        address = None
        while address is None:
            if self._stop.wait(self.interval):
                return
            address = self._gcs_address()
        self._helper = subprocess.Popen(
            [sys.executable, __file__, "--poll-object-store", address, str(self.interval)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self._helper.stdout is not None
        for line in self._helper.stdout:
            used, avail = (int(v) for v in line.split())
            self.polls += 1
            self.peak_bytes = max(self.peak_bytes, used)
            self.capacity_bytes = used + avail


def _poll_object_store(address: str, interval: float) -> None:
    """Print ``used available`` object store bytes every ``interval`` seconds, until the
    instance is gone (the helper process :class:`ObjectStorePoller` starts)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(address)
    failures = 0
    while failures < 8:
        try:
            stats = get_memory_info_reply(state, timeout_seconds=2.0).store_stats
        except Exception:  # still starting, or shutting down
            failures += 1
        else:
            failures = 0
            print(stats.object_store_bytes_used, stats.object_store_bytes_avail, flush=True)
        time.sleep(interval)


# --------------------------------------------------------------------------- one command


@dataclass
class Measured:
    """The wall time and peak memory of one command."""

    wall_s: float
    peak_pss_bytes: int
    peak_rss_sum_bytes: int
    peak_pss_at_s: float
    processes_at_peak: int
    samples: int
    sampler_cpu_s: float
    #: The 1-minute load average just before the run: other load skews the wall time.
    load_before: float
    #: label -> PSS bytes of that kind of process in the sample of the peak total.
    pss_at_peak_by_process: dict[str, int]
    #: label -> the highest PSS bytes that kind of process reached during the run.
    peak_pss_by_process: dict[str, int]
    max_processes_by_kind: dict[str, int]
    #: label -> CPU seconds (user + system) that kind of process used.
    cpu_seconds_by_process: dict[str, float]
    pss_unavailable_for: list[str]
    leftover_processes: list[str]
    #: Peak bytes used in the Ray object store (None: the command ran no Ray).
    object_store_peak_bytes: int | None
    object_store_capacity_bytes: int | None
    #: The last JSON object the command printed on stdout (its report), if any.
    report: dict[str, Any]
    returncode: int
    stderr_tail: str
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def peak_pss_mib(self) -> float:
        return self.peak_pss_bytes / MIB


class CommandFailed(RuntimeError):
    """The measured command exited with an error."""

    def __init__(self, cmd: Sequence[str], measured: Measured):
        self.measured = measured
        super().__init__(f"{shlex.join(cmd)} failed with exit code {measured.returncode}:\n"
                         f"{measured.stderr_tail}")


def measure_command(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                    cwd: Path | None = REPO, interval: float = 0.1,
                    timeout: float | None = None, timeline: bool = False,
                    check: bool = True) -> Measured:
    """Run ``cmd`` to the end while sampling its process tree.

    A command still running after ``timeout`` seconds is killed with its whole tree and
    :class:`subprocess.TimeoutExpired` raised; with ``check``, a failed command raises
    :class:`CommandFailed` (which carries the measurement, since the memory up to a
    failure, an out-of-memory one say, is worth reporting too).
    """
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid, interval)
    store = ObjectStorePoller(sampler)
    sampler.start()
    store.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # timeout or Ctrl-C: take the whole job down with us
        sampler.stop()
        store.stop()
        kill_tree(sampler)
        proc.kill()
        proc.communicate()
        raise
    wall = time.perf_counter() - started
    sampler.stop()
    store.stop()
    # Ray's processes should be gone once the driver exited; report (and end) any left.
    deadline = time.monotonic() + 5
    while sampler.survivors() and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [f"{p.pid} {sampler.label_of(p)}" for p in sampler.survivors()]
    kill_tree(sampler)
    peak, peak_rss = sampler.peak_pss, sampler.peak_rss
    ran_ray = store.polls > 0
    measured = Measured(
        wall_s=wall,
        peak_pss_bytes=peak.pss if peak else 0,
        peak_rss_sum_bytes=peak_rss.rss if peak_rss else 0,
        peak_pss_at_s=peak.t if peak else 0.0,
        processes_at_peak=peak.processes if peak else 0,
        samples=sampler.samples,
        sampler_cpu_s=sampler.cpu_seconds,
        load_before=load_before,
        pss_at_peak_by_process=sorted_desc({k: v[0] for k, v in peak.by_label.items()} if peak else {}),
        peak_pss_by_process=sorted_desc(sampler.label_peak_pss),
        max_processes_by_kind=dict(sorted(sampler.label_max_count.items())),
        cpu_seconds_by_process=sampler.cpu_seconds_by_label(),
        pss_unavailable_for=sorted(sampler.pss_fallbacks),
        leftover_processes=leftovers,
        object_store_peak_bytes=store.peak_bytes if ran_ray else None,
        object_store_capacity_bytes=store.capacity_bytes if ran_ray else None,
        report=last_json_object(stdout),
        returncode=proc.returncode,
        stderr_tail=stderr.strip()[-3000:],
        timeline=thin(sampler.timeline) if timeline else [],
    )
    if check and proc.returncode != 0:
        raise CommandFailed(cmd, measured)
    if peak is None:
        raise RuntimeError(f"no memory sample was taken of {shlex.join(cmd)}; it ended too quickly")
    return measured


def kill_tree(sampler: TreeSampler) -> None:
    """Kill every process of the sampled tree still alive."""
    for proc in sampler.survivors():
        try:
            proc.kill()
        except psutil.Error:
            pass


def thin(timeline: Sequence[tuple[float, int, int, dict[str, int]]]) -> list[dict[str, Any]]:
    """At most ``TIMELINE_POINTS`` evenly spread samples, always keeping the PSS peak."""
    if not timeline:
        return []
    step = max(1, -(-len(timeline) // TIMELINE_POINTS))
    keep = set(range(0, len(timeline), step)) | {len(timeline) - 1}
    keep.add(max(range(len(timeline)), key=lambda i: timeline[i][1]))
    return [{"t": round(t, 2), "pss_mib": round(pss / MIB, 1), "rss_mib": round(rss / MIB, 1),
             "pss_mib_by_process": {k: round(v / MIB, 1) for k, v in by.items()}}
            for i, (t, pss, rss, by) in enumerate(timeline) if i in keep]


def last_json_object(stdout: str) -> dict[str, Any]:
    """The last line of ``stdout`` that is a JSON object ({} when there is none)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def sorted_desc(values: dict[str, int]) -> dict[str, int]:
    return dict(sorted(values.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- context


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import ray

    import tilewave

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "total_ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "tilewave": tilewave.__version__,
        "ray": ray.__version__,
        "psutil": psutil.__version__,
    }


def machine_line(info: dict[str, Any]) -> str:
    """``info`` in one line, for tables and plot captions."""
    return (f"{info['cpu_count']} CPUs ({info['cpu'] or info['machine']}), "
            f"{info['total_ram_bytes'] / 2**30:.0f} GiB RAM, Python {info['python']}, "
            f"Ray {info['ray']}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--poll-object-store":
        _poll_object_store(sys.argv[2], float(sys.argv[3]))
