"""UniBA transformer: speed per tile, context size per tile, and peak memory of a whole
``tilewave upscale`` job on a narrow and a wide strip.

    python benchmarks/uniba.py                      # writes docs/benchmarks/uniba.json
    python benchmarks/uniba.py --model uniba-diff-x2 --steps 1 2 4 --strip-widths
                                                    # per step; docs/benchmarks/uniba_diff.json

Speed is one tile's ``forward_tile`` in this process with one torch thread (what a Ray
worker with ``num_cpus=1`` gets), the median of several runs on crops of a real photo.
Peak memory is the summed PSS of the ``tilewave`` process and every Ray process it starts
(sampled by ``benchmarks/measure.py``'s sampler), for inputs of the same height whose
widths differ eightfold: contexts that wait for the next row of tiles live in files, so
the peak should not follow the width.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from measure import measure_command  # noqa: E402


def photo_strip(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 strip tiled from scikit-image's astronaut photo."""
    from skimage import data

    a = data.astronaut()
    reps = (-(-height // a.shape[0]), -(-width // a.shape[1]), 1)
    return np.ascontiguousarray(np.tile(a, reps)[:height, :width])


def tile_speed(tiles: list[int], repeats: int, model_name: str = "uniba-x2",
               steps: int | None = None) -> list[dict]:
    import torch

    from tilewave.models import load_model
    from tilewave.models.base import SamplerSettings, TileRequest
    from tilewave.models.uniba.arch import context_bytes

    torch.set_num_threads(1)
    model = load_model(model_name, 2, SamplerSettings(steps=steps) if steps else None)
    m = model.descriptor.halo
    strip = photo_strip(512, 512)
    rows = []
    for t in tiles:
        window = torch.from_numpy(strip[: t + 2 * m, : t + 2 * m].transpose(2, 0, 1).copy()).float()[None] / 255
        core, read = (m, m + t, m, m + t), (0, t + 2 * m, 0, t + 2 * m)
        request = TileRequest(row=1, col=1, core=core, window=read, image_size=(512, 512),
                              contexts={})
        times, result = [], None
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                result = model.forward_tile(window, request)
                times.append(time.perf_counter() - start)
        assert result is not None
        ctx_bytes = context_bytes(result.contexts)
        ms = 1000 * statistics.median(times)
        rows.append({"tile": t, "ms_per_tile": round(ms, 1),
                     "ms_per_megapixel_out": round(ms / ((2 * t) ** 2 / 1e6), 1),
                     "context_bytes_per_tile": ctx_bytes,
                     **({"steps": steps, "ms_per_tile_per_step": round(ms / steps, 1),
                         "context_bytes_per_tile_per_step": ctx_bytes // steps} if steps else {})})
    return rows


def strip_memory(height: int, widths: list[int], tile: int, workdir: Path,
                 model: str = "uniba-x2") -> list[dict]:
    import imagecodecs

    rows = []
    for width in widths:
        src = workdir / f"strip_{height}x{width}.png"
        src.write_bytes(imagecodecs.png_encode(photo_strip(height, width)))
        out = workdir / f"strip_{width}.zarr"
        cmd = [sys.executable, "-m", "tilewave.cli", "upscale", str(src), str(out), "--model",
               model, "--tile", str(tile), "--quiet", "--json", "--overwrite"]
        env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(workdir / "ray"))
        m = measure_command(cmd, env=env, interval=0.2)
        rows.append({"input": f"{width} x {height}", "tiles": m.report["tiles"],
                     "wall_s": round(m.wall_s, 1),
                     "peak_pss_mib": round(m.peak_pss_bytes / 2**20),
                     "peak_by_process_mib": {k: round(v / 2**20) for k, v in
                                             list(m.pss_at_peak_by_process.items())[:6]}})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="uniba-x2", choices=["uniba-x2", "uniba-diff-x2"])
    ap.add_argument("--steps", type=int, nargs="+", help="sampler steps to time (uniba-diff-x2)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strip-height", type=int, default=128)
    ap.add_argument("--strip-widths", type=int, nargs="*", default=[1024, 8192],
                    help="widths of the strips whose job memory is measured (none: skip)")
    ap.add_argument("--strip-tile", type=int, default=64)
    ap.add_argument("--json-out", help="default: docs/benchmarks/uniba.json, or uniba_diff.json")
    args = ap.parse_args(argv)
    json_out = args.json_out or str(REPO / "docs" / "benchmarks" /
                                    ("uniba_diff.json" if "diff" in args.model else "uniba.json"))
    speed = [row for steps in (args.steps or [None])
             for row in tile_speed(args.tiles, args.repeats, args.model, steps)]
    with tempfile.TemporaryDirectory(dir=REPO / ".bench" if (REPO / ".bench").exists() else None) as tmp:
        memory = strip_memory(args.strip_height, args.strip_widths, args.strip_tile, Path(tmp),
                              args.model)
    result = {"command": "python benchmarks/uniba.py " + " ".join(argv or sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "speed_one_thread": speed, "strip_memory": memory}
    Path(json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(json_out).write_text(json.dumps(result, indent=1))
    if args.steps:
        print("| tile (input px) | steps | ms per tile | ms per tile per step | context bytes per tile "
              "| per step |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in speed:
            print(f"| {r['tile']} | {r['steps']} | {r['ms_per_tile']:,} | {r['ms_per_tile_per_step']:,} | "
                  f"{r['context_bytes_per_tile']:,} | {r['context_bytes_per_tile_per_step']:,} |")
    else:
        print("| tile (input px) | ms per tile | ms per output MP | context bytes per tile |")
        print("|---:|---:|---:|---:|")
        for r in speed:
            print(f"| {r['tile']} | {r['ms_per_tile']} | {r['ms_per_megapixel_out']} | "
                  f"{r['context_bytes_per_tile']:,} |")
    print("\n| input | tiles | wall (s) | peak memory (PSS, MiB) |")
    print("|---|---:|---:|---:|")
    for r in memory:
        print(f"| {r['input']} | {r['tiles']} | {r['wall_s']} | {r['peak_pss_mib']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
