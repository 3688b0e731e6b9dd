"""The two schedules of a multi-step context model against its number of sampler steps K:
what each holds at once (contexts, states, memory) and what each costs in time.

``--schedule tile`` runs all K steps of a tile at once and hands its neighbours the
contexts of every step, so the contexts a tile leaves grow with K; ``--schedule step`` runs
node (tile, step k) after its neighbours' step k and its own step k-1, and frees one
step's contexts once used, so what waits should not grow with K (the target: the step
schedule's peak context bytes at K stay within 1.2x of those at K = 1). Both must write the
same bytes, which is checked here on every pair of runs.

For each model (``uniba-diff-x2``; a tiny random Stable Diffusion x4 upscaler folder built
by ``tools/tiny_sd_x4.py`` and cached under ``.bench/step_schedule``), each K in 1, 4, 16,
64, each executor (Ray with 2 workers; ``--local``) and each schedule, one command

    tilewave upscale IN OUT --model M --steps K --schedule S --tile T --workers 2
        --json --quiet --overwrite

is run and measured:

* wall seconds of the command, and the report's ``tile_seconds``;
* the report's ``peak_context_bytes`` (the most bytes of persisted contexts waiting for
  their consumers at once, counted by the driver);
* polled from a thread every ~20 ms, independently of the driver's count: the peak total
  size (bytes the files say, not blocks) of ``OUT/.tilewave/contexts/`` and, separately,
  of ``OUT/.tilewave/states/`` (the sampler states waiting between a tile's steps);
* peak memory: the summed PSS (and RSS) of the command and every process it starts, Ray's
  daemons and workers included, sampled every ~50 ms (``benchmarks/measure.py``);
* a SHA-256 of the decoded output array ``OUT/0``, so that the schedules' bytes can be
  compared.

Inputs are crops of scikit-image's astronaut, cached under ``.bench/step_schedule``:
192 x 192 with tiles of 32 (6 x 6 tiles) for uniba-diff-x2, 64 x 64 with tiles of 16 (4 x 4
tiles) for the tiny SD x4 (its tile must be at least 16; its x4 output is 256 x 256).

    python benchmarks/step_schedule.py          # docs/benchmarks/step_schedule.{json,md}
    python benchmarks/step_schedule.py --quick  # 64 x 64, K 1 and 4, uniba-diff-x2, --local,
                                                # written to a temporary folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, CommandFailed, machine_info, machine_line, measure_command  # noqa: E402
from memory import bench_env, ensure_input  # noqa: E402

MIB = 2**20
DEFAULT_WORKDIR = REPO / ".bench" / "step_schedule"
DEFAULT_OUT = REPO / "docs" / "benchmarks"
STEPS = (1, 4, 16, 64)
SCHEDULES = ("tile", "step")
EXECUTORS = ("ray", "local")
WORKERS = 2
#: Seconds between polls of the working folders: files live for about one node's run.
DISK_INTERVAL = 0.02
#: Seconds between memory samples of the process tree.
MEMORY_INTERVAL = 0.05
#: The name the tiny SD x4 folder is reported under (its path is this machine's).
TINY_SD = "tiny-sd-x4"


@dataclass(frozen=True)
class Case:
    """One model and the input it is measured on."""

    #: How the model is named in the results.
    name: str
    #: What ``--model`` is given.
    model: str
    #: Side of the square input, and the tile size.
    side: int
    tile: int

    @property
    def tiles(self) -> int:
        per_side = -(-self.side // self.tile)
        return per_side * per_side


# --------------------------------------------------------------------------- polling


@dataclass
class FolderPoller:
    """The peak total size of the files in some folders, polled in a background thread.

    Each folder's peak is its own (the two peaks need not fall at the same instant). A
    folder that does not exist yet, or any more, counts 0, and a file removed between
    listing and reading is skipped: the working folders appear and vanish with the job.
    """

    folders: dict[str, Path]
    interval: float = DISK_INTERVAL
    peak_bytes: dict[str, int] = field(default_factory=dict)
    peak_files: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        for name in self.folders:
            self.peak_bytes[name] = self.peak_files[name] = 0
        self._thread = threading.Thread(target=self._run, name="folder-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            self.poll()
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - began)))

    def poll(self) -> None:
        for name, folder in self.folders.items():
            size, count = folder_size(folder)
            self.peak_bytes[name] = max(self.peak_bytes[name], size)
            self.peak_files[name] = max(self.peak_files[name], count)
        self.polls += 1


def folder_size(folder: Path) -> tuple[int, int]:
    """Total bytes and number of the files under ``folder`` (0, 0 where there is none)."""
    total = count = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0, 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                size, n = folder_size(Path(entry.path))
                total, count = total + size, count + n
            else:
                total += entry.stat(follow_symlinks=False).st_size
                count += 1
        except OSError:  # removed since it was listed: it no longer waits
            continue
    return total, count


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One command of the sweep and what was measured of it."""

    model: str
    steps: int
    schedule: str
    executor: str
    input_side: int
    tile: int
    tiles: int
    #: ok, failed (see detail) or timeout.
    status: str = "ok"
    detail: str = ""
    wall_s: float | None = None
    tile_seconds: float | None = None
    report_seconds: float | None = None
    steps_run: int | None = None
    #: The report's count (bytes the workers' pickles said, waiting at once).
    peak_context_bytes: int | None = None
    #: Polled file sizes of OUT/.tilewave/contexts and OUT/.tilewave/states.
    peak_contexts_disk_bytes: int | None = None
    peak_states_disk_bytes: int | None = None
    peak_contexts_files: int | None = None
    peak_states_files: int | None = None
    folder_polls: int | None = None
    peak_pss_bytes: int | None = None
    peak_rss_sum_bytes: int | None = None
    pss_at_peak_by_process: dict[str, int] = field(default_factory=dict)
    memory_samples: int | None = None
    sampler_cpu_s: float | None = None
    #: 1-minute load average before the run: the machine is shared, and load skews walls.
    load_before: float | None = None
    output_sha256: str | None = None
    report: dict[str, Any] = field(default_factory=dict)


