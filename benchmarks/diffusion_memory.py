"""Inf-DiT's memory claim, reproduced with ``uniba-diff-x2``: peak memory against output
size and against the width of a strip, whole-image inference beside tilewave, in one run.

Inf-DiT (Yang et al. 2024, Fig. 2) shows that a diffusion transformer's memory grows with
the image when it is run at once, and stays flat when blocks are generated in raster order
with only the neighbours' keys and values kept. Here the same model runs both ways:

``tilewave``
    ``tilewave upscale IN OUT --model uniba-diff-x2 --tile 256 --workers 2`` (4 sampler
    steps, the default): the driver plus every Ray process, summed PSS;
``whole``
    whole-image inference of the same model and sampler in one process
    (``benchmarks/peers.py whole``), under a memory cap; once a size does not fit, larger
    ones are not tried.

Sizes: square outputs of 1, 4, 16 and 64 MP (MP = 2**20 pixels), and strips 512 input
pixels high whose input width is 1024, 2048, 4096 and 8192 pixels. Inputs are mosaics of
scikit-image's astronaut, cached under ``.bench/memory``.

    python benchmarks/diffusion_memory.py     # docs/benchmarks/diffusion_memory.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, machine_info, machine_line  # noqa: E402
from memory import (  # noqa: E402
    DEFAULT_WORKDIR,
    MIB,
    TILE,
    WORKERS,
    Run,
    bench_env,
    default_memory_cap_gib,
    ensure_input,
    input_side,
    measure_run,
    peer_command,
    tilewave_command,
)

MODEL = "uniba-diff-x2"
SIZES_MP = (1, 4, 16, 64)
STRIP_HEIGHT = 512
STRIP_WIDTHS = (1024, 2048, 4096, 8192)
METHODS = ("tilewave", "whole")
OUT = REPO / "docs" / "benchmarks"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sweep(kind: str, shapes: list[tuple[float, int, int]], args: argparse.Namespace,
          workdir: Path, scratch: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Measure both methods at every ``(label, input height, input width)``."""
    did_not_fit: set[str] = set()
    rows = []
    for label, height, width in shapes:
        path = ensure_input(workdir / "inputs", height, TILE, width)
        tiles = math.ceil(height / TILE) * math.ceil(width / TILE)
        for method in args.methods:
            run = Run(MODEL, method, height * width * 4 / 2**20, height, tiles, "skipped")
            if method in did_not_fit:
                run.detail = "a smaller size did not fit"
            else:
                out = scratch / f"out_{method}.zarr"
                cmd = (tilewave_command(path, out, MODEL, args.workers) if method == "tilewave"
                       else peer_command(method, path, out, MODEL, args.workers, args.memory_cap_gib))
                _say(f"[{kind} {label}] {method} ...")
                measure_run(run, cmd, env, out, args.interval, args.timeout, False)
                if run.status == "out of memory":
                    did_not_fit.add(method)
            _say(f"[{kind} {label}] {method}: {run.status}, {run.wall_s} s, "
                 f"peak {run.peak_pss_bytes and round(run.peak_pss_bytes / MIB)} MiB")
            record = {k: v for k, v in asdict(run).items() if k != "timeline"}
            record.update(sweep=kind, label=label, input_height=height, input_width=width)
            rows.append(record)
    return rows


