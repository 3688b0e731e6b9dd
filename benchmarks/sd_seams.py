"""Seams and ghosts of the tiled Stable Diffusion x4 upscaler: (a) final-only blending
(each tile samples alone, decoded overlaps feathered: the usual recipe, ``--mode
blend``), (b) per-step overlap contexts (``--mode context``, the default), (c) the whole
image at once; same input, seed and steps.

Measures, on unit-space pixels:

- **seam**: the mean absolute step across tile borders (between the last output column
  of a tile and the first of the next, rows likewise) over the mean step between any
  other two neighbouring columns or rows. 1 is no seam. Given for the tiles' own
  decodes abutted (*raw*: what they disagree on at the border) and for the output
  (*final*, after feathering).
- **ghosting**: where a tile's decode overlaps a neighbour's, before they are blended,
  the mean absolute difference between the two, over the same mean step. Blending two
  decodes that disagree leaves a double image in the overlap.

The tiles run in raster order in this process, through the model's own ``forward_tile``
(given no decoded strips, so that its output is its own decode; the feathering is then
:func:`tilewave.pipeline.blend.blend_core`, as inside the model); a test checks that the
result equals a Ray job's. Without ``--model`` a tiny random upscaler is built
(``tools/tiny_sd_x4.py``): its numbers compare the tiling methods, not image quality.

    python benchmarks/sd_seams.py [--model FOLDER] [--steps 12] [--tile 32] [--image 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tilewave.models import load_model
from tilewave.models.base import SamplerSettings, TileRequest
from tilewave.pipeline.blend import blend_core, split_prediction
from tilewave.pipeline.grid import TileGrid
from tilewave.pipeline.upscale_window import to_unit

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def steps_between(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute difference between neighbouring lines along ``axis`` (1: rows, 2:
    columns) of a ``(c, h, w)`` image: entry ``i`` is between lines ``i`` and ``i + 1``."""
    return np.abs(np.diff(image.astype(np.float64), axis=axis)).mean(axis=(0, 3 - axis))


