"""Plots and target checks from the JSON that ``memory.py`` and ``throughput.py`` wrote.

    python benchmarks/report.py      # reads docs/benchmarks/{memory,throughput}.json,
                                     # writes memory.png, throughput.png and summary.md there

``summary.md`` holds the tables the README shows: peak memory per model and size, the
throughput table, and each target of the benchmark with the value measured and whether
it was met. Every plot names the command and the machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks"
MIB = 2**20

METHOD_STYLE = {  # colour, marker, line style
    "tilewave": ("tab:blue", "o", "-"),
    "naive": ("tab:orange", "s", "--"),
    "whole": ("tab:red", "^", ":"),
}
MODEL_SHADE = {"bicubic": 1.0, "span-x2": 0.75, "uniba-x2": 0.5}


def _runs(memory: dict[str, Any], model: str, method: str) -> list[dict[str, Any]]:
    return sorted((r for r in memory["runs"] if r["model"] == model and r["method"] == method),
                  key=lambda r: r["output_mp"])


def _load(name: str) -> dict[str, Any] | None:
    """Another benchmark's JSON under docs/benchmarks, if it was run."""
    path = DOCS / name
    return json.loads(path.read_text()) if path.exists() else None


def _peak(memory: dict[str, Any], model: str, method: str, mp: float) -> int | None:
    for r in memory["runs"]:
        if (r["model"], r["method"], r["output_mp"], r["status"]) == (model, method, mp, "ok"):
            return r["peak_pss_bytes"]
    return None


def _first_failure(memory: dict[str, Any], model: str, method: str) -> float | None:
    failed = [r["output_mp"] for r in _runs(memory, model, method) if r["status"] == "out of memory"]
    return min(failed) if failed else None


