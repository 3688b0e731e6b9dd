"""What one small job costs from the command's start to its exit, and where the time goes:
``tilewave upscale IN OUT --model M`` on a 256 x 256 PNG (one tile), each run a fresh
process, with the default executor (``auto``: this process, for so few tiles) and with
``--executor ray`` (a fresh local Ray instance), for bicubic and span-x2.

    python benchmarks/fixed_cost.py                        # docs/benchmarks/fixed_cost.{json,md}
    python benchmarks/fixed_cost.py --before ../old-checkout   # and an older tilewave, side by side

Phases come from the timestamps of the command's own messages, read as they are written:

``start``
    until the first message (Python, imports, checks);
``ray``
    ``starting a local Ray instance`` until ``starting N worker process`` (Ray's start;
    the input's copy runs meanwhile);
``worker + tile``
    from there until the output is reported (the worker's start, its model, the tile);
``in process``
    with no Ray, from the first message until the output is reported;
``exit``
    from the report until the process has ended (stopping Ray, Python's teardown).

Target: at most 4 s for the default executor. Each configuration runs ``--repeats``
times (default 3) in turn with the others; the median is kept (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, machine_info, machine_line  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
MODELS = ("bicubic", "span-x2")
EXECUTORS = ("auto", "ray")


def timed_lines(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, int, list[tuple[float, str]]]:
    """Run ``cmd``; its wall seconds, exit code, and each stderr line (or progress bar
    update) with the second it arrived."""
    started = time.perf_counter()
    # Outside the checkout: `python -m` puts the working folder first on the path, before
    # PYTHONPATH, and "before" would run this checkout.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    assert proc.stderr is not None
    lines: list[tuple[float, str]] = []

    def pump() -> None:
        buf = b""
        while chunk := proc.stderr.read1(4096):  # type: ignore[union-attr]
            now = time.perf_counter() - started
            buf += chunk
            *done, buf = buf.replace(b"\r", b"\n").split(b"\n")
            lines.extend((now, line.decode(errors="replace")) for line in done if line.strip())

    reader = threading.Thread(target=pump)
    reader.start()
    code = proc.wait()
    wall = time.perf_counter() - started
    reader.join()
    return wall, code, lines


def phases(wall: float, lines: list[tuple[float, str]]) -> dict[str, float]:
    """The phases of one run (see the module's docstring), in seconds."""
    def first(text: str) -> float | None:
        return next((t for t, line in lines if text in line), None)

    begun = lines[0][0] if lines else wall
    ray = first("starting a local Ray instance")
    workers = first(" worker process")
    done = first("upscale + pyramid: 100%") or wall
    out: dict[str, float] = {"start": begun}
    if ray is not None and workers is not None:
        out["ray"] = workers - ray
        out["worker + tile"] = done - workers
    else:
        out["in process"] = done - begun
    out["exit"] = wall - done
    return {k: round(v, 2) for k, v in out.items()}


def one_run(pythonpath: str, model: str, executor: str, png: Path, scratch: Path) -> dict[str, Any]:
    out = scratch / "out.zarr"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": pythonpath, "RAY_AUTH_MODE": "disabled"}
    env.setdefault("RAY_TMPDIR", str(scratch / "ray"))
    cmd = [sys.executable, "-m", "tilewave.cli", "upscale", str(png), str(out), "--model", model]
    if executor == "ray":
        cmd += ["--workers", "1"]  # Ray in every version: --executor is new
    wall, code, lines = timed_lines(cmd, env)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}: {lines[-3:]}")
    return {"wall_s": round(wall, 2), "phases": phases(wall, lines)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with the spread of all."""
    ranked = sorted(runs, key=lambda r: r["wall_s"])
    mid = ranked[len(ranked) // 2]
    return {**mid, "walls_s": [r["wall_s"] for r in runs],
            "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 2)}


def markdown(results: list[dict[str, Any]]) -> str:
    names = ["start", "in process", "ray", "worker + tile", "exit"]
    rows = ["| tilewave | model | executor | wall (s, median) | " + " | ".join(names) + " |",
            "|---|---|---|---:|" + "---:|" * len(names)]
    for r in results:
        cells = [f"{r['phases'][n]:.2f}" if n in r["phases"] else "" for n in names]
        rows.append(f"| {r['version']} | {r['model']} | {r['executor']} | {r['median_wall_s']:.2f} | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", type=Path, default=None,
                   help="a checkout of an older tilewave, measured side by side (labelled 'before')")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    import imagecodecs
    from skimage import data

    versions = {"this": str(REPO)}
    if args.before is not None:
        versions = {"before": str(args.before.resolve()), **versions}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tw-fixed-") as tmp:
        scratch = Path(tmp)
        png = scratch / "in.png"
        png.write_bytes(imagecodecs.png_encode(data.astronaut()[:256, :256]))
        configs = [(v, m, e) for v in versions for m in args.models for e in EXECUTORS
                   if not (v == "before" and e == "auto")]  # before: Ray was the only default
        runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {c: [] for c in configs}
        for _ in range(args.repeats):  # interleaved, so that load affects every one alike
            for version, model, executor in configs:
                runs[(version, model, executor)].append(
                    one_run(versions[version], model, executor, png, scratch))
    results = [{"version": v, "model": m, "executor": e if v == "this" else "ray (default)",
                **median_run(runs[(v, m, e)])} for v, m, e in configs]
    info = machine_info()
    doc = {"benchmark": "fixed_cost", "command": "python benchmarks/fixed_cost.py"
           + (" --before OLD" if args.before else ""), "machine": info,
           "machine_line": machine_line(info), "repeats": args.repeats,
           "input": "256 x 256 PNG (scikit-image's astronaut), one tile",
           "results": results, "total_seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fixed_cost.json").write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown(results)
    (args.out / "fixed_cost.md").write_text(
        f"# Fixed cost of one small job\n\n`{doc['command']}` on {doc['machine_line']}; "
        f"{doc['input']}; median of {args.repeats} fresh processes each.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
