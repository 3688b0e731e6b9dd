"""What ``tilewave tune`` gains on a part of the scan it never saw.

    python benchmarks/tune.py [--minutes 8] [--model span-x2-scan]
                              # writes docs/benchmarks/tune.json and docs/tune.md

For the Aperio slide, the H&E patch and the Landsat-8 scene in ../shared/data: a region
of each is excluded from tuning (``tilewave.tune(..., exclude=...)``: never read); the
model is tuned on the rest for ``--minutes``; then the region's pixels are the ground
truth, and its input is made the way tune makes its own (downscaled x2, box and bicubic,
and for the slide re-compressed at its own JPEG quality 30 in RGB), and the base and
tuned models' PSNR on it are compared (dB, the dtype's range).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
#: (label, file, excluded region (y0, y1, x0, x1)): the slide's lies in the rows no
#: scan model was trained on.
IMAGES = [("Aperio slide (JPEG q30)", "cmu_small_region.svs", (1936, 2960, 592, 1616)),
          ("H&E patch (PNG)", "he_target_image.png", (0, 448, 0, 448)),
          ("Landsat-8 (uint16)", "landsat8_224078_rgb.tif", (700, 1212, 700, 1212))]


def region_pixels(path: Path, region: tuple[int, int, int, int]) -> np.ndarray:
    from tilewave.storage.inputs import lazy_pixels, open_input

    y0, y1, x0, x1 = region
    return np.asarray(lazy_pixels(open_input(str(path)), 512)[:, y0:y1, x0:x1].compute())


def measure(model: str, path: Path, hr: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio

    from tilewave.models import load_model
    from tilewave.pipeline.upscale_window import from_unit, reference_upscale, to_unit
    from tilewave.storage.inputs import open_input
    from tilewave.training.tune import OwnDegradation

    own = OwnDegradation.of(open_input(str(path)))
    net = load_model(model)
    if net.descriptor.conditions:  # told the scan's quality, as a job would be
        net = net.with_condition({"jpeg_quality": own.quality})
    top = float(np.iinfo(hr.dtype).max)
    out = {}
    for kind in ("bicubic", "box"):
        made = own.make(to_unit(hr)[0].numpy(), random.Random(0), kind)
        lr = from_unit(made.lr, hr.dtype)
        out[kind] = float(peak_signal_noise_ratio(hr, reference_upscale(net, lr), data_range=top))
    out["mean"] = float(np.mean([out["bicubic"], out["box"]]))
    return out


def main() -> None:
    import tilewave

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--model", default="span-x2-scan")
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "tune.json"))
    ap.add_argument("--markdown", default=str(REPO / "docs" / "tune.md"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, region in IMAGES:
            path = SHARED / name
            if not path.exists():
                print(f"skipped {label}: {path} is missing", flush=True)
                continue
            hr = region_pixels(path, region)
            out = Path(tmp) / f"{path.stem}.safetensors"
            started = time.time()
            record = tilewave.tune(str(path), out, model=args.model, minutes=args.minutes,
                                   executor="local", progress=False, exclude=region)
            base, tuned = measure(args.model, path, hr), measure(str(out), path, hr)
            rows.append({"image": label, "region": region, "base": base, "tuned": tuned,
                         "gain_db": tuned["mean"] - base["mean"], "steps": record["steps"],
                         "seconds": round(time.time() - started, 1),
                         "held_out_strip_gain_db": record["held_out_gain_db"],
                         "degradation": record["degradation"]})
            print(f"{label}: base {base['mean']:.2f} dB, tuned {tuned['mean']:.2f} dB "
                  f"({rows[-1]['gain_db']:+.2f}), {record['steps']} steps", flush=True)
    result = {"command": "python benchmarks/tune.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "model": args.model, "minutes": args.minutes, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=1))
    lines = ["# `tilewave tune`: gain on a region it never read", "",
             f"Command: `{result['command']}`. Machine: {result['machine']}. Base model "
             f"`{args.model}`, {args.minutes:g} minutes of tuning per image, in this process.", "",
             "Each image's region was excluded from tuning; its input was made as tune makes its "
             "own (x2 box and bicubic, averaged; the slide re-compressed at its JPEG quality). "
             "PSNR against the region's own pixels:", "",
             "| image | region (y0, y1, x0, x1) | input made by | base (dB) | tuned (dB) | gain | steps |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['image']} | {tuple(r['region'])} | {', '.join(r['degradation'])} | "
                     f"{r['base']['mean']:.2f} | {r['tuned']['mean']:.2f} | {r['gain_db']:+.2f} dB | "
                     f"{r['steps']} |")
    Path(args.markdown).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.json} and {args.markdown}")


if __name__ == "__main__":
    main()
