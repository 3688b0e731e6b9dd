"""Adaptive per-tile compute on the real slide and scene: what it skips, saves and costs.

    python benchmarks/adaptive.py                          # both parts, docs/benchmarks/adaptive.json
    python benchmarks/adaptive.py --only whole-command     # only the CLI timing, merged into it

In process: for each input (the Aperio SVS and the 16-bit Landsat-8 GeoTIFF in
../shared/data), the same job runs twice in this process (``executor="local"``, span-x2,
tile 256): with the model on every tile, and with ``adaptive=True``. Reported: the fraction
of tiles that took bicubic, both wall times, and the adaptive output against the
full-model output (PSNR over the dtype's range, largest difference) over the whole image
and over the skipped tiles alone, which are found with the same difficulty test the
workers use.

Whole command (key ``whole_command``): the target "on a slide that is >= 80 % glass
(>= 36 tiles), ``--adaptive`` >= 2x faster than the full model, whole command". A
glass-dominated slide is mosaicked from the SVS's own level-0 tiles: a blob of tissue
tiles (ones the difficulty test calls hard) in the middle of a grid of glass tiles (ones
it calls easy), saved as a tiled TIFF. ``python -m tilewave.cli upscale`` then runs on it
as a subprocess, with and without ``--adaptive`` (Ray, default workers), alternately, and
each process is timed by the wall clock from start to exit: Ray's start, the ingest, the
tiles, the pyramid and the shutdown are all in the figure. The figure is the ratio of the
median full-model time to the median adaptive time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SVS = "cmu_small_region.svs"
INPUTS = {"Aperio SVS (uint8 RGB)": SVS,
          "Landsat-8 (uint16, nodata corners)": "landsat8_224078_rgb.tif"}
PARTS = ("in-process", "whole-command")
#: The whole-command target: glass fraction, tiles and speed-up it is stated for.
TARGET_GLASS, TARGET_TILES, TARGET_RATIO = 0.80, 36, 2.0


def _psnr(a: np.ndarray, b: np.ndarray, top: float) -> float | None:
    """PSNR of ``b`` against ``a`` over ``[0, top]``; None where they are identical."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return None if mse == 0 else 10 * math.log10(top ** 2 / mse)


def measure(path: Path, model: str, tile: int, work: Path) -> dict:
    """One input upscaled in this process with the model on every tile and adaptively,
    under ``work``: the tiles skipped, both times, and how far the outputs differ."""
    import zarr

    import tilewave
    from tilewave.pipeline.difficulty import assess
    from tilewave.storage.inputs import lazy_pixels, open_input

    runs = {}
    for name, adaptive in (("full", False), ("adaptive", True)):
        out = work / f"{path.stem}_{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        report = tilewave.upscale(str(path), str(out), model=model, tile=tile, executor="local",
                                  progress=False, adaptive=adaptive)
        runs[name] = {"seconds": round(time.perf_counter() - t0, 1), "tiles": report.tiles,
                      "tiles_cheap": report.tiles_cheap, "out": out, "scale": report.scale}
    full = zarr.open_array(str(runs["full"]["out"]), path="0")[:]
    fast = zarr.open_array(str(runs["adaptive"]["out"]), path="0")[:]
    image = open_input(str(path))
    pixels = np.asarray(lazy_pixels(image, 512))
    top = float(np.iinfo(full.dtype).max)
    s = runs["full"]["scale"]
    skipped = np.zeros(full.shape[1:], bool)
    for y in range(0, image.height, tile):
        for x in range(0, image.width, tile):
            if assess(pixels[:, y:y + tile, x:x + tile], image.metadata.get("nodata")).easy:
                skipped[y * s:(y + tile) * s, x * s:(x + tile) * s] = True
    diff = np.abs(full.astype(np.int64) - fast.astype(np.int64))
    return {
        "input": path.name, "model": model, "tile": tile,
        "tiles": runs["full"]["tiles"], "tiles_skipped": runs["adaptive"]["tiles_cheap"],
        "fraction_skipped": round(runs["adaptive"]["tiles_cheap"] / runs["full"]["tiles"], 3),
        "seconds_full": runs["full"]["seconds"], "seconds_adaptive": runs["adaptive"]["seconds"],
        "time_saved": round(1 - runs["adaptive"]["seconds"] / runs["full"]["seconds"], 3),
        "psnr_vs_full": _psnr(full, fast, top), "max_diff_vs_full": int(diff.max()),
        "psnr_vs_full_skipped_tiles": _psnr(full[:, skipped], fast[:, skipped], top)
        if skipped.any() else None,
        "max_diff_skipped_tiles": int(diff[:, skipped].max()) if skipped.any() else 0,
        "max_diff_model_tiles": int(diff[:, ~skipped].max()) if (~skipped).any() else 0,
    }