def smooth(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` averaged over ``factor`` x ``factor`` blocks: a seam is a shift of the
    local mean, which pixel-level texture (noise-like, for a random model) would hide."""
    c, h, w = image.shape
    h, w = h // factor * factor, w // factor * factor
    return image[:, :h, :w].reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def seam(image: np.ndarray, period: int, factor: int = 1) -> float:
    """Mean step across the borders at multiples of ``period`` over the mean elsewhere,
    on ``image`` averaged over ``factor``-pixel blocks (``period`` a multiple of it)."""
    image, period = smooth(image, factor), period // factor
    border, other = [], []
    for axis in (1, 2):
        d = steps_between(image, axis)
        at = np.zeros(d.size, bool)
        at[period - 1 :: period] = True
        border.append(d[at])
        other.append(d[~at])
    return float(np.concatenate(border).mean() / np.concatenate(other).mean())


def interior_step(image: np.ndarray) -> float:
    return float(np.mean([steps_between(image, 1).mean(), steps_between(image, 2).mean()]))


def _pixels_stripped(contexts: dict) -> dict:
    """The contexts (per-step lists) without the decoded strips their last steps carry."""
    return {k: [({**c, "pixels": None} if c else c) for c in v] if v else v
            for k, v in contexts.items()}


def _decoded_strip(context: list | None) -> np.ndarray | None:
    """The decoded strip a neighbour sent, in its last step's context."""
    return (context[-1] or {}).get("pixels") if context else None


def by_hand(model, pixels: np.ndarray, tile: int, mode: str, overlap: int = 0,
            order: str = "rows") -> dict:
    """Run every tile of ``pixels`` (``(c, h, w)`` uint8) in raster order (or column by
    column, ``order="columns"``, which the DAG allows too); return the final and raw
    outputs (unit space) and the overlaps' disagreements."""
    c, h, w = pixels.shape
    s, halo = model.descriptor.scale, model.descriptor.halo
    grid = TileGrid(h, w, tile, s, halo=halo, overlap=overlap if mode == "blend" else 0)
    final = np.zeros((c, h * s, w * s), np.float32)
    raw = np.zeros_like(final)
    sent: dict = {}
    ghosts: list[float] = []
    started = time.perf_counter()
    tiles = list(grid)
    if order == "columns":
        tiles.sort(key=lambda t: (t.col, t.row))
    for t in tiles:
        r, col = t.index
        inbound = {"left": sent.get((r, col - 1), {}).get("right"),
                   "top": sent.get((r - 1, col), {}).get("below"),
                   "top_left": sent.get((r - 1, col - 1), {}).get("below_right")}
        window = pixels[:, t.read[0] : t.read[1], t.read[2] : t.read[3]]
        x = to_unit(window)
        with torch.inference_mode():
            if mode == "context":
                request = TileRequest(row=r, col=col, core=t.core, window=t.read, image_size=(h, w),
                                      contexts=_pixels_stripped({k: v for k, v in inbound.items() if v}))
                result = model.forward_tile(x, request)
                own = result.output[0].numpy()
                sent[t.index] = result.contexts
                strips = {k: _decoded_strip(v) for k, v in inbound.items()}
            else:
                request = TileRequest(row=r, col=col, core=t.predicted, window=t.read,
                                      image_size=(h, w), contexts={})
                prediction = model.forward_tile(x, request).output[0].numpy()
                own, out = split_prediction(s, t, prediction)
                sent[t.index] = out
                strips = dict(inbound)
        if strips.get("left") is None or strips.get("top") is None:
            strips["top_left"] = None
        strips = {k: v for k, v in strips.items() if v is not None}
        for part in strips.values():
            region = own[:, : part.shape[1], : part.shape[2]]
            ghosts.append(float(np.abs(region - part).mean()))
        oy0, oy1, ox0, ox1 = grid.out_window(t.core)
        raw[:, oy0:oy1, ox0:ox1] = own
        final[:, oy0:oy1, ox0:ox1] = blend_core(own, strips, "cosine")
    return {"final": final, "raw": raw, "ghosts": ghosts, "seconds": time.perf_counter() - started,
            "tiles": grid.count}


def measure(model, pixels: np.ndarray, tile: int) -> dict:
    """The three methods' seams and ghosting on ``pixels``."""
    scale = model.descriptor.scale
    period = tile * scale
    rows = {}
    for name, mode in (("(a) final-only blending", "blend"), ("(b) per-step overlap contexts", "context")):
        run = by_hand(model, pixels, tile, mode, overlap=16)
        step = interior_step(run["final"])
        rows[name] = {"mode": mode, "seam_raw": seam(run["raw"], period, scale),
                      "seam_final": seam(run["final"], period, scale),
                      "ghosting": float(np.mean(run["ghosts"])) / step,
                      "ghosting_unit": float(np.mean(run["ghosts"])),
                      "seconds": run["seconds"], "tiles": run["tiles"]}
    started = time.perf_counter()
    with torch.inference_mode():
        whole = model.forward_image(to_unit(pixels))[0].numpy()
    rows["(c) whole image"] = {"mode": "one tile", "seam_raw": seam(whole, period, scale),
                               "seam_final": seam(whole, period, scale), "ghosting": 0.0,
                               "ghosting_unit": 0.0, "seconds": time.perf_counter() - started,
                               "tiles": 1}
    return rows


def sample_image(size: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut), shrunk by area to ``size`` square."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BOX)
    return np.asarray(photo).transpose(2, 0, 1).copy()


#: What a record says of the model when no folder is given.
TINY = "tiny random upscaler (tools/tiny_sd_x4.py, seed 0)"


def upscaler_folder(given: str | None, scratch: str) -> str:
    """``given``, or a tiny random upscaler built in ``scratch``."""
    if given is not None:
        return given
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from tiny_sd_x4 import build_tiny_upscaler

    return build_tiny_upscaler(os.path.join(scratch, "tiny-upscaler"))


def machine(threads: str) -> str:
    return (f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, {threads}")


def command(script: str, args: argparse.Namespace) -> str:
    """The command line that reproduces a run with ``args``."""
    parts = [f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in vars(args).items() if v is not None]
    return f"python benchmarks/{script} " + " ".join(parts)


def save(name: str, record: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="upscaler folder (default: a tiny random one, built here)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--tile", type=int, default=32)
    p.add_argument("--image", type=int, default=96, help="input side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        folder = upscaler_folder(args.model, scratch)
        sampler = SamplerSettings(steps=args.steps, noise=None, seed=args.seed, noise_level=20,
                                  early_stop=0.0)
        model = load_model(folder, None, sampler)
        pixels = sample_image(args.image)
        rows = measure(model, pixels, args.tile)
    save("sd_seams.json", {
        "command": command("sd_seams.py", args), "model": args.model or TINY,
        "machine": machine("1 thread"), "image": f"astronaut, {args.image} x {args.image} RGB",
        "tile": args.tile, "halo": model.descriptor.halo, "steps": args.steps, "methods": rows})
    print(f"{'method':32} {'seam raw':>9} {'seam final':>11} {'ghosting':>9} {'seconds':>8}")
    for name, row in rows.items():
        print(f"{name:32} {row['seam_raw']:9.3f} {row['seam_final']:11.3f} "
              f"{row['ghosting']:9.3f} {row['seconds']:8.2f}")


if __name__ == "__main__":
    main()
