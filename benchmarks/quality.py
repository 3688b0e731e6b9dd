"""Quality of every registered model against bicubic, and its seams when tiled.

    python benchmarks/quality.py       # writes docs/quality.md, docs/benchmarks/quality.json
                                       # and docs/quality_crops.png (about 10 minutes on 2 cores)

Protocol: each ground-truth crop (real images: scikit-image's photos and microscopy, and,
when ../shared/data is beside the checkout, the H&E patch, the Aperio slide and the 16-bit
Landsat-8 scene) is downscaled by the model's scale with antialiased bicubic
interpolation, upscaled back by the model through tilewave's own pixel conversion, and
compared with the crop in the image's dtype: PSNR and SSIM from scikit-image's metrics
over all channels, with ``data_range`` the dtype's full range. Bicubic (tilewave's
``bicubic`` model) at the same scale is the baseline.

Seams: one image is upscaled by ``tilewave.upscale`` in the model's default tiling mode
(tiles of 48 input pixels, so there are many seams) and compared with whole-image
inference: the largest pixel difference and the PSNR between the two.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CROP = 384

#: (label, group, loader) for every ground-truth image; loaders return (h, w, c) arrays.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return img if img.ndim == 3 else img[..., None]


def _shared(name: str) -> np.ndarray | None:
    path = SHARED / name
    if not path.exists():
        return None
    if name.endswith(".png"):
        import imagecodecs

        return imagecodecs.imread(str(path))[..., :3]
    import tifffile

    return tifffile.imread(str(path), level=0) if name.endswith(".svs") else tifffile.imread(str(path))


def _centre_crop(img: np.ndarray, size: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    h, w = img.shape[:2]
    y = max(0, min(h - size, (h - size) // 2 + offset[0]))
    x = max(0, min(w - size, (w - size) // 2 + offset[1]))
    return np.ascontiguousarray(img[y : y + size, x : x + size, :3])


def ground_truths() -> list[tuple[str, str, np.ndarray]]:
    """``(label, group, (c, h, w) pixels)``: photos, microscopy and, if present, shared data."""
    images = [(n, "photo", _centre_crop(_skimage(n), CROP)) for n in PHOTOS]
    images.append(("immunohistochemistry", "microscopy",
                   _centre_crop(_skimage("immunohistochemistry"), CROP)))
    images.append(("retina", "microscopy", _centre_crop(_skimage("retina"), CROP)))
    for label, name, offset in (("H&E patch", "he_target_image.png", (0, 0)),
                                ("Aperio SVS", "cmu_small_region.svs", (200, 300)),
                                ("Landsat-8 (uint16)", "landsat8_224078_rgb.tif", (0, 0))):
        img = _shared(name)
        if img is not None:
            images.append((label, "shared", _centre_crop(img, CROP, offset)))
    return [(label, group, img.transpose(2, 0, 1)) for label, group, img in images]


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """Antialiased bicubic downscaling, in the image's dtype."""
    from tilewave.models.uniba.train import downscale
    from tilewave.pipeline.upscale_window import from_unit, to_unit

    return from_unit(downscale(to_unit(hr), scale)[0].numpy(), hr.dtype)


