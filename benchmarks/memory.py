"""Peak memory of a whole ``tilewave upscale`` job against the size of the image.

For each output size this script generates (once, then caches) a tiled RGB TIFF made by
repeating scikit-image's astronaut photograph, runs::

    tilewave upscale IN OUT --scale 2 --model bicubic --tile 256 --quiet --json --overwrite

as a subprocess, and samples the memory of its whole process tree (the ``tilewave``
driver plus every Ray process it starts: gcs_server, raylet, agents, workers, ...)
about every 0.1 s with psutil. It reports the peak of the summed PSS (proportional set
size: shared pages split between the processes that share them, so the sum is a fair
total; RSS is used for any process whose PSS cannot be read), the peak of the summed
RSS (which counts shared pages once per process, so it over-states the total), the
wall time, and the JSON report the command printed. The peak is also broken down by
process kind, to show which part of the job grows with the image, if any; with
``--timeline`` the JSON also keeps a thinned per-process memory timeline of every run.

Reading PSS makes the kernel walk each process's page tables: at 0.1 s the sampler takes
roughly a third of one core, which slows the job on a small machine (the JSON records the
sampler's CPU time and the load average before each run); ``--interval`` trades
resolution for less overhead. Wall times also include starting and stopping Ray.

Sizes are in output megapixels, where 1 MP is 2**20 pixels (a 1024 x 1024 output) so
that every input side (``sqrt(pixels) / 2`` at x2) is a whole number of 256-pixel tiles.

Usage::

    python benchmarks/memory.py                 # 1, 4, 16 and 64 MP
    python benchmarks/memory.py --full          # adds 256 MP and 1 GP (1024 MP)
    python benchmarks/memory.py --sizes 1 16 --json-out /tmp/memory.json

Generated inputs are cached in ``<workdir>/inputs`` (default workdir: ``.bench/memory``
in the repository); outputs and Ray's temporary files go to a scratch folder under the
workdir that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / ".bench" / "memory"
DEFAULT_JSON_OUT = REPO / "docs" / "benchmarks" / "memory.json"
QUICK_SIZES_MP: tuple[float, ...] = (1, 4, 16, 64)
FULL_EXTRA_SIZES_MP: tuple[float, ...] = (256, 1024)
MEGAPIXEL = 2**20
SCALE = 2
TILE = 256
MODEL = "bicubic"
MIB = 2**20
TIMELINE_POINTS = 100


# --------------------------------------------------------------------------- inputs


def input_side(output_mp: float, scale: int = SCALE) -> int:
    """Side of the square input whose x``scale`` output has ``output_mp`` megapixels."""
    side = round(math.sqrt(output_mp * MEGAPIXEL) / scale)
    if side < 1:
        raise ValueError(f"{output_mp} MP is too small an output")
    return side


def _astronaut_tiles(side: int, tile: int) -> Iterator[np.ndarray]:
    """The tiles, in TIFF (row-major) order, of a ``side`` square mosaic of the
    astronaut photo; edge tiles are padded to the full tile size as tifffile expects."""
    from skimage.data import astronaut

    photo = astronaut()  # (512, 512, 3) uint8
    ph, pw = photo.shape[:2]
    # Repeat the photo enough that any tile-sized window of the mosaic is one slice.
    reps = (math.ceil(tile / ph) + 1, math.ceil(tile / pw) + 1, 1)
    wrapped = np.tile(photo, reps)
    for y in range(0, side, tile):
        for x in range(0, side, tile):
            h, w = min(tile, side - y), min(tile, side - x)
            block = wrapped[y % ph:y % ph + tile, x % pw:x % pw + tile]
            if (h, w) != (tile, tile):
                padded = np.zeros((tile, tile, 3), np.uint8)
                padded[:h, :w] = block[:h, :w]
                block = padded
            yield np.ascontiguousarray(block)


def ensure_input(folder: Path, side: int, tile: int = TILE) -> Path:
    """Path of the cached ``side`` x ``side`` RGB input TIFF, writing it if missing.

    The TIFF is tiled and zlib-compressed and is written tile by tile, so making even a
    gigapixel input needs only a few tiles of memory.
    """
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"astronaut_{side}x{side}_t{tile}.tif"
    if path.exists():
        return path
    partial = path.with_suffix(".tif.partial")
    tifffile.imwrite(partial, data=_astronaut_tiles(side, tile), shape=(side, side, 3),
                     dtype="uint8", tile=(tile, tile), photometric="rgb",
                     compression="zlib", bigtiff=side * side * 3 > 2**31)
    partial.rename(path)  # a cached input is always a complete one
    return path


# --------------------------------------------------------------------------- sampling


def process_label(proc: psutil.Process, root_pid: int) -> str | None:
    """A short name for the kind of process: ``tilewave (driver)``, ``raylet``,
    ``gcs_server``, ``ray::TileWorker``, ``ray::IDLE``, ``log_monitor.py``, ...; None
    when its command line cannot be read (a process that is exiting)."""
    if proc.pid == root_pid:
        return "tilewave (driver)"
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


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    """The measurements of one ``tilewave upscale`` run."""

    output_mp: float
    output_pixels: int
    input_side: int
    input_bytes: int
    tiles: int
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
    pss_unavailable_for: list[str]
    leftover_processes: list[str]
    #: Up to ``TIMELINE_POINTS`` samples, in MiB:
    #: {"t": s, "pss_mib": ..., "rss_mib": ..., "pss_mib_by_process": {label: ...}}.
    timeline: list[dict[str, Any]]
    report: dict[str, Any]
    ratio_pss: float = 1.0
    ratio_rss: float = 1.0


def sample_command(cmd: Sequence[str], interval: float = 0.1, **popen: Any) -> tuple[str, TreeSampler, float]:
    """Run ``cmd`` to the end while sampling its process tree; returns its stdout, the
    sampler and the wall time. A failed command raises with the end of its stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    sampler = TreeSampler(proc.pid, interval)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-2000:]}")
    return stdout, sampler, time.perf_counter() - started


