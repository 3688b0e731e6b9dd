"""Quality on the degradations real scans carry: the table every model change is judged by.

    python benchmarks/realism.py     # writes docs/realism.md, docs/benchmarks/realism.json
                                     # and docs/realism_crops.png

Held-out ground truth (never trained on by any shipped model's scan variant): the H&E
patch (1000 x 1000) and the Landsat-8 scene from ../shared/data, and scikit-image's
astronaut, coffee, chelsea and immunohistochemistry photos. Each is downscaled x2 with
antialiased bicubic interpolation (``clean``), and the 8-bit ones are also JPEG-compressed
after that at quality 95, 90, 75 and 60 with 4:2:0 and with 4:4:4 chroma (libjpeg-turbo
through imagecodecs, IJG tables). Every model upscales every input as a whole image
through tilewave's own pixel conversion (tiles equal the whole image: ``quality.md``).

Measured against the ground truth, on the whole output, in the image's dtype:

- **PSNR / SSIM** (scikit-image, all channels, the dtype's full range);
- **blockiness**: the mean absolute luminance step across the output's 16-pixel grid
  (where the input's 8-pixel JPEG blocks meet), over the mean step everywhere else, both
  axes; 1 means no grid, bicubic of a JPEG input is the baseline to stay under;
- **bias**: the mean of output minus ground truth, per band, in the dtype's units;
- **LR consistency**: the RMS of the output's 2 x 2 box means minus the input, in the
  dtype's units.

Real inputs as they are (no ground truth): the blockiness of each model's output on a
1024 x 1024 crop of the Aperio slide's level 0 from its held-out rows (the slide's own
JPEG, quality 30 in RGB), and on the whole Landsat-8 scene the mean and RMS of the
output's box means minus the input, per band, over its valid (non-zero) pixels.

Every output is computed as one whole image in this process (about 15 minutes on 2
cores); uniba's attention over the whole 1.5k x 1.5k scene took this process to about
19 GiB, so run it alone on a machine with 24 GiB or more. ``--from-json`` writes the
table again from the recorded measurements.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CLEAN_MODELS = ["bicubic", "span-x2", "uniba-x2"]
SCAN_MODELS = ["span-x2-scan", "uniba-x2-scan"]
#: ``(label, quality, chroma)``; quality None is the clean input.
CONDITIONS: list[tuple[str, int | None, str | None]] = [("clean", None, None)] + [
    (f"q{q} {label}", q, chroma) for q in (95, 90, 75, 60)
    for chroma, label in (("420", "4:2:0"), ("444", "4:4:4"))]
#: The slide's held-out crop: rows from 1920 are never trained on; the origin is a
#: multiple of 8 so the slide's JPEG grid stays on the crop's 8-pixel grid.
SLIDE_CROP = (1936, 592, 1024)
#: Where the figure's crops come from: (image, condition, top, left) in input pixels.
FIGURE_ROWS = [("slide as it is", None, 300, 420), ("H&E patch", "q75 4:2:0", 200, 230),
               ("Landsat-8 (uint16)", "clean", 260, 300)]
FIGURE_SIDE = 64


# ----------------------------------------------------------------------- metrics


def luminance(pixels: np.ndarray) -> np.ndarray:
    x = pixels.astype(np.float64)
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2] if x.shape[0] >= 3 else x[0]


def blockiness(pixels: np.ndarray, period: int = 16) -> float:
    """Mean luminance step across the ``period`` grid over the mean step elsewhere."""
    y = luminance(pixels)
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    on_x = (np.arange(dx.shape[1]) + 1) % period == 0
    on_y = (np.arange(dy.shape[0]) + 1) % period == 0
    edge = np.concatenate([dx[:, on_x].ravel(), dy[on_y, :].ravel()])
    rest = np.concatenate([dx[:, ~on_x].ravel(), dy[~on_y, :].ravel()])
    return float(edge.mean() / max(rest.mean(), 1e-12))


def box_means(pixels: np.ndarray, scale: int = 2) -> np.ndarray:
    c, h, w = pixels.shape
    h, w = h // scale * scale, w // scale * scale
    return pixels[:, :h, :w].astype(np.float64).reshape(c, h // scale, scale, w // scale, scale).mean(axis=(2, 4))


def measure(hr: np.ndarray, lr: np.ndarray, sr: np.ndarray) -> dict[str, Any]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    top = float(np.iinfo(hr.dtype).max)
    diff = sr.astype(np.float64) - hr.astype(np.float64)
    return {"psnr": float(peak_signal_noise_ratio(hr, sr, data_range=top)),
            "ssim": float(structural_similarity(hr, sr, data_range=top, channel_axis=0)),
            "blockiness": blockiness(sr),
            "bias": [float(v) for v in diff.mean(axis=(1, 2))],
            "lr_rms": float(np.sqrt(((box_means(sr) - lr.astype(np.float64)) ** 2).mean()))}


# ------------------------------------------------------------------------ images


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))


def _even(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, : img.shape[1] // 2 * 2, : img.shape[2] // 2 * 2])


def ground_truths() -> list[tuple[str, np.ndarray]]:
    """``(label, (c, h, w) pixels)`` of the held-out images that are present."""
    import imagecodecs
    import tifffile

    found = []
    if (SHARED / "he_target_image.png").exists():
        found.append(("H&E patch", imagecodecs.imread(str(SHARED / "he_target_image.png"))[..., :3]
                      .transpose(2, 0, 1)))
    found += [(n, _skimage(n)) for n in ("astronaut", "coffee", "chelsea", "immunohistochemistry")]
    if (SHARED / "landsat8_224078_rgb.tif").exists():
        scene = tifffile.imread(str(SHARED / "landsat8_224078_rgb.tif")).transpose(2, 0, 1)
        found.append(("Landsat-8 (uint16)", scene[:, 418:1442, 508:1532]))
    return [(label, _even(np.ascontiguousarray(img))) for label, img in found]


def low_resolution(hr: np.ndarray, quality: int | None, chroma: str | None) -> np.ndarray:
    from tilewave.pipeline.upscale_window import from_unit, to_unit
    from tilewave.training.degradation import bicubic_downscale, jpeg_roundtrip

    lr = bicubic_downscale(to_unit(hr)[0].numpy(), 2)
    if quality is not None:
        lr = jpeg_roundtrip(lr, quality, chroma)  # type: ignore[arg-type]
    return from_unit(lr, hr.dtype)


def slide_crop() -> np.ndarray | None:
    import tifffile

    path = SHARED / "cmu_small_region.svs"
    if not path.exists():
        return None
    y, x, side = SLIDE_CROP
    return np.ascontiguousarray(tifffile.imread(str(path), level=0)[y : y + side, x : x + side]
                                .transpose(2, 0, 1))


def slide_quality() -> int | None:
    """The slide's JPEG quality as a job reads it from its tables."""
    from tilewave.storage.inputs import open_input

    compression = open_input(str(SHARED / "cmu_small_region.svs")).compression
    return compression.quality if compression else None


