"""Measure the receptive field of the pretrained models and the halo that makes tiling exact.

    python tools/measure_halo.py                  # all pretrained models
    python tools/measure_halo.py span-x2 --json docs/benchmarks/halo.json

For each model: the exact receptive field from a unit impulse (where affordable), the
effective reach of an impulse at half a uint8 step, and the halo-tiling error for a sweep
of halos on real images from scikit-image (the astronaut, coffee and chelsea photos, an
immunohistochemistry slide crop and the gravel texture, the busiest of them).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time

import numpy as np
import torch

from tilewave.models import load_model
from tilewave.models.receptive_field import impulse_reach, smallest_sufficient_halo, tiling_error

HALF_STEP = 0.5 / 255
#: Models whose exact receptive field is small enough to measure with one impulse.
EXACT_SIZE = {"span-x2": 64, "span-x4": 64}


def _images(size: int) -> list[np.ndarray]:
    from skimage import data

    crops = []
    for name, top, left in (("astronaut", 20, 150), ("coffee", 80, 150), ("chelsea", 30, 140),
                            ("immunohistochemistry", 200, 200), ("gravel", 100, 100)):
        img = getattr(data, name)()[top:top + size, left:left + size]
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        crops.append(img.transpose(2, 0, 1).astype(np.float32) / 255)
    return crops


def measure(name: str, halos: list[int], tile: int, margin: int) -> dict:
    model = load_model(name)
    scale = model.descriptor.scale
    t0 = time.time()
    record: dict = {"model": name, "scale": scale, "tile": tile, "margin": margin}
    if name in EXACT_SIZE:
        # In float64, so that rounding noise cannot pass for reach.
        exact = copy.deepcopy(model.net).double()
        record["receptive_field"] = impulse_reach(exact, scale, size=EXACT_SIZE[name],
                                                  dtype=torch.float64)
    # The image reaches `margin` pixels past the largest window, so that even the largest
    # halo is compared with inference that sees more than the window does.
    size = tile + 2 * (max(halos) + margin)
    # What users get: float32, outputs clamped to [0, 1].
    forward = model.forward_image
    record["impulse_reach_half_step"] = impulse_reach(forward, scale, size=size, tolerance=HALF_STEP)
    errors = tiling_error(forward, scale, _images(size), halos, tile=tile)
    record["tiling_error"] = {e.halo: e.max_abs * 255 for e in errors}
    record["smallest_sufficient_halo"] = smallest_sufficient_halo(errors)
    record["shipped_halo"] = model.descriptor.halo
    record["seconds"] = round(time.time() - t0, 1)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["span-x2", "span-x4", "realesrgan-x4plus"])
    ap.add_argument("--halos", default="0,4,8,12,16,20,24,28,32,40,48")
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--margin", type=int, default=32,
                    help="image pixels beyond the largest window (default: 32)")
    ap.add_argument("--json", help="also write the records to this file")
    args = ap.parse_args()
    halos = [int(h) for h in args.halos.split(",")]
    records = []
    for name in args.models:
        rec = measure(name, halos, args.tile, args.margin)
        records.append(rec)
        errs = ", ".join(f"{h}:{e:.3f}" for h, e in rec["tiling_error"].items())
        print(f"{name}: receptive field {rec.get('receptive_field', 'n/a')}, impulse reach at "
              f"half a step {rec['impulse_reach_half_step']}, smallest exact halo "
              f"{rec['smallest_sufficient_halo']} (shipped {rec['shipped_halo']}), {rec['seconds']} s")
        print(f"  tiling error in uint8 steps by halo: {errs}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python tools/measure_halo.py " + " ".join(sys.argv[1:]),
                       "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                                  f"torch {torch.__version__}",
                       "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