def tilewave_command(case: Case, src: Path, out: Path, steps: int, schedule: str,
                     executor: str, workers: int) -> list[str]:
    """The measured command line (from the same environment as this script)."""
    cmd = [sys.executable, "-m", "tilewave.cli", "upscale", str(src), str(out),
           "--model", case.model, "--steps", str(steps), "--schedule", schedule,
           "--tile", str(case.tile), "--json", "--quiet", "--overwrite"]
    return cmd + (["--local"] if executor == "local" else ["--workers", str(workers)])


def output_checksum(out: Path) -> str:
    """SHA-256 of the decoded full-resolution array (with its shape and dtype): what the
    schedules must agree on, whatever the chunk files' encoding."""
    import numpy as np
    import zarr

    array = np.ascontiguousarray(zarr.open_array(out / "0", mode="r")[...])
    digest = hashlib.sha256(f"{array.shape} {array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def measure(case: Case, src: Path, scratch: Path, env: dict[str, str], steps: int,
            schedule: str, executor: str, workers: int, timeout: float | None) -> Run:
    """Run one command to the end, polling its working folders and its memory."""
    run = Run(case.name, steps, schedule, executor, case.side, case.tile, case.tiles)
    out = scratch / "out.zarr"
    shutil.rmtree(out, ignore_errors=True)
    state = out / ".tilewave"
    poller = FolderPoller({"contexts": state / "contexts", "states": state / "states"})
    poller.start()
    try:
        measured = measure_command(
            tilewave_command(case, src, out, steps, schedule, executor, workers),
            env=env, interval=MEMORY_INTERVAL, timeout=timeout)
    except subprocess.TimeoutExpired:
        run.status, run.detail = "timeout", f"over {timeout:g} s"
        return run
    except CommandFailed as exc:
        run.status, run.detail = "failed", exc.measured.stderr_tail[-600:]
        return run
    finally:
        poller.stop()
    # The JSON is committed: no machine paths (outputs, the tiny SD folder's place).
    report = {k: v for k, v in measured.report.items() if k not in ("output", "array")}
    if report.get("model") == case.model:
        report["model"] = case.name
    run.wall_s = round(measured.wall_s, 2)
    run.tile_seconds = round(report.get("tile_seconds", float("nan")), 2)
    run.report_seconds = round(report.get("seconds", float("nan")), 2)
    run.steps_run = report.get("steps_run")
    run.peak_context_bytes = report.get("peak_context_bytes")
    run.peak_contexts_disk_bytes = poller.peak_bytes["contexts"]
    run.peak_states_disk_bytes = poller.peak_bytes["states"]
    run.peak_contexts_files = poller.peak_files["contexts"]
    run.peak_states_files = poller.peak_files["states"]
    run.folder_polls = poller.polls
    run.peak_pss_bytes = measured.peak_pss_bytes
    run.peak_rss_sum_bytes = measured.peak_rss_sum_bytes
    run.pss_at_peak_by_process = measured.pss_at_peak_by_process
    run.memory_samples = measured.samples
    run.sampler_cpu_s = round(measured.sampler_cpu_s, 2)
    run.load_before = round(measured.load_before, 2)
    run.output_sha256 = output_checksum(out)
    run.report = report
    if report.get("schedule") != schedule:  # auto must not have overridden what was asked
        run.status, run.detail = "failed", f"ran schedule {report.get('schedule')!r}"
    shutil.rmtree(out, ignore_errors=True)
    return run


