"""Peak memory of a whole upscaling job against the size of its output, for tilewave and
for the two ways of doing without it, measured side by side in one run.

For each model and output size, the same input (a Zarr v3 array of scikit-image's
astronaut photograph repeated, chunked by tile, made once and cached) is upscaled x2 by:

``tilewave``
    ``tilewave upscale IN OUT --model M --tile 256 --workers 2 --quiet --json``, whose
    memory is the driver plus every Ray process it starts (gcs_server, raylet, agents,
    workers), plus the Ray object store's peak use, polled from the raylet;
``whole``
    whole-image inference of the same model in one process (``benchmarks/peers.py``),
    under a memory cap: once it no longer fits, larger sizes are not tried;
``naive``
    a loop over the same tiles that assembles the output in RAM and writes it at the end.

Memory is the peak of the summed PSS of each command's process tree, sampled about
every 0.1 s (see ``benchmarks/measure.py``). Sizes are output megapixels of 2**20 pixels,
so 16 MP is a 4096 x 4096 output.

    python benchmarks/memory.py            # quick: bicubic to 64 MP, SPAN and UniBA to 16 MP
    python benchmarks/memory.py --full     # bicubic to 1 GP (1024 MP), the models to 64 MP
    python benchmarks/memory.py --models bicubic --sizes 1 16 --methods tilewave
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, CommandFailed, Measured, machine_info, machine_line, measure_command  # noqa: E402

DEFAULT_WORKDIR = REPO / ".bench" / "memory"
DEFAULT_JSON_OUT = REPO / "docs" / "benchmarks" / "memory.json"
MEGAPIXEL = 2**20
SCALE = 2
TILE = 256
WORKERS = 2
MIB = 2**20
#: Output sizes (MP) per model: quick mode, and what full mode adds.
SIZES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "bicubic": ((1, 4, 16, 64), (256, 1024)),
    "span-x2": ((1, 4, 16), (64,)),
    "uniba-x2": ((1, 4, 16), (64,)),
}
METHODS = ("tilewave", "whole", "naive")


# --------------------------------------------------------------------------- inputs


def input_side(output_mp: float, scale: int = SCALE) -> int:
    """Side of the square input whose x``scale`` output has ``output_mp`` megapixels."""
    side = round(math.sqrt(output_mp * MEGAPIXEL) / scale)
    if side < 1:
        raise ValueError(f"{output_mp} MP is too small an output")
    return side


def _astronaut_tiles(side: int, tile: int, width: int | None = None
                     ) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y, x, (3, h, w) block)`` tiles of a ``side`` x ``width`` (default square)
    mosaic of the astronaut."""
    width = width or side
    from skimage.data import astronaut

    photo = astronaut().transpose(2, 0, 1)  # (3, 512, 512) uint8
    ph, pw = photo.shape[1:]
    # Repeat the photo enough that any tile-sized window of the mosaic is one slice.
    wrapped = np.tile(photo, (1, math.ceil(tile / ph) + 1, math.ceil(tile / pw) + 1))
    for y in range(0, side, tile):
        for x in range(0, width, tile):
            h, w = min(tile, side - y), min(tile, width - x)
            yield y, x, wrapped[:, y % ph:y % ph + h, x % pw:x % pw + w]


def ensure_input(folder: Path, side: int, tile: int = TILE, width: int | None = None) -> Path:
    """Path of the cached ``(3, side, width or side)`` uint8 Zarr input, chunked by
    ``tile``, writing it chunk by chunk (a few tiles of memory even for a gigapixel) if
    missing."""
    import zarr

    width = width or side
    path = folder / (f"astronaut_{side}_t{tile}.zarr" if width == side
                     else f"astronaut_{side}x{width}_t{tile}.zarr")
    if path.exists():
        return path
    partial = folder / f"{path.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    array = zarr.create_array(partial, shape=(3, side, width), chunks=(3, tile, tile),
                              dtype="uint8", dimension_names=("c", "y", "x"))
    for y, x, block in _astronaut_tiles(side, tile, width):
        array[:, y:y + block.shape[1], x:x + block.shape[2]] = block
    partial.rename(path)  # a cached input is always a complete one
    return path