def in_process(model: str, tile: int) -> list[dict[str, Any]]:
    """The in-process comparison on each input that is present, one record per input."""
    work = Path(tempfile.mkdtemp(prefix="tilewave-adaptive-"))
    results = []
    try:
        for label, name in INPUTS.items():
            if not (SHARED / name).exists():
                print(f"skipping {label}: {SHARED / name} is not here")
                continue
            rec = {"label": label, **measure(SHARED / name, model, tile, work)}
            results.append(rec)
            print(json.dumps(rec), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


# --------------------------------------------------------------------------- whole command


def slide_tiles(svs: Path, tile: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The whole ``tile`` x ``tile`` tiles of the slide's level 0, ``(y, x, c)``, split
    into ``(easy, hard)`` by the test the workers apply to each tile's core."""
    import tifffile

    from tilewave.pipeline.difficulty import assess

    level0 = tifffile.imread(svs, series=0, level=0)
    if level0.ndim == 2:
        level0 = level0[..., None]
    easy, hard = [], []
    # Partial tiles at the right and bottom edges are left out: every mosaic cell is a
    # whole tile, so that a tile's core in the mosaic is exactly the tile assessed here.
    for y in range(0, level0.shape[0] - tile + 1, tile):
        for x in range(0, level0.shape[1] - tile + 1, tile):
            t = level0[y:y + tile, x:x + tile]
            (easy if assess(np.moveaxis(t, -1, 0), nodata=None).easy else hard).append(t)
    return easy, hard


def tissue_cells(grid: int, count: int) -> list[tuple[int, int]]:
    """The ``count`` cells of a ``grid`` x ``grid`` layout nearest its centre.

    Any cell but the nearest has a neighbour strictly nearer the centre, so every prefix
    of the cells sorted by distance is one 4-connected blob, as tissue on a slide is.
    """
    c = (grid - 1) / 2
    cells = sorted(((r, q) for r in range(grid) for q in range(grid)),
                   key=lambda rc: ((rc[0] - c) ** 2 + (rc[1] - c) ** 2, rc))
    return cells[:count]


def build_slide(svs: Path, out: Path, grid: int, tissue: float, tile: int,
                seed: int) -> dict[str, Any]:
    """Write a ``grid`` x ``grid``-tile glass-dominated slide of the SVS's own pixels to
    ``out`` (tiled TIFF, deflate) and describe it.

    Tissue tiles are drawn from the slide's hard tiles, glass tiles from its easy ones,
    both with ``seed``; draws repeat tiles only when the slide has fewer than needed.
    """
    import tifffile

    easy, hard = slide_tiles(svs, tile)
    if not easy or not hard:
        raise SystemExit(f"{svs.name} has {len(easy)} easy and {len(hard)} hard whole tiles of "
                         f"{tile} px; a mosaic needs both")
    n = grid * grid
    n_tissue = min(n, max(1, round(n * tissue)))
    rng = np.random.default_rng(seed)
    tissue_at = set(tissue_cells(grid, n_tissue))
    tissue_pick = iter(rng.choice(len(hard), n_tissue, replace=n_tissue > len(hard)))
    glass_pick = iter(rng.choice(len(easy), n - n_tissue, replace=n - n_tissue > len(easy)))
    channels = easy[0].shape[-1]
    mosaic = np.empty((grid * tile, grid * tile, channels), easy[0].dtype)
    layout = np.zeros((grid, grid), bool)  # True where a tissue (hard) tile was placed
    for r in range(grid):
        for q in range(grid):
            layout[r, q] = (r, q) in tissue_at
            src = hard[next(tissue_pick)] if layout[r, q] else easy[next(glass_pick)]
            mosaic[r * tile:(r + 1) * tile, q * tile:(q + 1) * tile] = src
    tifffile.imwrite(out, mosaic, tile=(tile, tile), compression="zlib",
                     photometric="rgb" if channels == 3 else "minisblack")
    return {"grid": grid, "tiles": n, "tissue_tiles": n_tissue,
            "slide_easy_tiles": len(easy), "slide_hard_tiles": len(hard),
            "layout": ["".join("T" if t else "g" for t in row) for row in layout],
            "expected_easy": ~layout}


def glass_as_assessed(path: Path, tile: int) -> np.ndarray:
    """Per tile of the written slide, whether the difficulty test calls it easy, read
    back through tilewave's own input path, as ``tilewave info --difficulty`` does."""
    from tilewave.pipeline.difficulty import difficulty_map
    from tilewave.storage.inputs import lazy_pixels, open_input

    image = open_input(str(path))
    easy, _ = difficulty_map(lazy_pixels(image, tile), tile, image.metadata.get("nodata"))
    return easy


def run_cli(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, dict[str, Any]]:
    """Run one command to its exit: wall seconds and the report it printed as JSON."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    # --json prints the report as one line; anything else on stdout (a library's notice)
    # is not part of it.
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return wall, json.loads(line)
    raise SystemExit(f"{shlex.join(argv)} printed no JSON report:\n{done.stdout[-3000:]}")


def _shown(argv: list[str]) -> str:
    """A command line as a user would type it."""
    return shlex.join(["python", *argv[1:]])


def whole_command(svs: Path, model: str, tile: int, grid: int, tissue: float, repeat: int,
                  seed: int, timeout: float) -> dict[str, Any]:
    """Time the CLI with and without ``--adaptive`` on a glass-dominated mosaic of ``svs``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measure import machine_info, machine_line

    work = Path(tempfile.mkdtemp(prefix="tilewave-adaptive-cli-"))
    # Ray's unix sockets live under RAY_TMPDIR and their paths may not exceed 107 bytes:
    # a short folder of its own, fresh so that no earlier session's files are in it.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-adapt-", dir="/tmp"))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(ray_tmp))
    try:
        slide = work / "glass_slide.tif"
        built = build_slide(svs, slide, grid, tissue, tile, seed)
        assessed = glass_as_assessed(slide, tile)
        expected = built.pop("expected_easy")
        glass = float(assessed.mean())
        print(f"slide: {grid} x {grid} tiles of {tile} px, {built['tissue_tiles']} tissue, "
              f"{glass:.1%} glass as assessed; layout " + " ".join(built["layout"]), flush=True)
        assert assessed.shape == expected.shape and (assessed == expected).all(), \
            f"the difficulty test sees the mosaic differently from its layout:\n{assessed}"
        assert glass >= TARGET_GLASS, f"the slide is {glass:.1%} glass, under {TARGET_GLASS:.0%}"
        base = [sys.executable, "-m", "tilewave.cli", "upscale", str(slide), "",
                "--model", model, "--tile", str(tile), "--quiet", "--json", "--overwrite"]
        commands = {}
        for name, extra in (("full", []), ("adaptive", ["--adaptive"])):
            argv = list(base)
            argv[5] = str(work / f"out_{name}.zarr")
            commands[name] = argv + extra
        runs: dict[str, list[dict[str, Any]]] = {"full": [], "adaptive": []}
        for i in range(repeat):
            # The order swaps every round, so that neither command is always the one
            # that runs first, on colder caches.
            for name in ("full", "adaptive") if i % 2 == 0 else ("adaptive", "full"):
                wall, report = run_cli(commands[name], env, timeout)
                rec = {"wall_seconds": round(wall, 2),
                       **{k: report.get(k) for k in ("tiles", "tiles_cheap", "seconds",
                                                     "tile_seconds", "pyramid_seconds",
                                                     "workers", "processes")}}
                runs[name].append(rec)
                print(f"  round {i + 1} {name:8s} {json.dumps(rec)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    walls = {k: [r["wall_seconds"] for r in v] for k, v in runs.items()}
    median = {k: statistics.median(v) for k, v in walls.items()}
    best = {k: min(v) for k, v in walls.items()}
    ratio = median["full"] / median["adaptive"]
    tiles = runs["full"][0]["tiles"]
    cheap = runs["adaptive"][0]["tiles_cheap"]
    # The target is stated for a slide of at least this size and glass fraction; on a
    # smaller one (a quick check) the ratio is reported but not judged.
    applies = tiles >= TARGET_TILES and glass >= TARGET_GLASS
    machine = machine_info()
    return {
        "target": f"on a slide >= {TARGET_GLASS:.0%} glass (>= {TARGET_TILES} tiles), "
                  f"--adaptive >= {TARGET_RATIO:g}x faster than the full model, whole command",
        "goal": f">= {TARGET_RATIO:g}",
        "ratio": round(ratio, 3),
        "ratio_best": round(best["full"] / best["adaptive"], 3),
        "met": ratio >= TARGET_RATIO if applies else None,
        "target_applies": applies,
        "glass_fraction": round(glass, 4),
        "tiles": tiles, "tiles_cheap": cheap,
        "slide": {"source": svs.name, "tile": tile, "seed": seed, "format": "tiled TIFF, deflate",
                  **built},
        "model": model,
        "seconds_median": median, "seconds_best": best, "repeat": repeat,
        "order": "alternating, full first in odd rounds, adaptive first in even rounds",
        "timing": "wall clock around each whole process, from start to exit",
        "commands": {k: _shown(v) for k, v in commands.items()},
        "env": {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": "a fresh /tmp/rt-adapt-* folder"},
        "runs": runs,
        "command": shlex.join(["python", "benchmarks/adaptive.py", *sys.argv[1:]]),
        "machine": machine, "machine_line": machine_line(machine),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="span-x2")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--json-out", "--json", dest="json_out",
                    default=str(REPO / "docs" / "benchmarks" / "adaptive.json"),
                    help="where the results go; with --only, the other part's results "
                    "already there are kept")
    ap.add_argument("--only", choices=PARTS, help="run one part (default: both)")
    wc = ap.add_argument_group("whole command")
    wc.add_argument("--grid", type=int, default=8, help="slide of GRID x GRID tiles (default: 8)")
    wc.add_argument("--tissue", type=float, default=0.125,
                    help="fraction of the tiles that are tissue (default: 0.125)")
    wc.add_argument("--repeat", type=int, default=2, help="runs of each command (default: 2)")
    wc.add_argument("--seed", type=int, default=0, help="seed of the tiles drawn (default: 0)")
    wc.add_argument("--timeout", type=float, default=3600, help="seconds one command may take")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipping: {SHARED} is not here")
        return 0
    out = Path(args.json_out)
    record: dict[str, Any] = {}
    if args.only and out.exists():
        record = json.loads(out.read_text())
    measured = False
    if args.only != "whole-command":
        import torch

        record.update({"command": shlex.join(["python", "benchmarks/adaptive.py", *sys.argv[1:]]),
                       "machine": f"{platform.machine()}, torch {torch.__version__}, "
                                  f"{torch.get_num_threads()} threads, one process",
                       "results": in_process(args.model, args.tile)})
        measured = bool(record["results"])
    if args.only != "in-process":
        if (SHARED / SVS).exists():
            whole = whole_command(SHARED / SVS, args.model, args.tile, args.grid, args.tissue,
                                  args.repeat, args.seed, args.timeout)
            record["whole_command"] = whole
            measured = True
            met = {True: "met", False: "NOT met", None: "not judged at this size"}[whole["met"]]
            print(f"whole command: full {whole['seconds_median']['full']:.1f} s, adaptive "
                  f"{whole['seconds_median']['adaptive']:.1f} s (medians), ratio "
                  f"{whole['ratio']:.2f} (goal {whole['goal']}: {met})")
        else:
            print(f"skipping the whole command: {SHARED / SVS} is not here")
    if not measured:
        print("nothing measured; nothing written")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