def landsat_scene() -> np.ndarray | None:
    import tifffile

    path = SHARED / "landsat8_224078_rgb.tif"
    return None if not path.exists() else tifffile.imread(str(path)).transpose(2, 0, 1)


# ------------------------------------------------------------------------ models


class Upscaler:
    """A model by name, ``NAME+consistent`` for the model with ``--consistent``."""

    def __init__(self, name: str):
        from tilewave.models import load_model

        self.name = name
        base, _, option = name.partition("+")
        self.model = load_model(base, 2 if base == "bicubic" else None)
        self.consistent = option == "consistent"

    def __call__(self, lr: np.ndarray, quality: int | None = None) -> np.ndarray:
        """The output for ``lr``; a conditioned model is told its JPEG ``quality``, as a
        job reads it from the input file."""
        from tilewave.pipeline.upscale_window import reference_upscale

        model = self.model
        if model.descriptor.conditions:
            model = model.with_condition({"jpeg_quality": quality})
        if self.consistent:
            from tilewave.pipeline.consistency import reference_consistent

            return reference_consistent(model, lr)
        return reference_upscale(model, lr)


# ------------------------------------------------------------------------- run


def run(names: list[str]) -> dict[str, Any]:
    models = [Upscaler(n) for n in names]
    truths = ground_truths()
    images: dict[str, Any] = {}
    for label, hr in truths:
        conditions = CONDITIONS if hr.dtype == np.uint8 else CONDITIONS[:1]
        rows: dict[str, Any] = {}
        for cond, quality, chroma in conditions:
            lr = low_resolution(hr, quality, chroma)
            rows[cond] = {m.name: measure(hr, lr, m(lr, quality)) for m in models}
        images[label] = rows
        print(f"{label}: " + "; ".join(f"{c} " + ", ".join(f"{n} {r[n]['psnr']:.2f}/{r[n]['blockiness']:.2f}"
                                                        for n in names) for c, r in rows.items()),
              flush=True)
    real: dict[str, Any] = {}
    crop = slide_crop()
    if crop is not None:
        quality = slide_quality()
        real["slide"] = {"input_blockiness_8": blockiness(crop, 8), "jpeg_quality": quality,
                         "models": {m.name: {"blockiness": blockiness(m(crop, quality))}
                                    for m in models}}
        print("slide: " + ", ".join(f"{n} {v['blockiness']:.2f}" for n, v in real["slide"]["models"].items()),
              flush=True)
    scene = landsat_scene()
    if scene is not None:
        valid = (scene != 0).all(axis=0)
        per = {}
        for m in models:
            diff = box_means(m(scene)) - scene.astype(np.float64)
            per[m.name] = {"bias": [float(d[valid].mean()) for d in diff],
                           "lr_rms": [float(np.sqrt((d[valid] ** 2).mean())) for d in diff]}
        real["landsat"] = {"valid_pixels": int(valid.sum()), "models": per}
        print("landsat: " + ", ".join(f"{n} {v['bias']}" for n, v in per.items()), flush=True)
    return {"images": images, "real": real}


