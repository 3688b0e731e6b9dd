"""Side-by-side crops for docs/: bicubic | uniba-x2 | ground truth, on validation photos
the model never trained on (scikit-image's chelsea and astronaut).

    python tools/uniba_figure.py          # writes docs/uniba_x2_crops.png
"""

from __future__ import annotations

import argparse
import pathlib

import imagecodecs
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
#: (image, top, left) of each 128 x 128 ground-truth crop.
CROPS = [("chelsea", 60, 170), ("astronaut", 60, 180)]


def main() -> None:
    from skimage import data

    from tilewave.models import load_model
    from tilewave.models.bicubic import bicubic_upscale
    from tilewave.models.uniba.train import downscale

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", default=str(REPO / "docs" / "uniba_x2_crops.png"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--zoom", type=int, default=2)
    args = ap.parse_args()
    model = load_model("uniba-x2")
    rows = []
    for name, top, left in CROPS:
        gt = getattr(data, name)().astype(np.float32) / 255
        h, w = (gt.shape[0] // 2) * 2, (gt.shape[1] // 2) * 2
        gt_t = torch.from_numpy(np.ascontiguousarray(gt[:h, :w].transpose(2, 0, 1)))[None]
        with torch.inference_mode():
            lr = downscale(gt_t, 2)
            panels = [bicubic_upscale(lr, 2)[0], model.forward_image(lr)[0], gt_t[0]]
        crops = []
        for p in panels:
            c = p[:, top : top + args.size, left : left + args.size].clamp(0, 1).numpy()
            c = np.repeat(np.repeat(c, args.zoom, axis=1), args.zoom, axis=2)
            crops.append(np.rint(c.transpose(1, 2, 0) * 255).astype(np.uint8))
            crops.append(np.full((crops[-1].shape[0], 4, 3), 255, np.uint8))
        rows.append(np.concatenate(crops[:-1], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    image = np.concatenate(rows[:-1], axis=0)
    pathlib.Path(args.output).write_bytes(imagecodecs.png_encode(image))
    print(f"wrote {args.output}: columns bicubic | uniba-x2 | ground truth; rows {', '.join(n for n, *_ in CROPS)}")


if __name__ == "__main__":
    main()