def tilewave_command(input_path: Path, output_path: Path, workers: int | None) -> list[str]:
    """The ``tilewave upscale`` command line measured (from the same environment)."""
    exe = shutil.which("tilewave", path=os.path.dirname(sys.executable)) or shutil.which("tilewave")
    base = [exe] if exe else [sys.executable, "-m", "tilewave.cli"]
    cmd = [*base, "upscale", str(input_path), str(output_path), "--scale", str(SCALE),
           "--model", MODEL, "--tile", str(TILE), "--quiet", "--json", "--overwrite"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd


def _kill_tree(sampler: TreeSampler) -> None:
    for proc in sampler.survivors():
        try:
            proc.kill()
        except psutil.Error:
            pass


def run_one(output_mp: float, input_path: Path, side: int, scratch: Path, ray_tmp: Path,
            workers: int | None, interval: float, timeout: float | None) -> RunResult:
    """Run and measure one upscale of ``input_path``; the output is deleted afterwards."""
    output = scratch / f"out_{side}.zarr"
    cmd = tilewave_command(input_path, output, workers)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(ray_tmp))
    ray_tmp.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    sampler = TreeSampler(proc.pid, interval)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # timeout or Ctrl-C: take the whole job down with us
        sampler.stop()
        _kill_tree(sampler)
        proc.kill()
        proc.communicate()
        raise
    wall = time.perf_counter() - started
    sampler.stop()
    # Ray's processes should be gone once the driver exited; report (and end) any left.
    deadline = time.monotonic() + 5
    while sampler.survivors() and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [f"{p.pid} {sampler.label_of(p)}" for p in sampler.survivors()]
    _kill_tree(sampler)
    shutil.rmtree(output, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed with exit code {proc.returncode}:\n"
                           f"{stderr.strip()[-4000:]}")
    report = _last_json_line(stdout)
    peak, peak_rss = sampler.peak_pss, sampler.peak_rss
    if peak is None or peak_rss is None:
        raise RuntimeError("no memory sample was taken; the job ended too quickly")
    return RunResult(
        output_mp=output_mp,
        output_pixels=(side * SCALE) ** 2,
        input_side=side,
        input_bytes=input_path.stat().st_size,
        tiles=int(report.get("tiles", math.ceil(side / TILE) ** 2)),
        wall_s=wall,
        peak_pss_bytes=peak.pss,
        peak_rss_sum_bytes=peak_rss.rss,
        peak_pss_at_s=peak.t,
        processes_at_peak=peak.processes,
        samples=sampler.samples,
        sampler_cpu_s=sampler.cpu_seconds,
        load_before=load_before,
        pss_at_peak_by_process=_sorted_desc({k: v[0] for k, v in peak.by_label.items()}),
        peak_pss_by_process=_sorted_desc(sampler.label_peak_pss),
        max_processes_by_kind=dict(sorted(sampler.label_max_count.items())),
        pss_unavailable_for=sorted(sampler.pss_fallbacks),
        leftover_processes=leftovers,
        report=report,
        timeline=_thin(sampler.timeline),
    )


