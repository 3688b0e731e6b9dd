"""How long the command line takes to answer: ``--version``, ``--help``, ``models``, ``info``
and each kind of refused input, every one a fresh ``python -m tilewave.cli`` process.

    python benchmarks/cli_latency.py            # writes docs/benchmarks/cli_latency.json

Target: every refusal in the README's list answers in at most 1 s of wall time, with one
line and exit code 2, before Ray starts or anything is written; ``--version`` in at most
0.5 s. Each command runs ``--repeats`` times (default 3); the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "cli_latency.json"


def _inputs(root: Path) -> dict[str, str]:
    """Small real files: a PNG, a text file named .tif, a truncated and an int32 TIFF."""
    import imagecodecs
    import tifffile
    from skimage import data

    photo = data.astronaut()[:96, :128]
    png = root / "in.png"
    png.write_bytes(imagecodecs.png_encode(photo))
    text = root / "notes.tif"
    text.write_text("not an image\n")
    full = root / "full.tif"
    tifffile.imwrite(full, photo, tile=(16, 16), photometric="rgb")
    cut = root / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    wide = root / "int32.tif"
    tifffile.imwrite(wide, np.zeros((40, 50), np.int32))
    a_file = root / "a-file"
    a_file.write_text("a user's file\n")
    existing = root / "exists.zarr"
    subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", str(png), str(existing),
                    "--local", "--quiet"], check=True)
    return {"png": str(png), "text": str(text), "cut": str(cut), "int32": str(wide),
            "file": str(a_file), "existing": str(existing), "root": str(root)}


def commands(f: dict[str, str]) -> dict[str, list[str]]:
    out = os.path.join(f["root"], "out.zarr")
    return {
        "--version": ["--version"],
        "--help": ["--help"],
        "models": ["models"],
        "info PNG": ["info", f["png"]],
        "missing input": ["upscale", f["root"] + "/missing.tif", out],
        "not an image": ["upscale", f["text"], out],
        "truncated TIFF": ["upscale", f["cut"], out],
        "unsupported pixel type": ["upscale", f["int32"], out],
        "unknown model": ["upscale", f["png"], out, "--model", "spam-x2"],
        "mode the model lacks": ["upscale", f["png"], out, "--mode", "context"],
        "scale the model lacks": ["upscale", f["png"], out, "--model", "span-x2", "--scale", "3"],
        "missing weights file": ["upscale", f["png"], out, "--model", f["root"] + "/absent.pth"],
        "output exists": ["upscale", f["png"], f["existing"]],
        "resume, other settings": ["upscale", f["png"], f["existing"], "--resume", "--tile", "32"],
        "output is the input": ["upscale", f["png"], f["png"], "--overwrite"],
        "output under /proc": ["upscale", f["png"], "/proc/out.zarr"],
        "output inside a file": ["upscale", f["png"], f["file"] + "/out.zarr"],
        "more workers than CPUs": ["upscale", f["png"], out, "--workers", "64"],
        "nothing at --address": ["upscale", f["png"], out, "--address", "127.0.0.1:1"],
    }


def measure(args: list[str], repeats: int) -> dict[str, object]:
    times, last = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = subprocess.run([sys.executable, "-m", "tilewave.cli", *args], capture_output=True,
                              text=True, timeout=300)
        times.append(time.perf_counter() - t0)
    assert last is not None
    return {"seconds": round(statistics.median(times), 3), "exit": last.returncode,
            "stderr_lines": len(last.stderr.strip().splitlines()),
            "message": last.stderr.strip().splitlines()[0][:160] if last.stderr.strip() else ""}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", type=Path, default=OUT)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = _inputs(Path(tmp))
        rows = {name: measure(cmd, args.repeats) for name, cmd in commands(files).items()}
    for name, row in rows.items():
        print(f"{name:<26} {row['seconds']:6.2f} s  exit {row['exit']}  "
              f"{row['stderr_lines']} line(s)  {row['message'][:70]}")
    record = {"command": "python benchmarks/cli_latency.py", "repeats": args.repeats,
              "machine": f"{os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}",
              "results": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