# --------------------------------------------------------------------------- commands


def tilewave_command(input_path: Path, output_path: Path, model: str,
                     workers: int | None = WORKERS, local: bool = False) -> list[str]:
    """The ``tilewave upscale`` command line measured (from the same environment)."""
    exe = shutil.which("tilewave", path=os.path.dirname(sys.executable)) or shutil.which("tilewave")
    base = [exe] if exe else [sys.executable, "-m", "tilewave.cli"]
    cmd = [*base, "upscale", str(input_path), str(output_path), "--scale", str(SCALE),
           "--model", model, "--tile", str(TILE), "--quiet", "--json", "--overwrite"]
    if local:
        cmd.append("--local")
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd


def peer_command(method: str, input_path: Path, output_path: Path, model: str,
                 threads: int, memory_cap_gib: float | None = None,
                 pyramid: bool = False) -> list[str]:
    """A ``benchmarks/peers.py`` command line (``pyramid``: the peer adds the pyramid
    levels tilewave's output has)."""
    cmd = [sys.executable, str(HERE / "peers.py"), method, str(input_path), str(output_path),
           "--model", model, "--scale", str(SCALE), "--tile", str(TILE), "--threads", str(threads)]
    if pyramid:
        cmd.append("--pyramid")
    if memory_cap_gib:
        cmd += ["--memory-cap-gib", f"{memory_cap_gib:g}"]
    return cmd