def table(rows: list[dict[str, Any]], kind: str, label_name: str) -> str:
    """Markdown: one line per size, peak MiB per method and tilewave's ratio to its smallest."""
    mine = [r for r in rows if r["sweep"] == kind]
    labels = list(dict.fromkeys(r["label"] for r in mine))
    base = next((r["peak_pss_bytes"] for r in mine if r["method"] == "tilewave" and r["status"] == "ok"), None)
    lines = [f"| {label_name} | input | tiles | tilewave peak (MiB) | tilewave / smallest | "
             "whole-image peak (MiB) | tilewave wall (s) | whole wall (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        by = {r["method"]: r for r in mine if r["label"] == label}
        tw, wh = by.get("tilewave"), by.get("whole")

        def cell(r: dict[str, Any] | None) -> str:
            if r is None:
                return "-"
            if r["status"] == "ok":
                return f"{r['peak_pss_bytes'] / MIB:,.0f}"
            return "did not fit" if r["status"] == "out of memory" else r["status"]

        any_run = tw or wh
        assert any_run is not None
        ratio = (f"{tw['peak_pss_bytes'] / base:.2f}" if tw and tw["status"] == "ok" and base else "-")
        lines.append(f"| {label} | {any_run['input_width']} x {any_run['input_height']} | "
                     f"{any_run['tiles']} | {cell(tw)} | {ratio} | {cell(wh)} | "
                     f"{tw['wall_s'] if tw and tw['status'] == 'ok' else '-'} | "
                     f"{wh['wall_s'] if wh and wh['status'] == 'ok' else '-'} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """The two tables, with the command and machine they came from."""
    return (f"# {MODEL}: peak memory, whole image vs tilewave\n\n"
            f"`{result['command']}` on {result['machine_line']}; whole-image runs capped at "
            f"{result['memory_cap_gib']:g} GiB. Plot: `diffusion_memory.png`.\n\n"
            f"{result['table_size']}\n\n{result['table_strip']}\n")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cap = result["memory_cap_gib"] * 1024
    style = {"tilewave": ("tab:blue", "o", "-"), "whole": ("tab:red", "s", "--")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    panels = (("size", "output megapixels (2**20 pixels)", lambda r: r["output_mp"]),
              ("strip", f"strip width, input pixels ({STRIP_HEIGHT} high)", lambda r: r["input_width"]))
    for ax, (kind, xlabel, x_of) in zip(axes, panels):
        rows = [r for r in result["runs"] if r["sweep"] == kind]
        for method, (colour, marker, line) in style.items():
            ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
            if ok:
                ax.plot([x_of(r) for r in ok], [r["peak_pss_bytes"] / MIB for r in ok], color=colour,
                        marker=marker, linestyle=line, label=f"{method}" if method == "tilewave"
                        else "whole image at once")
            failed = [r for r in rows if r["method"] == method and r["status"] == "out of memory"]
            if failed:
                ax.plot([x_of(failed[0])], [cap], color=colour, marker="x", markersize=11,
                        linestyle="none", label=f"did not fit in {result['memory_cap_gib']:g} GiB")
        ax.axhline(cap, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("peak memory, summed PSS (MiB)")
    fig.suptitle(f"{MODEL}, 4 sampler steps: peak memory, whole image vs tilewave (tiles of {TILE})",
                 fontsize=11)
    fig.text(0.5, 0.005, f"{result['command']}  |  {result['machine_line']}", ha="center",
             fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=list(SIZES_MP), metavar="MP")
    ap.add_argument("--widths", type=int, nargs="+", default=list(STRIP_WIDTHS), metavar="PX")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--memory-cap-gib", type=float, default=default_memory_cap_gib())
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the JSON and the plot")
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    env = bench_env(scratch)
    began = time.perf_counter()
    try:
        sizes = [(f"{mp:g} MP", input_side(mp), input_side(mp)) for mp in args.sizes]
        strips = [(f"{w} px", STRIP_HEIGHT, w) for w in args.widths]
        runs = sweep("size", sizes, args, workdir, scratch, env)
        runs += sweep("strip", strips, args, workdir, scratch, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    machine = machine_info()
    result = {
        "benchmark": "diffusion_memory",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", "benchmarks/diffusion_memory.py", *(argv or sys.argv[1:])]),
        "model": MODEL, "tile": TILE, "workers": args.workers,
        "memory_cap_gib": args.memory_cap_gib,
        "method": "peak over samples every ~0.1 s of the summed PSS of the command's process tree",
        "machine": machine, "machine_line": machine_line(machine),
        "total_seconds": round(time.perf_counter() - began, 1),
        "runs": runs,
    }
    result["table_size"] = table(runs, "size", "output")
    result["table_strip"] = table(runs, "strip", "strip width")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "diffusion_memory.md").write_text(markdown(result))
    plot(result, args.out / "diffusion_memory.png")
    print(result["table_size"], "\n", result["table_strip"], sep="\n")
    _say(f"total {result['total_seconds']:.0f} s; wrote {args.out}/diffusion_memory.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