def plot_memory(memory: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in memory["runs"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.6), sharey=True,
                             squeeze=False)
    cap = memory.get("memory_cap_gib")
    for ax, model in zip(axes[0], models):
        for method, (colour, marker, style) in METHOD_STYLE.items():
            runs = [r for r in _runs(memory, model, method) if r["status"] == "ok"]
            if not runs:
                continue
            xs = [r["output_mp"] * 2**20 for r in runs]
            ys = [r["peak_pss_bytes"] / MIB for r in runs]
            ax.plot(xs, ys, color=colour, marker=marker, linestyle=style, label=method)
            failed = _first_failure(memory, model, method)
            if failed is not None and cap:
                ax.plot([failed * 2**20], [cap * 1024], color=colour, marker="x", markersize=11,
                        linestyle="none", label=f"{method}: did not fit in {cap:g} GiB")
        if cap:
            ax.axhline(cap * 1024, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("output pixels")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("peak memory, summed PSS (MiB)")
    fig.suptitle("Peak memory of the whole job vs. output size (x2, tiles of 256)", fontsize=11)
    fig.text(0.5, 0.005, f"{memory['command']}  |  {memory['machine_line']}",
             ha="center", fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(speed: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(s["model"] for s in speed["speeds"]))
    methods = list(dict.fromkeys(s["method"] for s in speed["speeds"]))
    colours = {"bare": "tab:grey", "tilewave-1": "tab:cyan", "tilewave-2": "tab:blue",
               "dask": "tab:green"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        xs, mps, mem = [], [], []
        for j, model in enumerate(models):
            s = next((s for s in speed["speeds"] if s["model"] == model and s["method"] == method), None)
            if s is None:
                continue
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            mps.append(s["mp_per_s"])
            mem.append(s["peak_pss_bytes"] / MIB)
        left.bar(xs, mps, width, label=method, color=colours.get(method))
        right.bar(xs, mem, width, label=method, color=colours.get(method))
    labels = []
    for model in models:
        s = next(s for s in speed["speeds"] if s["model"] == model)
        labels.append(f"{model}\n{s['input_side']}² in, {s['tiles']} tiles")
    for ax, title in ((left, "output megapixels per second (whole command)"),
                      (right, "peak memory, summed PSS (MiB)")):
        ax.set_xticks(range(len(models)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    left.set_yscale("log")
    left.legend(fontsize=8)
    fig.text(0.5, 0.005, f"{speed['command']}  |  {speed['machine_line']}",
             ha="center", fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(memory: dict[str, Any] | None, speed: dict[str, Any] | None) -> list[dict[str, Any]]:  # noqa: C901
    """Each target of the benchmark: what was measured and whether it was met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "goal": target,
                     "measured": None if value is None else round(value, 2), "met": met,
                     "note": note})

    if memory:
        top = max((r["output_mp"] for r in memory["runs"]
                   if r["model"] == "bicubic" and r["method"] == "tilewave" and r["status"] == "ok"),
                  default=None)
        base, big = (_peak(memory, "bicubic", "tilewave", 16),
                     _peak(memory, "bicubic", "tilewave", top) if top else None)
        if base and big and top and top > 16:
            add(f"bicubic: peak at {top:g} MP / peak at 16 MP", "<= 1.15", big / base,
                big / base <= 1.15)
        tw = _peak(memory, "uniba-x2", "tilewave", 16)
        whole = _peak(memory, "uniba-x2", "whole", 16)
        failed = _first_failure(memory, "uniba-x2", "whole")
        if tw and whole:
            add("uniba-x2 at 4096 x 4096: whole-image / tilewave memory", ">= 10", whole / tw,
                whole / tw >= 10)
        elif tw and failed is not None and failed <= 16:
            cap = memory["memory_cap_gib"] * 2**30
            add("uniba-x2 at 4096 x 4096: whole-image / tilewave memory", ">= 10", cap / tw,
                cap / tw >= 10, f"whole-image did not fit in the {memory['memory_cap_gib']:g} GiB "
                f"cap at {failed:g} MP: the ratio is more than this")
    if speed:
        for model, d in speed["derived"].items():
            if "overhead_wall" in d:
                add(f"{model}: tilewave (1 worker) / bare loop, wall", "<= 1.10", d["overhead_wall"],
                    d["overhead_wall"] <= 1.10,
                    f"steady state (tiles only) {d['overhead_steady']:.2f}; fixed cost "
                    f"{d['fixed_cost_s']:.0f} s")
            if "speedup_wall" in d:
                add(f"{model}: 2 workers / 1 worker speed-up, wall", ">= 1.7", d["speedup_wall"],
                    d["speedup_wall"] >= 1.7, f"steady state {d['speedup_steady']:.2f}")
            if "dask_time_ratio" in d:
                pss_goal = {"span-x2": 1.3, "bicubic": 2.0}.get(model)
                add(f"{model}: tilewave (2 at once) wall / dask wall, both with the pyramid",
                    "<= 1.0", 1 / d["dask_time_ratio"], 1 / d["dask_time_ratio"] <= 1.0)
                if pss_goal is not None:
                    add(f"{model}: tilewave (2 at once) / dask peak memory", f"<= {pss_goal:g}",
                        d["memory_vs_dask"], d["memory_vs_dask"] <= pss_goal)
        fixed = speed.get("fixed_cost")
        if fixed:
            add("fixed cost: a 4-tile job's wall time minus its tile time (s)", "<= 4",
                fixed["fixed_s"], fixed["fixed_s"] <= 4,
                f"wall {fixed['wall_s']:.1f} s, tiles {fixed['tile_s']:.1f} s")
    if memory:
        for r in memory["runs"]:
            if (r["model"], r["method"], r["status"]) == ("bicubic", "tilewave", "ok") \
                    and r["output_mp"] >= 1024 and r.get("report"):
                tail, wall = r["report"].get("pyramid_seconds", 0.0), r["report"]["seconds"]
                add(f"bicubic {r['output_mp']:g} MP: pyramid after the last tile / wall", "<= 0.10",
                    tail / wall, tail / wall <= 0.10,
                    f"{tail:.1f} s of {wall:.0f} s: pyramid chunks run among the tiles, this is "
                    "what is left after the last one")
    ingest = _load("ingest.json")
    if ingest:
        for name, t in ingest["targets"].items():
            add(f"ingest {name}: tilewave rate / tifffile whole-file decode rate (worst size)",
                ">= 0.5", min(t["ratios"]), t["rate_met"])
            add(f"ingest {name}: peak at full height / half height", "<= 1.15",
                t["height_growth"], t["memory_met"])
    adaptive = (_load("adaptive.json") or {}).get("whole_command")
    if adaptive:
        add("adaptive on a >= 80 % glass slide: full / --adaptive, whole command", ">= 2",
            adaptive.get("ratio"), adaptive.get("met"),
            f"{adaptive.get('glass_fraction', 0):.0%} glass, {adaptive.get('tiles')} tiles")
    return rows


def targets_markdown(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| target | goal | measured | met | note |", "|---|---:|---:|:---:|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        out.append(f"| {r['target']} | {r['goal']} | {r['measured']} | {met} | {r['note']} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=Path, default=DOCS,
                   help="folder of the JSON and where plots go (default: docs/benchmarks)")
    args = p.parse_args(argv)
    memory_path, speed_path = args.docs / "memory.json", args.docs / "throughput.json"
    memory = json.loads(memory_path.read_text()) if memory_path.exists() else None
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else None
    if memory is None and speed is None:
        print(f"error: neither {memory_path} nor {speed_path} exists; run benchmarks/run.py",
              file=sys.stderr)
        return 2
    parts = []
    if memory is not None:
        plot_memory(memory, args.docs / "memory.png")
        parts += ["## Peak memory", "", f"`{memory['command']}` on {memory['machine_line']}", "",
                  memory["table_markdown"], ""]
    if speed is not None:
        plot_throughput(speed, args.docs / "throughput.png")
        parts += ["## Throughput", "", f"`{speed['command']}` on {speed['machine_line']}", "",
                  speed["table_markdown"], ""]
    rows = targets(memory, speed)
    parts += ["## Targets", "", targets_markdown(rows), ""]
    (args.docs / "summary.md").write_text("\n".join(parts))
    (args.docs / "targets.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
