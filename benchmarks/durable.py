"""What ``--durable`` and verification cost on the throughput benchmark's job.

``--durable`` (the default) fsyncs every output chunk, and the folders naming it, before
its ledger line. This runs the throughput benchmark's job (scikit-image's astronaut
repeated, tiles of 256, x2; see ``benchmarks/throughput.py``) with and without it,
alternating, in one run:

    tilewave upscale IN OUT --model M --workers 2 --quiet --json [--no-durable]

and compares the tile time (``tile_seconds``: the workers running tiles) as a ratio.

It then times what a resume checks after a run that did not stop cleanly: reading back
every tile and pyramid chunk of a finished output and comparing their CRC-32s
(:func:`tilewave.pipeline.verify.check_recorded`, 4 threads), against the tile time of
the job that wrote them.

    python benchmarks/durable.py                 # bicubic and span-x2, 3 rounds each
    python benchmarks/durable.py --rounds 1 --models bicubic
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, last_json_object, machine_info, machine_line  # noqa: E402
from memory import TILE, bench_env, ensure_input  # noqa: E402

RESULTS = REPO / "docs" / "benchmarks" / "durable.json"
WORKDIR = REPO / ".bench" / "memory"  # shares the cached inputs


def run_job(src: Path, out: Path, model: str, durable: bool, env: dict[str, str]) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tilewave.cli", "upscale", str(src), str(out), "--model", model,
           "--workers", "2", "--quiet", "--json", *([] if durable else ["--no-durable"])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return last_json_object(done.stdout)


def time_verify(out: Path, tile: int) -> tuple[float, int]:
    """Seconds to read back and checksum every tile and chunk of the finished ``out``."""
    import zarr

    from tilewave.pipeline.grid import TileGrid
    from tilewave.pipeline.pyramid_plan import PyramidPlan
    from tilewave.pipeline.verify import check_recorded
    from tilewave.storage.arrays import checksum

    group = zarr.open_group(str(out), mode="r")
    _, h, w = group["0"].shape
    grid = TileGrid(h // 2, w // 2, tile, 2)
    pyramid = PyramidPlan.for_output((h, w), (tile * 2, tile * 2))
    # What the ledger would list: every tile and chunk, with the checksum of its pixels.
    recorded: dict[tuple[int, ...], int | None] = {}
    for t in grid:
        y0, y1, x0, x1 = grid.out_window(t.core)
        recorded[t.index] = checksum(group["0"][:, y0:y1, x0:x1])
    for k, r, c in pyramid.all_chunks():
        y0, y1, x0, x1 = pyramid.window(k, r, c)
        recorded[(k, r, c)] = checksum(group[str(k)][:, y0:y1, x0:x1])
    start = time.perf_counter()
    verdict = check_recorded(str(out), grid, pyramid, recorded, dependent=False)
    seconds = time.perf_counter() - start
    assert verdict.clean, verdict.describe()
    return seconds, verdict.checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["bicubic", "span-x2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=2048, help="input side (output: twice it)")
    args = parser.parse_args()
    src = ensure_input(WORKDIR, args.side)
    scratch = Path(tempfile.mkdtemp(prefix="durable-", dir=WORKDIR))
    env = bench_env(scratch)
    record: dict[str, Any] = {
        "command": "python benchmarks/durable.py " + " ".join(sys.argv[1:]),
        "machine": machine_line(machine_info()),
        "input": f"{args.side} x {args.side} uint8 RGB, tiles of {TILE}, x2",
        "models": {},
    }
    try:
        for model in args.models:
            times: dict[str, list[float]] = {"durable": [], "plain": []}
            for _ in range(args.rounds):
                for durable in (True, False):
                    report = run_job(src, scratch / "out.zarr", model, durable, env)
                    times["durable" if durable else "plain"].append(report["tile_seconds"])
                    print(f"{model} {'durable' if durable else 'plain'}: "
                          f"{report['tile_seconds']:.2f} s of tiles", flush=True)
            verify_s, checked = time_verify(scratch / "out.zarr", TILE)
            ratio = median(d / p for d, p in zip(times["durable"], times["plain"]))
            record["models"][model] = {
                "tile_seconds": times, "durable_over_plain_median": round(ratio, 3),
                "verify_seconds": round(verify_s, 2), "verify_entries": checked,
                "verify_over_tiles": round(verify_s / median(times["plain"]), 3),
            }
            print(f"{model}: durable / plain tile time {ratio:.3f} (median of "
                  f"{args.rounds}); verifying {checked} tiles and chunks took {verify_s:.2f} s, "
                  f"{verify_s / median(times['plain']):.1%} of the tile time", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