# --------------------------------------------------------------------------- inputs


def ensure_tiny_sd(folder: Path) -> Path:
    """The tiny random SD x4 folder, built once with ``tools/tiny_sd_x4.py``."""
    if not (folder / "model_index.json").exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, str(REPO / "tools" / "tiny_sd_x4.py"), str(partial)],
                       check=True, cwd=REPO)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # a cached folder is always a complete one
    return folder


def cases(args: argparse.Namespace, workdir: Path) -> list[Case]:
    """The models measured, with their inputs' sizes."""
    if args.quick:
        return [Case("uniba-diff-x2", "uniba-diff-x2", 64, 16)]
    chosen = []
    if "uniba-diff-x2" in args.models:
        chosen.append(Case("uniba-diff-x2", "uniba-diff-x2", args.uniba_side, 32))
    if TINY_SD in args.models:
        folder = ensure_tiny_sd(workdir / "tiny_sd_x4")
        chosen.append(Case(TINY_SD, str(folder), args.sd_side, 16))
    return chosen


# --------------------------------------------------------------------------- output


def _mib(n: int | None, digits: int = 2) -> str:
    return "-" if n is None else f"{n / MIB:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_derived(runs: list[dict[str, Any]]) -> None:
    """On every run: its peak context bytes over those of K = 1 of the same model,
    executor and schedule; on step runs, whether their bytes equal the tile run's."""
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["model"], r["executor"], r["schedule"]

    base = {key(r): r["peak_context_bytes"] for r in runs if r["steps"] == 1 and r["status"] == "ok"}
    tile_sums = {(r["model"], r["executor"], r["steps"]): r["output_sha256"]
                 for r in runs if r["schedule"] == "tile" and r["status"] == "ok"}
    for r in runs:
        b, v = base.get(key(r)), r["peak_context_bytes"]
        r["peak_context_over_k1"] = round(v / b, 3) if b and v is not None else None
        if r["schedule"] == "step":
            ref = tile_sums.get((r["model"], r["executor"], r["steps"]))
            r["same_bytes_as_tile"] = (None if ref is None or r["output_sha256"] is None
                                       else ref == r["output_sha256"])


