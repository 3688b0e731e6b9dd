"""Throughput per model, tilewave's pipeline overhead, its speed-up from 1 to 2 workers,
and the peer users would reach for instead (``dask.array.map_overlap``), measured side
by side in one run on the same input.

For each model, one cached Zarr input (scikit-image's astronaut repeated, chunked by
tile; see ``benchmarks/memory.py``) is upscaled x2 with tiles of 256 by:

``bare``
    a bare loop in one process over the same tiles, one torch thread, each tile written
    to its output chunk (``benchmarks/peers.py bare --pyramid``): the model's own cost
    plus I/O;
``default``
    ``tilewave upscale IN OUT --model M --quiet --json``: what a user gets without
    choosing (on this machine: this process, a tile per CPU);
``tilewave-1``, ``tilewave-2``
    ``tilewave upscale IN OUT --model M --workers N --quiet --json`` (Ray, 1 and 2 tiles
    at once, in one worker process);
``local-2``
    ``tilewave upscale IN OUT --model M --local --workers 2 --quiet --json``: no Ray, two
    tiles at once on threads of this process, as one Ray worker runs them;
``dask``
    ``map_overlap`` with the model's halo and ``to_zarr`` on dask's threaded scheduler,
    2 threads of one torch thread each (``benchmarks/peers.py dask --pyramid``); not for
    UniBA, whose tiles need their neighbours' contexts.

Every method writes the same output: level 0 and the pyramid levels above it (the peers
add theirs with ``dask.array.coarsen`` after level 0; tilewave computes them among its
tiles). Each run is a fresh process whose whole tree is sampled for memory. Wall time is
the whole command: starting Python, Ray and the workers, loading the model, the tiles,
the pyramid. Tilewave's JSON report also gives the time spent running tiles once the
workers were up (``tile_seconds``), which the steady-state figures use; the peers report
their loop time the same way (pyramid included).

A last run measures tilewave's fixed cost: a 4-tile bicubic job (512 x 512 in), whose
wall time minus its tile time is what every job pays to start and stop.

    python benchmarks/throughput.py          # quick: 16-64 MP outputs, a few minutes a model
    python benchmarks/throughput.py --full   # 4x the pixels
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, machine_info, machine_line  # noqa: E402
from memory import (  # noqa: E402
    SCALE,
    TILE,
    Run,
    bench_env,
    ensure_input,
    measure_run,
    peer_command,
    tilewave_command,
    write_results,
)

DEFAULT_JSON_OUT = REPO / "docs" / "benchmarks" / "throughput.json"
DEFAULT_WORKDIR = REPO / ".bench" / "memory"  # shares the cached inputs
#: Input side per model: quick mode, full mode.
SIDES: dict[str, tuple[int, int]] = {
    "bicubic": (4096, 8192),
    "span-x2": (2048, 4096),
    "uniba-x2": (2048, 4096),
}
METHODS = ("bare", "default", "tilewave-1", "tilewave-2", "local-2", "dask")


@dataclass
class Speed:
    """One method on one model."""

    model: str
    method: str
    input_side: int
    tiles: int
    output_mp: float
    wall_s: float
    #: Seconds running tiles: tilewave's ``tile_seconds``; the peers' loop time.
    tile_s: float
    peak_pss_bytes: int
    object_store_peak_bytes: int | None
    tiles_per_s: float
    mp_per_s: float
    report: dict[str, Any] = field(default_factory=dict)
    #: The profile: PSS (MiB) of each kind of process in the sample of the peak total,
    #: and the CPU seconds each kind used over the whole run.
    pss_mib_at_peak_by_process: dict[str, int] = field(default_factory=dict)
    cpu_seconds_by_process: dict[str, float] = field(default_factory=dict)


def measure_speed(model: str, method: str, path: Path, side: int, scratch: Path,
                  env: dict[str, str], interval: float) -> Speed:
    out = scratch / f"out_{method}.zarr"
    if method == "default":
        cmd = tilewave_command(path, out, model, None)
    elif method.startswith(("tilewave", "local")):
        cmd = tilewave_command(path, out, model, int(method.split("-")[1]),
                               local=method.startswith("local"))
    else:
        cmd = peer_command(method, path, out, model, 1 if method == "bare" else 2, pyramid=True)
    tiles = (-(-side // TILE)) ** 2
    run = measure_run(Run(model, method, 0, side, tiles, ""), cmd, env, out, interval, None, False)
    tile_s = float(run.report.get("tile_seconds") or run.report.get("seconds") or 0.0)
    out_mp = (side * SCALE) ** 2 / 2**20
    assert run.wall_s is not None and run.peak_pss_bytes is not None
    return Speed(model, method, side, tiles, out_mp, run.wall_s, round(tile_s, 2),
                 run.peak_pss_bytes, run.object_store_peak_bytes,
                 round(tiles / run.wall_s, 3), round(out_mp / run.wall_s, 3), run.report,
                 {k: round(v / 2**20) for k, v in run.pss_at_peak_by_process.items()},
                 run.cpu_seconds_by_process)


def measure_fixed_cost(workdir: Path, scratch: Path, env: dict[str, str],
                       interval: float) -> dict[str, Any]:
    """A 4-tile bicubic job: its wall time, tile time and the difference."""
    speed = measure_speed("bicubic", "tilewave-2", ensure_input(workdir / "inputs", 2 * TILE),
                          2 * TILE, scratch, env, interval)
    return {"command": "tilewave upscale IN(512 x 512) OUT --model bicubic --workers 2",
            "wall_s": speed.wall_s, "tile_s": speed.tile_s,
            "fixed_s": round(speed.wall_s - speed.tile_s, 2),
            "peak_pss_bytes": speed.peak_pss_bytes}


def derived(speeds: Sequence[Speed]) -> dict[str, dict[str, Any]]:
    """Per model: overhead over the bare loop, speed-up from 1 to 2 workers, and tilewave
    (2 workers) against dask, in time and peak memory."""
    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(s.model for s in speeds):
        by = {s.method: s for s in speeds if s.model == model}
        d: dict[str, Any] = {}
        bare, default, one, two, local, dask = (by.get(m) for m in METHODS)
        if bare and one:
            d["overhead_wall"] = round(one.wall_s / bare.wall_s, 3)
            d["overhead_steady"] = round(one.tile_s / bare.tile_s, 3)
            d["fixed_cost_s"] = round(one.wall_s - one.tile_s - (bare.wall_s - bare.tile_s), 1)
        if one and two:
            d["speedup_wall"] = round(one.wall_s / two.wall_s, 3)
            d["speedup_steady"] = round(one.tile_s / two.tile_s, 3)
        if two and dask:
            d["dask_time_ratio"] = round(dask.wall_s / two.wall_s, 3)
            d["memory_vs_dask"] = round(two.peak_pss_bytes / dask.peak_pss_bytes, 3)
        for name, run in (("default", default), ("ray", two), ("local", local)):
            if run and dask:  # as ratios of tilewave's to dask's
                d[f"{name}_wall_vs_dask"] = round(run.wall_s / dask.wall_s, 3)
                d[f"{name}_tiles_vs_dask"] = round(run.tile_s / dask.tile_s, 3)
                d[f"{name}_memory_vs_dask"] = round(run.peak_pss_bytes / dask.peak_pss_bytes, 3)
        out[model] = d
    return out


def markdown_table(speeds: Sequence[Speed]) -> str:
    rows = ["| model | method | tiles | wall (s) | tile time (s) | tiles/s | output MP/s | "
            "peak PSS (MiB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in speeds:
        rows.append(f"| {s.model} | {s.method} | {s.tiles} | {s.wall_s:.1f} | {s.tile_s:.1f} | "
                    f"{s.tiles_per_s:.2f} | {s.mp_per_s:.2f} | {s.peak_pss_bytes / 2**20:,.0f} |")
    return "\n".join(rows)


def profile_table(speeds: Sequence[Speed]) -> str:
    """Per run, each kind of process: its PSS in the sample of the peak total and the CPU
    seconds it used over the run (kinds under 1 MiB and 0.1 s left out)."""
    rows = ["| model | method | process | PSS at the peak (MiB) | CPU (s) |",
            "|---|---|---|---:|---:|"]
    for s in speeds:
        kinds = dict.fromkeys([*s.pss_mib_at_peak_by_process, *s.cpu_seconds_by_process])
        for kind in kinds:
            mib = s.pss_mib_at_peak_by_process.get(kind, 0)
            cpu = s.cpu_seconds_by_process.get(kind, 0.0)
            if mib >= 1 or cpu >= 0.1:
                rows.append(f"| {s.model} | {s.method} | {kind} | {mib:,} | {cpu:.1f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="inputs with 4x the pixels")
    p.add_argument("--models", nargs="+", default=list(SIDES), choices=list(SIDES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--side", type=int, default=None,
                   help="input side for every model (overrides the per-model defaults)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT)
    p.add_argument("--update", action="store_true",
                   help="replace only the runs made now in an existing --json-out")
    p.add_argument("--interval", type=float, default=0.2,
                   help="seconds between memory samples (default: 0.2, to disturb little)")
    args = p.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="speed-", dir=workdir))
    env = bench_env(scratch)
    began = time.perf_counter()
    speeds: list[Speed] = []
    skipped: list[str] = []
    try:
        for model in args.models:
            side = args.side or SIDES[model][1 if args.full else 0]
            path = ensure_input(workdir / "inputs", side)
            for method in args.methods:
                if method == "dask" and model == "uniba-x2":
                    skipped.append(f"dask on {model}: its tiles need their neighbours' "
                                   "contexts, which map_overlap cannot pass")
                    continue
                print(f"[{model} {side}x{side}] {method} ...", file=sys.stderr, flush=True)
                s = measure_speed(model, method, path, side, scratch, env, args.interval)
                print(f"[{model} {side}x{side}] {method}: {s.wall_s:.1f} s wall, {s.tile_s:.1f} s "
                      f"tiles, peak {s.peak_pss_bytes / 2**20:,.0f} MiB", file=sys.stderr, flush=True)
                speeds.append(s)
        fixed = None
        if "tilewave-2" in args.methods:
            print("[fixed cost] 4-tile bicubic job ...", file=sys.stderr, flush=True)
            fixed = measure_fixed_cost(workdir, scratch, env, args.interval)
            print(f"[fixed cost] {fixed['fixed_s']} s", file=sys.stderr, flush=True)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    table = markdown_table(speeds)
    print(table)
    print(profile_table(speeds))
    machine = machine_info()
    payload = {
        "benchmark": "throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", os.path.relpath(__file__, REPO),
                               *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine,
        "machine_line": machine_line(machine),
        "total_seconds": round(time.perf_counter() - began, 1),
        "speeds": [asdict(s) for s in speeds],
        "derived": derived(speeds),
        "fixed_cost": fixed,
        "skipped": skipped,
        "table_markdown": table,
        "profile_markdown": profile_table(speeds),
    }
    def recompute(merged: dict[str, Any]) -> None:
        all_speeds = [Speed(**s) for s in merged["speeds"]]
        merged["derived"] = derived(all_speeds)
        merged["table_markdown"] = markdown_table(all_speeds)
        merged["profile_markdown"] = profile_table(all_speeds)
        merged["fixed_cost"] = fixed or merged.get("fixed_cost")

    payload = write_results(args.json_out, payload, args.update, "speeds",
                            lambda s: (s["model"], s["method"]), recompute)
    print(json.dumps(payload["derived"], indent=1))
    print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
