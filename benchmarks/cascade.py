"""One step or stages? x4 on real images: span-x4 at once vs span-x2 twice (and bicubic).

    python benchmarks/cascade.py           # writes docs/benchmarks/cascade.json

Ground truth: 384 x 384 crops of real images; input: the crop downscaled x4 with
antialiased bicubic. Each path is whole-image inference with tilewave's pixel conversion
(the tiled pipeline gives the same pixels, see the tests); scores are PSNR and SSIM from
scikit-image over all channels.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import degrade, ground_truths, metrics  # noqa: E402

PATHS = {"bicubic x4": ["bicubic:4"], "span-x4": ["span-x4"],
         "span-x2 then span-x2": ["span-x2", "span-x2"]}


def main() -> None:
    import torch

    from tilewave.models import load_model
    from tilewave.pipeline.upscale_window import reference_upscale

    models = {"bicubic:4": load_model("bicubic", 4), "span-x4": load_model("span-x4"),
              "span-x2": load_model("span-x2")}
    paths = PATHS
    rows = {}
    for label, group, hr in ground_truths():
        lr = degrade(hr, 4)
        scores = {}
        for name, steps in paths.items():
            img = lr
            for step in steps:
                img = reference_upscale(models[step], img)
            scores[name] = metrics(hr, img)
        rows[label] = {"group": group, **scores}
        print(label, {k: round(v["psnr"], 2) for k, v in scores.items()}, flush=True)
    summary = {name: statistics.mean(r[name]["psnr"] for r in rows.values() if r["group"] == "photo")
               for name in paths}
    record = {"command": "python benchmarks/cascade.py",
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "mean_psnr_photos": summary, "images": rows}
    (HERE.parent / "docs" / "benchmarks" / "cascade.json").write_text(json.dumps(record, indent=1))
    print("mean PSNR on the photos:", {k: round(v, 2) for k, v in summary.items()})


if __name__ == "__main__":
    main()