def _thin(timeline: Sequence[tuple[float, int, int, dict[str, int]]]) -> list[dict[str, Any]]:
    """At most ``TIMELINE_POINTS`` evenly spread samples, always keeping the PSS peak."""
    if not timeline:
        return []
    step = max(1, math.ceil(len(timeline) / TIMELINE_POINTS))
    keep = set(range(0, len(timeline), step)) | {len(timeline) - 1}
    keep.add(max(range(len(timeline)), key=lambda i: timeline[i][1]))
    return [{"t": round(t, 2), "pss_mib": round(pss / MIB, 1), "rss_mib": round(rss / MIB, 1),
             "pss_mib_by_process": {k: round(v / MIB, 1) for k, v in by.items()}}
            for i, (t, pss, rss, by) in enumerate(timeline) if i in keep]


def _last_json_line(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"tilewave printed no JSON report; its output was:\n{stdout[-2000:]}")


def _sorted_desc(values: dict[str, int]) -> dict[str, int]:
    return dict(sorted(values.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import ray

    import tilewave

    return {
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "total_ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "tilewave": tilewave.__version__,
        "ray": ray.__version__,
        "psutil": psutil.__version__,
    }


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f}"


def _mp(value: float) -> str:
    return f"{value:g}"


def markdown_table(results: Sequence[RunResult]) -> str:
    """The results as a markdown table (ratios are to the smallest size's peaks)."""
    head = ("| output (MP) | input (px) | tiles | wall (s) | peak PSS (MiB) | "
            "peak RSS sum (MiB) | PSS / smallest | RSS / smallest |")
    rule = "|" + "|".join("---:" for _ in range(8)) + "|"
    rows = [head, rule]
    for r in results:
        rows.append(f"| {_mp(r.output_mp)} | {r.input_side} x {r.input_side} | {r.tiles} | "
                    f"{r.wall_s:.1f} | {_mib(r.peak_pss_bytes)} | {_mib(r.peak_rss_sum_bytes)} | "
                    f"{r.ratio_pss:.2f} | {r.ratio_rss:.2f} |")
    return "\n".join(rows)


def breakdown_table(results: Sequence[RunResult], top: int = 8) -> str:
    """PSS per kind of process at each run's peak, in MiB (largest kinds first)."""
    totals: dict[str, int] = defaultdict(int)
    for r in results:
        for label, value in r.pss_at_peak_by_process.items():
            totals[label] = max(totals[label], value)
    labels = sorted(totals, key=lambda k: -totals[k])
    shown, rest = (labels, []) if len(labels) <= top + 1 else (labels[:top], labels[top:])
    head = "| process (PSS MiB at the peak) | " + " | ".join(
        f"{_mp(r.output_mp)} MP" for r in results) + " |"
    rows = [head, "|---|" + "|".join("---:" for _ in results) + "|"]
    for label in shown:
        rows.append(f"| {label} | " + " | ".join(
            _mib(r.pss_at_peak_by_process.get(label, 0)) for r in results) + " |")
    if rest:
        rows.append(f"| other ({len(rest)} kinds) | " + " | ".join(
            _mib(sum(r.pss_at_peak_by_process.get(k, 0) for k in rest)) for r in results) + " |")
    rows.append("| peak at (s into the run) | " + " | ".join(
        f"{r.peak_pss_at_s:.1f}" for r in results) + " |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure the peak memory of whole `tilewave upscale` jobs (driver plus "
                    "every Ray process) for several output sizes.")
    p.add_argument("--full", action="store_true",
                   help="add 256 MP and 1 GP (1024 MP) outputs to the quick sizes "
                        f"({', '.join(map(_mp, QUICK_SIZES_MP))} MP)")
    p.add_argument("--sizes", type=float, nargs="+", metavar="MP",
                   help="output sizes to run, in megapixels of 2**20 pixels (overrides --full)")
    p.add_argument("--workers", type=int, default=None,
                   help="pass --workers N to tilewave (default: tilewave's own default)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"cache of inputs and scratch space (default: {DEFAULT_WORKDIR})")
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT,
                   help=f"where to write the results (default: {DEFAULT_JSON_OUT})")
    p.add_argument("--interval", type=float, default=0.1,
                   help="seconds between memory samples (default: 0.1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up on a run after this many seconds (default: no limit)")
    p.add_argument("--timeline", action="store_true",
                   help=f"keep up to {TIMELINE_POINTS} samples per run, per kind of process, "
                        "in the JSON (to see what grows when)")
    p.add_argument("--keep-scratch", action="store_true",
                   help="keep the scratch folder (Ray's logs) instead of removing it")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be at least 1")
    if args.interval <= 0:
        p.error("--interval must be positive")
    if args.sizes is not None and any(s <= 0 for s in args.sizes):
        p.error("--sizes must be positive")
    return args


def _result_json(r: RunResult, timeline: bool) -> dict[str, Any]:
    out = asdict(r)
    if not timeline:
        del out["timeline"]
    # Paths relative to the repository: the JSON is committed and read on other machines.
    for key in ("output", "array"):
        if isinstance(out["report"].get(key), str):
            out["report"][key] = os.path.relpath(out["report"][key], REPO)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = sorted(set(args.sizes if args.sizes else
                       QUICK_SIZES_MP + (FULL_EXTRA_SIZES_MP if args.full else ())))
    workdir: Path = args.workdir.resolve()
    inputs_dir = workdir / "inputs"
    workdir.mkdir(parents=True, exist_ok=True)
    # Short paths: Ray's unix sockets live under RAY_TMPDIR and are limited to ~107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    began = time.perf_counter()
    results: list[RunResult] = []
    try:
        for mp in sizes:
            side = input_side(mp)
            t = time.perf_counter()
            path = ensure_input(inputs_dir, side)
            made = time.perf_counter() - t
            print(f"[{_mp(mp)} MP] input {path.name} ({path.stat().st_size / MIB:.1f} MiB"
                  f"{f', made in {made:.1f} s' if made > 0.05 else ', cached'}); upscaling ...",
                  file=sys.stderr, flush=True)
            r = run_one(mp, path, side, scratch, scratch / "ray", args.workers,
                        args.interval, args.timeout)
            print(f"[{_mp(mp)} MP] {r.tiles} tiles in {r.wall_s:.1f} s, peak PSS "
                  f"{_mib(r.peak_pss_bytes)} MiB, peak RSS sum {_mib(r.peak_rss_sum_bytes)} MiB "
                  f"({r.samples} samples, sampler CPU {r.sampler_cpu_s:.1f} s, load before "
                  f"{r.load_before:.1f})", file=sys.stderr, flush=True)
            if r.leftover_processes:
                print(f"[{_mp(mp)} MP] warning: processes outlived the job (killed): "
                      f"{', '.join(r.leftover_processes)}", file=sys.stderr, flush=True)
            results.append(r)
    except subprocess.TimeoutExpired as exc:
        print(f"error: the {_mp(mp)} MP run took over {exc.timeout:g} s (--timeout); its "
              "processes were killed", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the running job was killed", file=sys.stderr)
        return 130
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    base = results[0]
    for r in results:
        r.ratio_pss = r.peak_pss_bytes / base.peak_pss_bytes
        r.ratio_rss = r.peak_rss_sum_bytes / base.peak_rss_sum_bytes
    total = time.perf_counter() - began

    print(markdown_table(results))
    print()
    print(breakdown_table(results))
    print(f"\ntotal time {total:.1f} s", file=sys.stderr)

    example = tilewave_command(Path("IN.tif"), Path("OUT.zarr"), args.workers)
    payload = {
        "benchmark": "memory",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([os.path.relpath(sys.executable, REPO)
                               if sys.executable.startswith(str(REPO)) else sys.executable,
                               os.path.relpath(__file__, REPO), *(
                                   sys.argv[1:] if argv is None else argv)]),
        "tilewave_command": shlex.join([os.path.basename(example[0]), *example[1:]]),
        "environment": {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": "<scratch>/ray"},
        "units": {"megapixel": MEGAPIXEL, "memory": "bytes, except *_mib (MiB)"},
        "method": "peak over samples every ~{:g} s of the sum over the tilewave process and "
                  "all its descendants of PSS (memory_full_info().pss; RSS where not "
                  "permitted) and, separately, of RSS".format(args.interval),
        "machine": machine_info(),
        "total_seconds": total,
        "results": [_result_json(r, args.timeline) for r in results],
        "table_markdown": markdown_table(results),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
