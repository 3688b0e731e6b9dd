"""Quality of ``uniba-diff-x2`` beside bicubic, ``uniba-x2`` and ``span-x2``: fidelity
(PSNR, SSIM) and detail, at several step counts and noise levels.

    python benchmarks/diffusion_quality.py    # docs/benchmarks/diffusion_quality.json,
                                              # docs/uniba_diff_crops.png

Protocol: the four validation photos of ``docs/uniba.md``, never trained on (scikit-image's
astronaut, coffee, chelsea and immunohistochemistry, whole, cut to even sides), are
downscaled x2 with antialiased bicubic interpolation to uint8 and upscaled back by each
model through tilewave's own pixel conversion (``reference_upscale``: the whole-image
forward, which tiled runs equal). PSNR and SSIM come from scikit-image on uint8 over all
channels.

Detail: the energy of the output's high frequencies over the ground truth's, where the
high frequencies are the image minus its Gaussian blur (sigma 1 pixel), 4-pixel border
cropped. 1.0 matches the ground truth; below 1 is smoother than it (bicubic is far
below), above 1 has more fine structure than it (true detail or invented, which PSNR
then tells apart).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from quality import degrade, metrics  # noqa: E402

VALIDATION = ("astronaut", "coffee", "chelsea", "immunohistochemistry")
#: (label, model, steps, noise) of every row; seed 0 throughout.
CONFIGS = [
    ("bicubic", "bicubic", None, None),
    ("uniba-x2", "uniba-x2", None, None),
    ("span-x2", "span-x2", None, None),
    ("uniba-diff-x2, 1 step, noise 0", "uniba-diff-x2", 1, 0.0),
    ("uniba-diff-x2, 2 steps, noise 0", "uniba-diff-x2", 2, 0.0),
    ("uniba-diff-x2, 4 steps, noise 0 (default)", "uniba-diff-x2", 4, 0.0),
    ("uniba-diff-x2, 8 steps, noise 0", "uniba-diff-x2", 8, 0.0),
    ("uniba-diff-x2, 4 steps, noise 0.05", "uniba-diff-x2", 4, 0.05),
    ("uniba-diff-x2, 4 steps, noise 0.1", "uniba-diff-x2", 4, 0.1),
]
#: (image, top, left) of each 128 x 128 ground-truth crop in the figure.
CROPS = [("chelsea", 60, 170), ("astronaut", 60, 180)]
FIGURE_COLUMNS = ["bicubic", "uniba-x2", "uniba-diff-x2, 4 steps, noise 0 (default)",
                  "uniba-diff-x2, 4 steps, noise 0.1"]


def detail_ratio(hr: np.ndarray, sr: np.ndarray, border: int = 4) -> float:
    """High-frequency energy of ``sr`` over that of ``hr`` (``(c, h, w)`` arrays)."""
    from scipy.ndimage import gaussian_filter

    def energy(x: np.ndarray) -> float:
        x = x.astype(np.float64)
        hf = x - gaussian_filter(x, sigma=(0, 1, 1))
        return float((hf[:, border:-border, border:-border] ** 2).mean())

    return energy(sr) / energy(hr)


def ground_truth(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()[..., :3]
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    return np.ascontiguousarray(img[:h, :w].transpose(2, 0, 1))


def build(model: str, steps: int | None, noise: float | None):
    from tilewave.models import load_model
    from tilewave.models.base import SamplerSettings

    return load_model(model, 2, SamplerSettings(steps, noise, 0) if steps else None)


def figure(outputs: dict[str, dict[str, np.ndarray]], truths: dict[str, np.ndarray], path: Path) -> None:
    from PIL import Image, ImageDraw

    size, zoom, label_h, pad = 128, 2, 18, 4
    side = size * zoom
    columns = [*FIGURE_COLUMNS, "ground truth"]
    short = {"uniba-diff-x2, 4 steps, noise 0 (default)": "uniba-diff-x2, noise 0",
             "uniba-diff-x2, 4 steps, noise 0.1": "uniba-diff-x2, noise 0.1"}
    canvas = Image.new("RGB", (len(columns) * (side + pad) + pad, len(CROPS) * (side + label_h + pad) + pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, top, left) in enumerate(CROPS):
        y = pad + r * (side + label_h + pad)
        for c, label in enumerate(columns):
            pixels = truths[name] if label == "ground truth" else outputs[label][name]
            crop = np.ascontiguousarray(pixels[:, top:top + size, left:left + size].transpose(1, 2, 0))
            x = pad + c * (side + pad)
            canvas.paste(Image.fromarray(crop).resize((side, side), Image.NEAREST), (x, y + label_h))
            draw.text((x + 2, y + 3), short.get(label, label), fill="black")
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    from tilewave.pipeline.upscale_window import reference_upscale

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", type=Path, default=REPO / "docs" / "benchmarks" / "diffusion_quality.json")
    ap.add_argument("--figure", type=Path, default=REPO / "docs" / "uniba_diff_crops.png")
    args = ap.parse_args(argv)
    truths = {name: ground_truth(name) for name in VALIDATION}
    lows = {name: degrade(hr, 2) for name, hr in truths.items()}
    rows, outputs = [], {}
    for label, model_name, steps, noise in CONFIGS:
        model = build(model_name, steps, noise)
        per_image, start = {}, time.perf_counter()
        outputs[label] = {}
        for name, hr in truths.items():
            with torch.inference_mode():
                sr = reference_upscale(model, lows[name])
            outputs[label][name] = sr
            per_image[name] = {**metrics(hr, sr), "detail": detail_ratio(hr, sr)}
        mean = {k: statistics.mean(v[k] for v in per_image.values()) for k in ("psnr", "ssim", "detail")}
        rows.append({"label": label, "model": model_name, "steps": steps, "noise": noise,
                     "seconds": round(time.perf_counter() - start, 1), "mean": mean, "images": per_image})
        print(f"{label}: PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f}, detail {mean['detail']:.2f}",
              flush=True)
    base = rows[0]["mean"]["psnr"]
    lines = ["| model | PSNR (dB) | gain over bicubic | SSIM | detail (1.0 = ground truth) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        m = r["mean"]
        lines.append(f"| {r['label']} | {m['psnr']:.2f} | {m['psnr'] - base:+.2f} | {m['ssim']:.4f} | "
                     f"{m['detail']:.2f} |")
    table = "\n".join(lines)
    record = {"command": "python benchmarks/diffusion_quality.py " + " ".join(argv or sys.argv[1:]),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                         f"torch {torch.__version__}",
              "images": list(VALIDATION), "rows": rows, "table_markdown": table}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(record, indent=1) + "\n")
    figure(outputs, truths, args.figure)
    print(table)
    print(f"wrote {args.json_out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
