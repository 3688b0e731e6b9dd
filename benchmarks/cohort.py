"""What each extra input of a cohort costs: ``tilewave upscale IN... --output-dir DIR``
with 1 and with 16 small inputs (256 x 256 crops of scikit-image's astronaut), on a fresh
local Ray instance (``--executor auto``: where the command runs by default), side by side with running the same 16 inputs as 16 commands; then a
cohort of the shared real data (the Aperio slide, the H&E image, the Landsat scene).

    python benchmarks/cohort.py            # docs/benchmarks/cohort.{json,md}
    python benchmarks/cohort.py --quick    # 4 inputs, bicubic only
    python benchmarks/cohort.py --before ../old-checkout   # and an older tilewave, side by side
    python benchmarks/cohort.py --executor auto --out DIR  # the default executor

Per extra input = (wall of 16 inputs - wall of 1 input) / 15, each a fresh process;
the target is at most 0.5 s for span-x2 and bicubic. Each cohort runs ``--repeats``
times (default 2) and the fastest is kept (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, last_json_object, machine_info, machine_line  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
SHARED = REPO.parent / "shared" / "data"
SHARED_FILES = ("cmu_small_region.svs", "he_target_image.png", "landsat8_224078_rgb.tif")


def _crops(folder: Path, count: int) -> list[str]:
    """``count`` different 256 x 256 PNG crops of a real photo."""
    import imagecodecs
    from skimage import data

    photo = data.astronaut()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        y, x = (i // 4) * 64, (i % 4) * 64
        path = folder / f"crop{i:02d}.png"
        path.write_bytes(imagecodecs.png_encode(photo[y : y + 256, x : x + 256]))
        paths.append(str(path))
    return paths


def _run(args: list[str], code: Path = REPO, executor: str = "ray") -> tuple[float, dict[str, Any]]:
    """Wall seconds of one ``tilewave upscale ... --json`` process of the tilewave in
    ``code``, and its report. Run outside the checkout: ``python -m`` puts the working
    folder first on the path, before ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    # One executor for every run (on Ray by default, as --before's older tilewave runs
    # everything there), so that the cohort's cost per input is measured against it.
    done = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", *args, "--json",
                           "--quiet", "--executor", executor], capture_output=True, text=True,
                          check=False, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"tilewave upscale {' '.join(args)} failed: {done.stderr[-800:]}")
    return wall, last_json_object(done.stdout)


def _cohort(inputs: list[str], out: Path, model: str, code: Path = REPO,
            executor: str = "ray") -> dict[str, Any]:
    wall, report = _run([*inputs, "--output-dir", str(out), "--model", model, "--overwrite"], code,
                        executor)
    return {"wall_s": wall, "inputs": len(inputs), "failed": report["failed"],
            "per_input_s": [o["seconds"] for o in report["inputs"]],
            "tile_s": [o["report"]["tile_seconds"] for o in report["inputs"] if o["report"]]}


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


def _separate(inputs: list[str], out: Path, model: str, executor: str) -> float:
    start = time.perf_counter()
    for i, path in enumerate(inputs):
        _run([path, str(out / f"alone{i:02d}.zarr"), "--model", model, "--overwrite"],
             executor=executor)
    return time.perf_counter() - start


def measure(quick: bool, repeats: int, before: Path | None = None,
            executor: str = "ray") -> dict[str, Any]:
    models = ["bicubic"] if quick else ["bicubic", "span-x2"]
    count = 4 if quick else 16
    versions = {**({"before": before.resolve()} if before else {}), "this": REPO}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tw-cohort-") as tmp:
        root = Path(tmp)
        inputs = _crops(root / "in", count)
        for model in models:
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {
                (v, n): [] for v in versions for n in (1, count)}
            for _ in range(repeats):  # in turn, so that load affects every one alike
                for (version, n), done in runs.items():
                    done.append(_cohort(inputs[:n], root / f"{version}{n}", model, versions[version],
                                        executor))
            separate = None if quick else _separate(inputs, root / "alone", model, executor)
            for version in versions:
                one, many = _fastest(runs[(version, 1)]), _fastest(runs[(version, count)])
                rows.append({"model": model, "version": version, "one": one, "many": many,
                             "separate_wall_s": separate if version == "this" else None,
                             "per_extra_input_s": (many["wall_s"] - one["wall_s"]) / (count - 1)})
        real = None
        if not quick and all((SHARED / f).exists() for f in SHARED_FILES):
            real = {version: _cohort([str(SHARED / f) for f in SHARED_FILES], root / f"real{version}",
                                     "span-x2", code, executor) for version, code in versions.items()}
    return {"command": "python benchmarks/cohort.py" + (" --quick" if quick else "")
            + (" --before OLD" if before else "")
            + (f" --executor {executor}" if executor != "ray" else ""),
            "machine": machine_info(), "inputs": count, "rows": rows, "shared_data": real}


def _table(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}` on {machine_line(result['machine'])}", "",
             f"| model | tilewave | 1 input, wall s | {result['inputs']} inputs, wall s | per extra "
             f"input, s | {result['inputs']} separate commands, wall s |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        separate = row["separate_wall_s"]
        lines.append(f"| {row['model']} | {row.get('version', 'this')} | {row['one']['wall_s']:.1f} "
                     f"| {row['many']['wall_s']:.1f} "
                     f"| {row['per_extra_input_s']:.2f} | "
                     f"{'' if separate is None else f'{separate:.1f}'} |")
    for version, real in (result["shared_data"] or {}).items():
        lines += ["", f"The shared slide, H&E image and Landsat scene with span-x2 in one cohort "
                      f"({version}): {real['wall_s']:.1f} s wall; per input "
                      + ", ".join(f"{s:.1f} s" for s in real["per_input_s"])
                      + " (their tiles: " + ", ".join(f"{s:.1f} s" for s in real["tile_s"]) + ")."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 inputs, bicubic, one repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="folder for cohort.{json,md}")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of an older tilewave, measured side by side")
    parser.add_argument("--executor", choices=("ray", "auto"), default="ray",
                        help="where every command runs its tiles (default: ray)")
    args = parser.parse_args()
    result = measure(args.quick, 1 if args.quick else args.repeats, args.before, args.executor)
    out = args.out or (Path(tempfile.gettempdir()) if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cohort.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "cohort.md").write_text(_table(result))
    print(_table(result))


if __name__ == "__main__":
    main()