def metrics(hr: np.ndarray, sr: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(np.iinfo(hr.dtype).max)
    return {"psnr": float(peak_signal_noise_ratio(hr, sr, data_range=rng)),
            "ssim": float(structural_similarity(hr, sr, data_range=rng, channel_axis=0))}


def seam_check(name: str, image: np.ndarray, tile: int = 48) -> dict[str, float | str | None]:
    import zarr

    import tilewave
    from tilewave.models import load_model
    from tilewave.pipeline.upscale_window import reference_upscale
    with tempfile.TemporaryDirectory() as tmp:
        src = zarr.create_array(f"{tmp}/in.zarr", shape=image.shape, dtype=image.dtype,
                                chunks=(image.shape[0], 64, 64), dimension_names=("c", "y", "x"))
        src[:] = image
        report = tilewave.upscale(f"{tmp}/in.zarr", f"{tmp}/out.zarr", model=name, tile=tile,
                                  executor="local", progress=False)
        tiled = zarr.open_array(f"{tmp}/out.zarr", path="0")[:]
    whole = reference_upscale(load_model(name), image)
    diff = np.abs(tiled.astype(np.int64) - whole.astype(np.int64))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {"mode": report.mode, "tile": tile, "max_abs_diff": int(diff.max()),
            # None: identical outputs (infinite PSNR).
            "psnr_tiled_vs_whole": None if mse == 0 else 10 * math.log10(255 ** 2 / mse)}


#: (image, top, left) of the ground-truth crop shown in docs/quality_crops.png.
FIGURE_CROP = ("astronaut", 70, 170)
FIGURE_SIZE = 96


def figure(names: list[str], path: str) -> None:
    """Rows of crops, one row per scale: bicubic, each model, ground truth (2x nearest)."""
    from PIL import Image, ImageDraw

    from tilewave.models import describe_model, load_model
    from tilewave.pipeline.upscale_window import reference_upscale

    name, top, left = FIGURE_CROP
    hr = _skimage(name)[top : top + FIGURE_SIZE, left : left + FIGURE_SIZE].transpose(2, 0, 1)
    rows = []
    for scale in sorted({describe_model(n).scale for n in names}):
        lr = degrade(hr, scale)
        cells = [("bicubic", reference_upscale(load_model("bicubic", scale), lr))]
        cells += [(n, reference_upscale(load_model(n), lr)) for n in names
                  if n != "bicubic" and describe_model(n).scale == scale]
        cells.append(("ground truth", hr))
        rows.append((scale, cells))
    zoom, label_h, pad = 2, 18, 4
    side = FIGURE_SIZE * zoom
    width = max(len(cells) for _, cells in rows) * (side + pad) + pad
    canvas = Image.new("RGB", (width, len(rows) * (side + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (scale, cells) in enumerate(rows):
        y = pad + r * (side + label_h + pad)
        for c, (label, pixels) in enumerate(cells):
            x = pad + c * (side + pad)
            tile = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
            canvas.paste(tile.resize((side, side), Image.NEAREST), (x, y + label_h))
            text = f"bicubic x{scale}" if label == "bicubic" else label
            draw.text((x + 2, y + 3), text, fill="black")
    canvas.save(path)


def main() -> None:
    from tilewave.models import available_models, describe_model, load_model
    from tilewave.pipeline.upscale_window import reference_upscale

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="model names (default: every registered upscaler)")
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "quality.json"))
    ap.add_argument("--markdown", default=str(REPO / "docs" / "quality.md"))
    ap.add_argument("--figure", default=str(REPO / "docs" / "quality_crops.png"))
    args = ap.parse_args()
    names = args.models or [e.name for e in available_models() if not e.diagnostic]
    truths = ground_truths()
    results: dict[str, dict] = {}
    for name in names:
        model, scale = load_model(name), describe_model(name).scale
        per_image, t0 = {}, time.time()
        for label, group, hr in truths:
            lr = degrade(hr, scale)
            sr = reference_upscale(model, lr)
            base = reference_upscale(load_model("bicubic", scale), lr)
            per_image[label] = {"group": group, "model": metrics(hr, sr), "bicubic": metrics(hr, base)}
        seam_img = truths[0][2][:, :160, :144]
        results[name] = {"scale": scale, "images": per_image, "seconds": round(time.time() - t0, 1),
                         "seams": seam_check(name, seam_img)}
        gain = statistics.mean(v["model"]["psnr"] - v["bicubic"]["psnr"] for v in per_image.values()
                               if v["group"] == "photo")
        print(f"{name}: mean PSNR gain over bicubic on the photos {gain:+.2f} dB; "
              f"seams {results[name]['seams']}", flush=True)

    record = {"command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "crop": CROP, "results": results}
    Path(args.json).write_text(json.dumps(record, indent=1))
    Path(args.markdown).write_text(markdown(record))
    figure(names, args.figure)
    print(f"wrote {args.json}, {args.markdown} and {args.figure}")


def markdown(record: dict) -> str:
    lines = ["# Quality: PSNR / SSIM against bicubic", "",
             f"Command: `{record['command'].strip()}`. Machine: {record['machine']}.", "",
             f"Each ground truth is a {record['crop']} x {record['crop']} crop, downscaled by the "
             "model's scale (antialiased bicubic), upscaled back and compared with the crop "
             "(PSNR in dB and SSIM, scikit-image's metrics, all channels, full dtype range). "
             "Each cell reads *model* (bicubic at the same scale).", ""]
    results = record["results"]
    names = list(results)
    labels = list(next(iter(results.values()))["images"])
    lines.append("| image | " + " | ".join(f"{n} (x{results[n]['scale']})" for n in names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for label in labels:
        cells = []
        for n in names:
            r = results[n]["images"][label]
            cells.append(f"{r['model']['psnr']:.2f} ({r['bicubic']['psnr']:.2f}) / "
                         f"{r['model']['ssim']:.3f} ({r['bicubic']['ssim']:.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for group, title in (("photo", "photos"), ("microscopy", "microscopy"),
                         ("shared", "slide, patch and scene")):
        cells = []
        for n in names:
            gains = [r["model"]["psnr"] - r["bicubic"]["psnr"]
                     for r in results[n]["images"].values() if r["group"] == group]
            cells.append(f"{statistics.mean(gains):+.2f} dB" if gains else "n/a")
        lines.append(f"| **mean PSNR gain, {title}** | " + " | ".join(cells) + " |")
    lines += ["", "## Seams: tiled vs. whole-image output of the same model", "",
              "| model | mode | tile | max pixel difference | PSNR tiled vs. whole |", "|---|---|---|---|---|"]
    for n in names:
        s = results[n]["seams"]
        psnr = "identical" if s["psnr_tiled_vs_whole"] is None else f"{s['psnr_tiled_vs_whole']:.1f} dB"
        lines.append(f"| {n} | {s['mode']} | {s['tile']} | {s['max_abs_diff']} | {psnr} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