def table(runs: list[dict[str, Any]], model: str, executor: str) -> str:
    """Markdown: one line per K, each cell ``tile / step``."""
    mine = [r for r in runs if r["model"] == model and r["executor"] == executor]
    if not mine:
        return ""
    lines = ["| K | wall s | tile s | peak contexts MiB (report) | peak contexts on disk MiB "
             "(polled) | peak states on disk MiB | peak memory MiB (PSS) | step(K)/step(1) "
             "contexts | tile(K)/tile(1) contexts | same bytes | load before |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|"]
    for k in sorted({r["steps"] for r in mine}):
        by = {r["schedule"]: r for r in mine if r["steps"] == k}

        def cell(name: str, fmt: Callable[[Any], str], by: dict[str, Any] = by) -> str:
            """``tile / step`` of one field; a run that failed shows its status."""
            return " / ".join("-" if (r := by.get(s)) is None else
                              r["status"] if r["status"] != "ok" else fmt(r[name])
                              for s in SCHEDULES)

        step, tile = by.get("step", {}), by.get("tile", {})
        same = step.get("same_bytes_as_tile")
        lines.append(
            f"| {k} | {cell('wall_s', str)} | {cell('tile_seconds', str)} | "
            f"{cell('peak_context_bytes', _mib)} | {cell('peak_contexts_disk_bytes', _mib)} | "
            f"{cell('peak_states_disk_bytes', _mib)} | "
            f"{cell('peak_pss_bytes', lambda n: _mib(n, 0))} | "
            f"{_fmt_ratio(step.get('peak_context_over_k1'))} | "
            f"{_fmt_ratio(tile.get('peak_context_over_k1'))} | "
            f"{'-' if same is None else 'yes' if same else 'NO'} | {cell('load_before', str)} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """The tables, one per model and executor, with the command and machine above them."""
    parts = [
        "# Sampler steps K: the tile schedule against the step schedule\n",
        f"`{result['command']}` on {result['machine_line']}, {result['total_seconds']:.0f} s "
        "in all. Each measured command: "
        f"`{result['tilewave_command']}` (Ray), or with `--local` in place of `--workers`.\n",
        "Cells are `tile / step`. Peak contexts (report): the driver's count of context bytes "
        "waiting for their consumers at once; on disk: the peak total size of the files in "
        "`OUT/.tilewave/contexts/` and `OUT/.tilewave/states/`, polled every ~20 ms; memory: "
        "the peak summed PSS of the command and every process it starts (Ray's included), "
        "sampled every ~50 ms. The ratios divide a schedule's peak context bytes (report) at K "
        "by its own at K = 1 (target for the step schedule: at most 1.2). Same bytes: the "
        "decoded outputs' SHA-256 are equal. Load before: the 1-minute load average as the run "
        "began; the machine was shared with other jobs, and the samplers themselves take a "
        "share of a core, so walls where it is well above the 2 CPUs are inflated, by up to "
        "several times.\n",
    ]
    for t in result["tables"]:
        parts.append(f"## {t['model']}, {t['executor']} ({t['detail']})\n\n{t['markdown']}\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a 64 x 64 input, K 1 and 4, uniba-diff-x2 only, --local; results "
                         "go to a temporary folder unless --out is given")
    ap.add_argument("--models", nargs="+", choices=["uniba-diff-x2", TINY_SD],
                    default=["uniba-diff-x2", TINY_SD])
    ap.add_argument("--steps", type=int, nargs="+", default=None, metavar="K",
                    help=f"sampler steps (default: {' '.join(map(str, STEPS))}; quick: 1 4)")
    ap.add_argument("--executors", nargs="+", choices=EXECUTORS, default=None,
                    help="ray (--workers) and/or local (--local) (default: both; quick: local)")
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--uniba-side", type=int, default=192, help="uniba-diff-x2's input side")
    ap.add_argument("--sd-side", type=int, default=64, help="the tiny SD x4's input side")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="cache of inputs and the tiny SD folder, and scratch space")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for step_schedule.json and .md (default: docs/benchmarks; "
                         "quick: a new temporary folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.models = ["uniba-diff-x2"]
        args.steps = args.steps or [1, 4]
        args.executors = args.executors or ["local"]
        args.out = args.out or Path(tempfile.mkdtemp(prefix="step_schedule-"))
    args.steps = args.steps or list(STEPS)
    args.executors = args.executors or list(EXECUTORS)
    args.out = args.out or DEFAULT_OUT
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    env = bench_env(scratch)
    began = time.perf_counter()
    runs: list[Run] = []
    chosen: list[Case] = []
    try:
        chosen = cases(args, workdir)
        for case in chosen:
            src = ensure_input(workdir / "inputs", case.side, case.tile)
            for executor in args.executors:
                # The first command of a kind pays for cold caches (the model's files, the
                # imports, Ray's first start): run one unrecorded so K = 1 is not penalised.
                _say(f"[{case.name} {executor}] warm-up ...")
                measure(case, src, scratch, env, 1, "tile", executor, args.workers, args.timeout)
                for k in args.steps:
                    for schedule in SCHEDULES:
                        label = f"[{case.name} {executor} K={k} {schedule}]"
                        _say(f"{label} ...")
                        run = measure(case, src, scratch, env, k, schedule, executor,
                                      args.workers, args.timeout)
                        runs.append(run)
                        _say(f"{label} {run.status}: wall {run.wall_s} s, tile {run.tile_seconds} s, "
                             f"contexts {_mib(run.peak_context_bytes)} MiB (disk "
                             f"{_mib(run.peak_contexts_disk_bytes)}), states "
                             f"{_mib(run.peak_states_disk_bytes)} MiB, PSS "
                             f"{_mib(run.peak_pss_bytes, 0)} MiB, load {run.load_before}"
                             + (f"\n{run.detail}" if run.detail else ""))
    except KeyboardInterrupt:
        _say("interrupted; the running job was killed")
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    records = [asdict(r) for r in runs]
    add_derived(records)
    machine = machine_info()
    result: dict[str, Any] = {
        "benchmark": "step_schedule",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", "benchmarks/step_schedule.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "tilewave_command": ("tilewave upscale IN OUT --model M --steps K --schedule S --tile T "
                             f"--json --quiet --overwrite --workers {args.workers}"),
        "models": {c.name: {"input": f"{c.side} x {c.side} crop of skimage.data.astronaut",
                            "tile": c.tile, "tiles": c.tiles,
                            **({"folder": "tools/tiny_sd_x4.py (random weights)"}
                               if c.name == TINY_SD else {})} for c in chosen},
        "steps": args.steps, "executors": args.executors, "workers": args.workers,
        "method": (f"wall: the command; memory: peak over samples every ~{MEMORY_INTERVAL:g} s "
                   "of the summed PSS (and RSS) of the command's process tree; disk: peak over "
                   f"polls every ~{DISK_INTERVAL:g} s of the summed st_size of the files in "
                   "OUT/.tilewave/contexts and OUT/.tilewave/states; output_sha256: SHA-256 of "
                   "the decoded OUT/0 array"),
        "machine": machine, "machine_line": machine_line(machine),
        "total_seconds": round(time.perf_counter() - began, 1),
        "runs": records,
    }
    result["tables"] = [
        {"model": c.name, "executor": ex,
         "detail": f"{c.side} x {c.side} input, tiles of {c.tile}, {c.tiles} tiles"
                   + (f", --workers {args.workers}" if ex == "ray" else ", --local"),
         "markdown": table(records, c.name, ex)}
        for c in chosen for ex in args.executors]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_schedule.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "step_schedule.md").write_text(markdown(result))
    for t in result["tables"]:
        print(f"{t['model']}, {t['executor']}:\n{t['markdown']}\n")
    _say(f"total {result['total_seconds']:.0f} s; wrote {args.out}/step_schedule.json and .md")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