def bench_env(scratch: Path) -> dict[str, str]:
    """The environment of measured commands: a local Ray instance whose files go under
    ``scratch``, or under the system's temporary folder where ``scratch`` is too deep."""
    ray_tmp = scratch / "ray"
    # Ray's unix sockets live under RAY_TMPDIR, and their paths may not exceed 107 bytes.
    if len(str(ray_tmp)) > 40:
        ray_tmp = Path(tempfile.mkdtemp(prefix="twb-"))
    ray_tmp.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(ray_tmp))


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One method at one size: its measurement, or why there is none."""

    model: str
    method: str
    output_mp: float
    input_side: int
    tiles: int
    #: ok, out of memory (did not fit under the cap), skipped, timeout
    status: str
    detail: str = ""
    wall_s: float | None = None
    peak_pss_bytes: int | None = None
    peak_rss_sum_bytes: int | None = None
    object_store_peak_bytes: int | None = None
    pss_at_peak_by_process: dict[str, int] = field(default_factory=dict)
    peak_pss_by_process: dict[str, int] = field(default_factory=dict)
    cpu_seconds_by_process: dict[str, float] = field(default_factory=dict)
    sampler_cpu_s: float | None = None
    load_before: float | None = None
    leftover_processes: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def take(self, m: Measured) -> None:
        self.wall_s = round(m.wall_s, 2)
        self.peak_pss_bytes = m.peak_pss_bytes
        self.peak_rss_sum_bytes = m.peak_rss_sum_bytes
        self.object_store_peak_bytes = m.object_store_peak_bytes
        self.pss_at_peak_by_process = m.pss_at_peak_by_process
        self.peak_pss_by_process = m.peak_pss_by_process
        self.cpu_seconds_by_process = m.cpu_seconds_by_process
        self.sampler_cpu_s = round(m.sampler_cpu_s, 2)
        self.load_before = m.load_before
        self.leftover_processes = m.leftover_processes
        self.timeline = m.timeline
        report = dict(m.report)
        for key in ("output", "array"):  # the JSON is committed: no machine paths
            report.pop(key, None)
        self.report = report


def measure_run(run: Run, cmd: list[str], env: dict[str, str], output: Path, interval: float,
                timeout: float | None, timeline: bool) -> Run:
    """Measure ``cmd`` into ``run``; an out-of-memory exit of a peer is a result too."""
    try:
        try:
            run.take(measure_command(cmd, env=env, interval=interval, timeout=timeout,
                                     timeline=timeline))
            run.status = "ok"
        except CommandFailed as exc:
            from peers import OUT_OF_MEMORY

            run.take(exc.measured)
            if exc.measured.returncode != OUT_OF_MEMORY:
                raise RuntimeError(str(exc)) from None
            run.status = "out of memory"
            run.detail = exc.measured.report.get("detail", "")
    except subprocess.TimeoutExpired:
        run.status, run.detail = "timeout", f"over {timeout:g} s"
    finally:
        shutil.rmtree(output, ignore_errors=True)
    return run


def default_memory_cap_gib() -> float:
    """Leave a quarter of the machine (at least 4 GiB) to everything else."""
    total = psutil.virtual_memory().total / 2**30
    return round(max(1.0, min(total * 0.75, total - 4)), 1)


# --------------------------------------------------------------------------- output


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f}"


def _mp(value: float) -> str:
    return f"{value:g}"


def markdown_table(runs: Sequence[Run]) -> str:
    """Peak memory (MiB of summed PSS) per model and size, one column per method."""
    methods = [m for m in METHODS if any(r.method == m for r in runs)]
    head = "| model | output | tiles | " + " | ".join(
        f"{m} peak (MiB)" for m in methods) + " | tilewave wall (s) | object store peak (MiB) |"
    rows = [head, "|---|---:|---:|" + "---:|" * (len(methods) + 2)]
    keys = sorted({(r.model, r.output_mp) for r in runs}, key=lambda k: (list(SIZES).index(k[0])
                                                                       if k[0] in SIZES else 99, k[1]))
    for model, mp in keys:
        by = {r.method: r for r in runs if r.model == model and r.output_mp == mp}
        any_run = next(iter(by.values()))
        cells = []
        for m in methods:
            r = by.get(m)
            cells.append("" if r is None else _mib(r.peak_pss_bytes) if r.ok else
                         "did not fit" if r.status == "out of memory" else r.status)
        tw = by.get("tilewave")
        rows.append(f"| {model} | {_mp(mp)} MP | {any_run.tiles} | " + " | ".join(cells) +
                    f" | {tw.wall_s if tw and tw.ok else '-'} | "
                    f"{_mib(tw.object_store_peak_bytes) if tw and tw.ok else '-'} |")
    return "\n".join(rows)


def write_results(path: Path, payload: dict[str, Any], update: bool, field_name: str,
                  key: Callable[[dict[str, Any]], Any],
                  recompute: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Write ``payload`` to ``path``; with ``update``, merged into the results already
    there (see :func:`merge_update`), after which ``recompute`` refreshes what is derived
    from all of them. Returns what was written."""
    if update and path.exists():
        payload = merge_update(json.loads(path.read_text()), payload, key, field_name)
        recompute(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def merge_update(old: dict[str, Any], new: dict[str, Any], key: Any, field_name: str = "runs"
                 ) -> dict[str, Any]:
    """``old`` with the records of ``new`` replacing those with the same ``key``; the
    commands of both are kept, in order, under ``updated_by``."""
    fresh = {key(r): r for r in new[field_name]}
    merged = [fresh.pop(key(r), r) for r in old[field_name]] + list(fresh.values())
    out = dict(old)
    out[field_name] = merged
    out["updated_by"] = [*old.get("updated_by", []),
                         {"command": new["command"], "created": new["created"]}]
    return out


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Peak memory of whole upscaling jobs against output size: tilewave (driver "
                    "plus every Ray process), whole-image inference and a naive in-RAM tile loop.")
    p.add_argument("--full", action="store_true",
                   help="add the large sizes: bicubic to 1 GP (1024 MP), the models to 64 MP")
    p.add_argument("--models", nargs="+", default=list(SIZES), metavar="MODEL",
                   help=f"models to run (default: {' '.join(SIZES)})")
    p.add_argument("--sizes", type=float, nargs="+", metavar="MP",
                   help="output sizes in megapixels of 2**20 pixels, for every model "
                        "(overrides the per-model defaults and --full)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--workers", type=int, default=WORKERS,
                   help=f"tilewave --workers (default: {WORKERS})")
    p.add_argument("--memory-cap-gib", type=float, default=default_memory_cap_gib(),
                   help="the whole-image and naive runs fail past this much memory "
                        "(default: %(default)s, from this machine's RAM)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help="cache of inputs and scratch space (default: .bench/memory)")
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT,
                   help="where to write the results (default: docs/benchmarks/memory.json)")
    p.add_argument("--interval", type=float, default=0.1,
                   help="seconds between memory samples (default: 0.1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up on a run after this many seconds (default: no limit)")
    p.add_argument("--update", action="store_true",
                   help="replace only the runs made now in an existing --json-out, keeping "
                        "the others (and recording both commands)")
    p.add_argument("--timeline", action="store_true",
                   help="keep up to 100 samples per run, per kind of process, in the JSON")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.interval <= 0:
        p.error("--interval must be positive")
    if args.sizes is not None and any(s <= 0 for s in args.sizes):
        p.error("--sizes must be positive")
    unknown = [m for m in args.models if m not in SIZES and not args.sizes]
    if unknown:
        p.error(f"no default sizes for {', '.join(unknown)}; pass --sizes")
    return args


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    env = bench_env(scratch)
    began = time.perf_counter()
    runs: list[Run] = []
    try:
        for model in args.models:
            quick, extra = SIZES.get(model, ((), ()))
            sizes = sorted(set(args.sizes or (quick + (extra if args.full else ()))))
            did_not_fit: dict[str, float] = {}
            for mp in sizes:
                side = input_side(mp)
                path = ensure_input(workdir / "inputs", side)
                tiles = math.ceil(side / TILE) ** 2
                for method in args.methods:
                    run = Run(model, method, mp, side, tiles, "skipped")
                    runs.append(run)
                    if method in did_not_fit:
                        run.detail = f"did not fit at {_mp(did_not_fit[method])} MP"
                        _progress(f"[{model} {_mp(mp)} MP] {method}: skipped ({run.detail})")
                        continue
                    out = scratch / f"out_{method}.zarr"
                    cmd = (tilewave_command(path, out, model, args.workers) if method == "tilewave"
                           else peer_command(method, path, out, model, args.workers,
                                             args.memory_cap_gib))
                    _progress(f"[{model} {_mp(mp)} MP] {method} ...")
                    measure_run(run, cmd, env, out, args.interval, args.timeout, args.timeline)
                    if run.status == "out of memory":
                        did_not_fit[method] = mp
                    _progress(f"[{model} {_mp(mp)} MP] {method}: {run.status}, "
                              f"{run.wall_s} s, peak PSS {_mib(run.peak_pss_bytes)} MiB"
                              + (f" ({run.detail})" if run.detail else ""))
    except RuntimeError as exc:
        _progress(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _progress("interrupted; the running job was killed")
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    total = time.perf_counter() - began
    table = markdown_table(runs)
    print(table)
    machine = machine_info()
    payload = {
        "benchmark": "memory",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", os.path.relpath(__file__, REPO),
                               *(sys.argv[1:] if argv is None else argv)]),
        "tilewave_command": shlex.join(["tilewave", *tilewave_command(
            Path("IN.zarr"), Path("OUT.zarr"), "MODEL", args.workers)[1:]]),
        "peer_command": shlex.join(["python", "benchmarks/peers.py", *peer_command(
            "METHOD", Path("IN.zarr"), Path("OUT.zarr"), "MODEL", args.workers,
            args.memory_cap_gib)[3:]]),
        "memory_cap_gib": args.memory_cap_gib,
        "method": f"peak over samples every ~{args.interval:g} s of the sum over the command's "
                  "process tree of PSS (RSS where PSS cannot be read); object store: peak "
                  "bytes used, polled from the raylet every 0.25 s",
        "units": {"megapixel": MEGAPIXEL, "memory": "bytes"},
        "machine": machine,
        "machine_line": machine_line(machine),
        "total_seconds": round(total, 1),
        "runs": [asdict(r) if args.timeline else {k: v for k, v in asdict(r).items()
                                                  if k != "timeline"} for r in runs],
        "table_markdown": table,
    }
    def retable(merged: dict[str, Any]) -> None:
        merged["table_markdown"] = markdown_table([Run(**r) for r in merged["runs"]])

    write_results(args.json_out, payload, args.update, "runs",
                  lambda r: (r["model"], r["method"], r["output_mp"]), retable)
    _progress(f"total {total:.0f} s; wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