# ---------------------------------------------------------------------- report


def mean_over(images: dict[str, Any], cond: str, name: str, key: str, minus: str | None = None) -> float | None:
    values = []
    for rows in images.values():
        if cond in rows and name in rows[cond]:
            v = rows[cond][name][key]
            values.append(v - rows[cond][minus][key] if minus else v)
    return statistics.mean(values) if values else None


def targets(record: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """``(target, model, measured, met)`` for the scan models present."""
    images = {k: v for k, v in record["images"].items() if "uint16" not in k}
    names = record["models"]
    rows: list[tuple[str, str, str, bool | None]] = []
    for scan in [n for n in names if n.endswith("-scan")]:
        clean = scan[: -len("-scan")]
        for q, goal in ((90, 1.0), (75, 0.5)):
            gains = [mean_over(images, f"q{q} {c}", scan, "psnr", "bicubic") for c in ("4:2:0", "4:4:4")]
            worst = min(g for g in gains if g is not None)
            rows.append((f"JPEG q{q}: PSNR over bicubic >= +{goal} dB (worse chroma, mean of images)",
                         scan, f"{worst:+.2f} dB", worst >= goal))
        excess = {c: mean_over(images, c, scan, "blockiness", "bicubic") or 0.0 for c, _, _ in CONDITIONS}
        jpeg = {c: v for c, v in excess.items() if c != "clean"}
        worst = max(jpeg, key=jpeg.__getitem__)
        over = sorted({c.split()[0] for c, v in jpeg.items() if v > 0}, key=lambda q: -int(q[1:]))
        rows.append(("blockiness no more than bicubic's at every quality (largest excess, mean of images)",
                     scan, f"{jpeg[worst]:+.3f} at {worst}; above at " + (", ".join(over) or "none")
                     + f", below at the rest; clean input {excess['clean']:+.3f}", jpeg[worst] <= 0.0))
        # A sharper output steps more between output pixels 2k+1 and 2k+2 even with no
        # JPEG grid at all (a clean input): what JPEG adds is the excess beyond that.
        added = max(jpeg.values()) - excess["clean"]
        rows.append(("no grid added by JPEG: blockiness excess over bicubic no more than on the clean "
                     "input, at every quality", scan, f"{added:+.3f}", added <= 0.0))
        if clean in names:
            gap = mean_over(images, "clean", clean, "psnr", scan)
            assert gap is not None
            rows.append((f"clean LR within 0.7 dB of {clean}", scan, f"{-gap:+.2f} dB", gap <= 0.7))
        slide = record["real"].get("slide")
        if slide and scan in slide["models"]:
            b, base = slide["models"][scan]["blockiness"], slide["models"]["bicubic"]["blockiness"]
            rows.append(("real slide: blockiness no more than bicubic's", scan, f"{b:.2f} vs {base:.2f}",
                         b <= base))
    return rows


def markdown(record: dict[str, Any]) -> str:
    names, images = record["models"], record["images"]
    eight = {k: v for k, v in images.items() if "uint16" not in k}
    lines = ["# Quality on real degradations", "",
             f"Command: `{record['command']}`. Machine: {record['machine']}. "
             f"{record['seconds']:.0f} s.", "",
             "Held-out images (" + ", ".join(images) + ") downscaled x2 (antialiased bicubic), "
             "then JPEG-compressed as the row says; the protocol is in `benchmarks/realism.py`. "
             "Each cell: **PSNR gain over bicubic (dB) / blockiness** (1 = no grid), mean over the "
             f"{len(eight)} 8-bit images; bicubic's own column gives its PSNR.", "",
             "| input | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for cond, _, _ in CONDITIONS:
        cells = []
        for n in names:
            psnr = mean_over(eight, cond, n, "psnr", None if n == "bicubic" else "bicubic")
            block = mean_over(eight, cond, n, "blockiness")
            if psnr is None or block is None:
                cells.append("-")
                continue
            cells.append(f"{psnr:.2f} / {block:.2f}" if n == "bicubic" else f"{psnr:+.2f} / {block:.2f}")
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    lines += ["", "SSIM, mean over the same images:", "",
              "| input | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for cond, _, _ in CONDITIONS:
        cells = [f"{v:.4f}" if (v := mean_over(eight, cond, n, "ssim")) is not None else "-" for n in names]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    lines += ["", "Per image, PSNR (dB) / blockiness at clean, q90 4:2:0 and q75 4:2:0:", "",
              "| image | input | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for label, rows in images.items():
        for cond in ("clean", "q90 4:2:0", "q75 4:2:0"):
            if cond in rows:
                cells = [f"{rows[cond][n]['psnr']:.2f} / {rows[cond][n]['blockiness']:.2f}" for n in names]
                lines.append(f"| {label} | {cond} | " + " | ".join(cells) + " |")
    lines += ["", "Bias (mean of output minus ground truth, per band) and LR consistency (RMS of the "
              "output's 2 x 2 means minus the input), clean input, in the image's units:", "",
              "| image | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, rows in images.items():
        cells = [", ".join(f"{b:+.2f}" for b in rows["clean"][n]["bias"]) + f" / {rows['clean'][n]['lr_rms']:.2f}"
                 for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    real = record["real"]
    if "slide" in real:
        s = real["slide"]
        lines += ["", f"The Aperio slide as it is (1024 x 1024 of level 0 from its held-out rows; its "
                  f"own 8-pixel JPEG grid has blockiness {s['input_blockiness_8']:.2f} in the input): "
                  "blockiness of the x2 output on the 16-pixel grid.", "",
                  "| " + " | ".join(names) + " |", "|---" * len(names) + "|",
                  "| " + " | ".join(f"{s['models'][n]['blockiness']:.2f}" for n in names) + " |"]
    if "landsat" in real:
        s = real["landsat"]
        lines += ["", f"The Landsat-8 scene as it is (uint16, {s['valid_pixels']:,} valid pixels): the "
                  "output's 2 x 2 means minus the input, per band, mean / RMS (DN).", "",
                  "| model | bias per band | RMS per band |", "|---|---|---|"]
        for n in names:
            m = s["models"][n]
            lines.append(f"| {n} | " + ", ".join(f"{v:+.2f}" for v in m["bias"]) + " | "
                         + ", ".join(f"{v:.2f}" for v in m["lr_rms"]) + " |")
    rows = targets(record)
    if rows:
        lines += ["", "## Targets", "", "| target | model | measured | met |", "|---|---|---|:---:|"]
        lines += [f"| {t} | {m} | {v} | {'yes' if ok else '**no**'} |" for t, m, v, ok in rows]
    lines += ["", "![Crops at 200 %](realism_crops.png)", "",
              "`realism_crops.png`: the input (nearest-neighbour) and each output at 200 %: the "
              "slide as it is, the H&E patch at JPEG q75 4:2:0, the Landsat-8 crop (stretched "
              "for display, the same way in every cell)."]
    return "\n".join(lines) + "\n"


def figure(names: list[str], path: str) -> None:
    from PIL import Image, ImageDraw

    sources = {"slide as it is": slide_crop()}
    truths = dict(ground_truths())
    side, zoom, label_h, pad = FIGURE_SIDE, 4, 16, 4
    cell = side * zoom
    rows = []
    models = [Upscaler(n) for n in names]
    for label, cond, top, left in FIGURE_ROWS:
        quality = None
        if cond is None:
            lr = sources.get(label)
            quality = slide_quality() if lr is not None else None
        elif label in truths:
            q = dict((c, (qq, ch)) for c, qq, ch in CONDITIONS)[cond]
            lr, quality = low_resolution(truths[label], *q), q[0]
        else:
            lr = None
        if lr is None:
            continue
        window = lr[:, max(0, top - 24) : top + side + 24, max(0, left - 24) : left + side + 24]
        oy, ox = top - max(0, top - 24), left - max(0, left - 24)
        cells = [("input", np.repeat(np.repeat(window[:, oy : oy + side, ox : ox + side], 2, 1), 2, 2))]
        for m in models:
            out = m(window, quality)
            cells.append((m.name, out[:, 2 * oy : 2 * (oy + side), 2 * ox : 2 * (ox + side)]))
        rows.append((f"{label}" + (f", {cond}" if cond else ""), cells))
    width = pad + (len(names) + 1) * (cell + pad)
    canvas = Image.new("RGB", (width, pad + len(rows) * (cell + label_h + pad) + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, cells) in enumerate(rows):
        y = pad + r * (cell + label_h + pad) + label_h
        draw.text((pad, y - label_h + 1), title, fill="black")
        stack = np.stack([c[1] for c in cells]).astype(np.float64)
        if stack.dtype != np.uint8 and cells[0][1].dtype != np.uint8:
            lo, hi = np.percentile(stack, 1), np.percentile(stack, 99.5)
        else:
            lo, hi = 0.0, 255.0
        for c, (label, pixels) in enumerate(cells):
            view = np.clip((pixels.astype(np.float64) - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
            tile = Image.fromarray(np.ascontiguousarray(view.transpose(1, 2, 0)))
            x = pad + c * (cell + pad)
            canvas.paste(tile.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
            draw.rectangle((x, y, x + 6 * len(label) + 4, y + 12), fill="white")
            draw.text((x + 2, y + 1), label, fill="black")
    canvas.save(path)


def main() -> None:
    from tilewave.models import available_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="model names, NAME+consistent for --consistent "
                    "(default: bicubic, the clean and the scan models, and both SPANs with "
                    "--consistent)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "realism.json"))
    ap.add_argument("--markdown", default=str(REPO / "docs" / "realism.md"))
    ap.add_argument("--figure", default=str(REPO / "docs" / "realism_crops.png"))
    ap.add_argument("--from-json", action="store_true",
                    help="write the table again from --json's measurements, without running")
    args = ap.parse_args()
    if args.from_json:
        record = json.loads(Path(args.json).read_text())
        record["targets"] = [dict(zip(("target", "model", "measured", "met"), t)) for t in targets(record)]
        Path(args.json).write_text(json.dumps(record, indent=1))
        Path(args.markdown).write_text(markdown(record))
        print(f"wrote {args.json} and {args.markdown}")
        return
    torch.set_num_threads(args.threads)
    known = {e.name for e in available_models()}
    names = args.models or ([n for n in CLEAN_MODELS + SCAN_MODELS if n in known]
                            + ["span-x2+consistent", "span-x2-scan+consistent"])
    started = time.time()
    record = {"command": "python benchmarks/realism.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
              "models": names, **run(names)}
    record["seconds"] = time.time() - started
    record["targets"] = [dict(zip(("target", "model", "measured", "met"), t)) for t in targets(record)]
    Path(args.json).write_text(json.dumps(record, indent=1))
    Path(args.markdown).write_text(markdown(record))
    figure(names, args.figure)
    print(f"wrote {args.json}, {args.markdown} and {args.figure}")


if __name__ == "__main__":
    main()
