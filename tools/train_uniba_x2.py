"""Train the shipped ``uniba-x2`` (or, with ``--diffusion``, ``uniba-diff-x2``) weights
on real images only, and record how.

Training images: scikit-image's wheel photographs (except the validation ones) and the
slide, H&E patch and Landsat scene in ../shared/data. Validation images, never trained
on: astronaut, coffee, chelsea and ihc from scikit-image.

    python tools/train_uniba_x2.py --minutes 45 --threads 1
    python tools/train_uniba_x2.py --diffusion --minutes 50 --threads 2   # from uniba-x2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile

import imagecodecs
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAIN_PHOTOS = ["rocket", "motorcycle_left", "motorcycle_right", "retina", "hubble_deep_field",
                "brick", "grass", "gravel", "camera", "moon", "coins"]
VALIDATION = ["astronaut", "coffee", "chelsea", "immunohistochemistry"]
SHARED_FILES = ["cmu_small_region.svs", "he_target_image.png", "landsat8_224078_rgb.tif"]


def _photo(data, name: str) -> np.ndarray:
    if name.startswith("motorcycle_"):
        return data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    return getattr(data, name)()


def main() -> None:
    from skimage import data
    from uniba_evaluate import evaluate

    from tilewave.models.uniba import UniBA, weights_path
    from tilewave.models.uniba.train import TrainSettings, train

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diffusion", action="store_true",
                    help="train uniba-diff-x2, starting from the shipped uniba-x2 weights")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: 1.5e-3, "
                    "5e-4 for --diffusion, which starts from trained weights)")
    ap.add_argument("--init", help="weights to continue from; their record is kept under 'previous'")
    ap.add_argument("--output")
    args = ap.parse_args()
    output = args.output or weights_path(2, args.diffusion)
    lr = args.lr or (5e-4 if args.diffusion else 1.5e-3)

    folder = tempfile.mkdtemp(prefix="uniba-train-")
    paths = []
    for name in TRAIN_PHOTOS:
        path = os.path.join(folder, f"{name}.png")
        with open(path, "wb") as f:
            f.write(imagecodecs.png_encode(_photo(data, name)))
        paths.append(path)
    paths += [str(SHARED / f) for f in SHARED_FILES if (SHARED / f).exists()]
    settings = TrainSettings(scale=2, batch=args.batch, minutes=args.minutes, steps=args.steps,
                             seed=args.seed, threads=args.threads, lr=lr,
                             diffusion=args.diffusion, init=args.init)
    previous = None
    if args.init:
        # The record beside the weights has the validation; the file's own lacks it.
        sidecar = os.path.splitext(args.init)[0] + ".json"
        if os.path.exists(sidecar):
            with open(sidecar) as f:
                previous = json.load(f)
        else:
            from tilewave.models.safetensors_header import read_header

            previous = json.loads(read_header(args.init)["__metadata__"]["record"])
    record = train(paths, output, settings)
    if previous is not None:
        record["previous"] = previous
    val = {}
    for name in VALIDATION:
        img = getattr(data, name)()
        val[name] = np.ascontiguousarray(img.transpose(2, 0, 1)[:3]).astype(np.float32) / 255
    metrics = evaluate(UniBA.load(output), val)
    record.update(validation=metrics, validation_images=VALIDATION,
                  command=f"python tools/train_uniba_x2.py --minutes {args.minutes} "
                          f"--threads {args.threads} --batch {args.batch} --seed {args.seed}"
                          + (" --diffusion" if args.diffusion else "")
                          + (f" --lr {args.lr}" if args.lr else "")
                          + (f" --init {os.path.basename(args.init)}" if args.init else ""))
    with open(os.path.splitext(output)[0] + ".json", "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(metrics["mean"], indent=1))


if __name__ == "__main__":
    main()
