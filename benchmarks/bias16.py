"""Does a model trained on 8-bit photos shift the level of a 16-bit scene? The mean of
the model's output against bicubic's, over the scene's valid pixels, on the real Landsat-8
scene in ../shared/data (its zero-filled corners, which carry no nodata tag, left out).

    python benchmarks/bias16.py [--model span-x2] [--crop 768]

Both run in this process on the same crop through tilewave's own conversion (unit space,
rounding back to uint16), so the difference is the model's and the conversion's alone;
the same crop scaled to 8 bits shows what the model does to the same content at the
range it was trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
import torch

from tilewave.models import load_model
from tilewave.pipeline.upscale_window import reference_upscale

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "landsat8_224078_rgb.tif"
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def shift(model_name: str, pixels: np.ndarray) -> dict:
    """Mean output of the model minus bicubic's, over pixels whose input is not 0."""
    out = reference_upscale(load_model(model_name), pixels).astype(np.float64)
    base = reference_upscale(load_model("bicubic", 2), pixels).astype(np.float64)
    valid = np.repeat(np.repeat((pixels != 0).all(axis=0), 2, 0), 2, 1)
    per_channel = [(out[c][valid] - base[c][valid]).mean() for c in range(out.shape[0])]
    return {"mean_shift": [float(v) for v in per_channel],
            "relative": [float(v / base[c][valid].mean()) for c, v in enumerate(per_channel)],
            "level": [float(base[c][valid].mean()) for c in range(out.shape[0])],
            "corner_max": float(out[:, ~valid].max()) if (~valid).any() else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="span-x2")
    p.add_argument("--crop", type=int, default=768)
    args = p.parse_args()
    torch.set_num_threads(2)
    scene = tifffile.imread(DATA).transpose(2, 0, 1)
    crop = np.ascontiguousarray(scene[:, : args.crop, : args.crop])  # a zero corner included
    as8 = np.clip(np.rint(crop.astype(np.float64) / 65535 * 255), 0, 255).astype(np.uint8)
    stretched = crop.astype(np.float64)
    top = np.percentile(stretched[stretched > 0], 99.5)
    as8_stretched = np.clip(np.rint(stretched / top * 255), 0, 255).astype(np.uint8)
    record = {"command": f"python benchmarks/bias16.py --model {args.model} --crop {args.crop}",
              "input": f"{DATA.name}, top-left {args.crop} x {args.crop}, uint16",
              "uint16": shift(args.model, crop),
              "uint8, same values / 257": shift(args.model, as8),
              "uint8, stretched to the 99.5th percentile": shift(args.model, as8_stretched)}
    (OUT / "bias16.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
