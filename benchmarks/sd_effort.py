"""What a tile of the Stable Diffusion x4 upscaler costs, and what Diff2X-style effort
control saves: ``--adaptive`` (glass and flat tiles take bicubic) and ``--early-stop``
(a tile stops once its estimate settles), each against the full sampler on the same
input and seed.

Jobs run through :func:`tilewave.upscale` in this process (``executor="local"``, one
tile at a time, one torch thread), so seconds are per tile on one core. Without
``--model`` a tiny random upscaler is built (``tools/tiny_sd_x4.py``): its
seconds say what tilewave's own per-tile work costs around a model, not what the real
UNet costs, and its "quality cost" is the change in output, not a quality measure.

    python benchmarks/sd_effort.py [--model FOLDER] [--steps 12] [--tile 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import zarr
from sd_seams import TINY, command, machine, sample_image, save, upscaler_folder

import tilewave

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def slide_like(size: int) -> np.ndarray:
    """A photo in the top-left quarter of a field of 'glass' (flat 238 with sensor-like
    noise of 1.5 DN), as a slide's tissue sits in its glass."""
    rng = np.random.default_rng(0)
    field = np.clip(238 + rng.normal(0, 1.5, (3, size, size)), 0, 255).astype(np.uint8)
    half = size // 2
    field[:, :half, :half] = sample_image(half)
    return field


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run(src: str, out: str, **options) -> tuple[tilewave.Report, np.ndarray]:
    report = tilewave.upscale(src, out, executor="local", progress=False, overwrite=True, **options)
    return report, zarr.open_array(f"{out}/0")[:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="upscaler folder (default: a tiny random one, built here)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--tile", type=int, default=32)
    p.add_argument("--image", type=int, default=128, help="input side in pixels")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    args = p.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = upscaler_folder(args.model, scratch)
        src = os.path.join(scratch, "in.zarr")
        pixels = slide_like(args.image)
        arr = zarr.create_array(src, shape=pixels.shape, chunks=(3, args.tile, args.tile),
                                dtype=pixels.dtype, dimension_names=("c", "y", "x"))
        arr[:] = pixels
        common = {"model": folder, "tile": args.tile, "steps": args.steps, "seed": 0}
        out = os.path.join(scratch, "out.zarr")
        full_report, full = run(src, out, **common)
        tiles = full_report.tiles

        def row(report: tilewave.Report, output: np.ndarray) -> dict:
            return {"tiles": tiles, "tiles_cheap": report.tiles_cheap,
                    "steps_run": report.steps_run, "steps_total": report.steps_total,
                    "steps_saved": 1 - report.steps_run / report.steps_total,
                    "tile_seconds": report.tile_seconds,
                    "seconds_per_tile": report.tile_seconds / tiles,
                    "psnr_vs_full": _psnr(output, full),
                    "mean_abs_change_dn": float(np.abs(output.astype(np.int16) - full).mean())}

        rows["full sampler"] = row(full_report, full)
        rows["--adaptive"] = row(*run(src, out, adaptive=True, **common))
        for tol in args.thresholds:
            rows[f"--early-stop {tol:g}"] = row(*run(src, out, early_stop=tol, **common))
    per_step = rows["full sampler"]["seconds_per_tile"] / args.steps
    save("sd_effort.json", {
        "command": command("sd_effort.py", args), "model": args.model or TINY,
        "machine": machine("one tile at a time on 1 thread"),
        "image": f"{args.image} x {args.image} RGB: a photo in one quarter, flat noisy 'glass' "
                 "elsewhere", "tile": args.tile, "steps": args.steps,
        "seconds_per_tile_step": per_step, "runs": rows})
    print(f"{'run':22} {'cheap':>5} {'steps run':>12} {'saved':>6} {'s/tile':>7} {'PSNR vs full':>12}")
    for name, r in rows.items():
        print(f"{name:22} {r['tiles_cheap']:5d} {r['steps_run']:5d} / {r['steps_total']:4d} "
              f"{100 * r['steps_saved']:5.0f}% {r['seconds_per_tile']:7.2f} {r['psnr_vs_full']:12.1f}")


if __name__ == "__main__":
    main()
