"""Adaptive per-tile compute on the real slide and scene: what it skips, saves and costs.

    python benchmarks/adaptive.py          # writes docs/benchmarks/adaptive.json

For each input (the Aperio SVS and the 16-bit Landsat-8 GeoTIFF in ../shared/data), the
same job runs twice in this process (``executor="local"``, span-x2, tile 256): with the
model on every tile, and with ``adaptive=True``. Reported: the fraction of tiles that took
bicubic, both wall times, and the adaptive output against the full-model output (PSNR
over the dtype's range, largest difference) over the whole image and over the skipped
tiles alone, which are found with the same difficulty test the workers use.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
INPUTS = {"Aperio SVS (uint8 RGB)": "cmu_small_region.svs",
          "Landsat-8 (uint16, nodata corners)": "landsat8_224078_rgb.tif"}


def _psnr(a: np.ndarray, b: np.ndarray, top: float) -> float | None:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return None if mse == 0 else 10 * math.log10(top ** 2 / mse)


def measure(path: Path, model: str, tile: int, work: Path) -> dict:
    import zarr

    import tilewave
    from tilewave.pipeline.difficulty import assess
    from tilewave.storage.inputs import lazy_pixels, open_input

    runs = {}
    for name, adaptive in (("full", False), ("adaptive", True)):
        out = work / f"{path.stem}_{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        report = tilewave.upscale(str(path), str(out), model=model, tile=tile, executor="local",
                                  progress=False, adaptive=adaptive)
        runs[name] = {"seconds": round(time.perf_counter() - t0, 1), "tiles": report.tiles,
                      "tiles_cheap": report.tiles_cheap, "out": out, "scale": report.scale}
    full = zarr.open_array(str(runs["full"]["out"]), path="0")[:]
    fast = zarr.open_array(str(runs["adaptive"]["out"]), path="0")[:]
    image = open_input(str(path))
    pixels = np.asarray(lazy_pixels(image, 512))
    top = float(np.iinfo(full.dtype).max)
    s = runs["full"]["scale"]
    skipped = np.zeros(full.shape[1:], bool)
    for y in range(0, image.height, tile):
        for x in range(0, image.width, tile):
            if assess(pixels[:, y:y + tile, x:x + tile], image.metadata.get("nodata")).easy:
                skipped[y * s:(y + tile) * s, x * s:(x + tile) * s] = True
    diff = np.abs(full.astype(np.int64) - fast.astype(np.int64))
    return {
        "input": path.name, "model": model, "tile": tile,
        "tiles": runs["full"]["tiles"], "tiles_skipped": runs["adaptive"]["tiles_cheap"],
        "fraction_skipped": round(runs["adaptive"]["tiles_cheap"] / runs["full"]["tiles"], 3),
        "seconds_full": runs["full"]["seconds"], "seconds_adaptive": runs["adaptive"]["seconds"],
        "time_saved": round(1 - runs["adaptive"]["seconds"] / runs["full"]["seconds"], 3),
        "psnr_vs_full": _psnr(full, fast, top), "max_diff_vs_full": int(diff.max()),
        "psnr_vs_full_skipped_tiles": _psnr(full[:, skipped], fast[:, skipped], top)
        if skipped.any() else None,
        "max_diff_skipped_tiles": int(diff[:, skipped].max()) if skipped.any() else 0,
        "max_diff_model_tiles": int(diff[:, ~skipped].max()) if (~skipped).any() else 0,
    }


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="span-x2")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "adaptive.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tilewave-adaptive-"))
    results = []
    try:
        for label, name in INPUTS.items():
            if not (SHARED / name).exists():
                print(f"skipping {label}: {SHARED / name} is not here")
                continue
            rec = {"label": label, **measure(SHARED / name, args.model, args.tile, work)}
            results.append(rec)
            print(json.dumps(rec), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"command": "python benchmarks/adaptive.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads, one process",
              "results": results}
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
