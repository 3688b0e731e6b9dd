"""Peak memory and time of building the pyramid of, and exporting, a 1-gigapixel output.

    python benchmarks/export.py            # 32768 x 32768 RGB (1.07 GP), writes
                                           # docs/benchmarks/export.json
    python benchmarks/export.py --side 8192  # a quick 67 MP run

The output is an OME-Zarr image of the kind `tilewave upscale` writes (uint8 RGB, chunks
of 512, zstd), filled with scikit-image's astronaut photo repeated, so compression sees
real image content. Two steps are measured, each as its own process sampled by
``benchmarks/measure.py``'s sampler (summed PSS and RSS of the process tree, every 0.1 s):
adding the pyramid levels (a dask pass per level, ``benchmarks/dask_pyramid.py``), and
``tilewave export`` to a slide TIFF (JPEG, quality 90) and to an OME-TIFF (deflate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from measure import measure_command  # noqa: E402

CHUNK = 512


def make_output(path: str, side: int) -> None:
    """A finished tilewave-style OME-Zarr output of ``side`` x ``side`` RGB pixels, level 0 only."""
    import dask.array as da
    from skimage import data

    from tilewave.storage.ome import create_output

    photo = data.astronaut()[:CHUNK, :CHUNK].transpose(2, 0, 1).copy()
    create_output(path, (3, side, side), np.dtype(np.uint8), (CHUNK, CHUNK), "bench",
                  {"mpp": [0.25, 0.25], "objective_power": 40.0})
    pixels = da.map_blocks(lambda block_info=None: photo.copy(), dtype=np.uint8,
                           chunks=((3,), (CHUNK,) * (side // CHUNK), (CHUNK,) * (side // CHUNK)))
    import zarr

    pixels.store(zarr.open_array(f"{path}/0", mode="r+"), lock=False)


def measured(cmd: list[str]) -> dict[str, float]:
    m = measure_command(cmd)
    return {"seconds": round(m.wall_s, 1), "peak_pss_mib": round(m.peak_pss_bytes / 2**20, 1),
            "peak_rss_mib": round(m.peak_rss_sum_bytes / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=32768, help="output side in pixels (multiple of 512)")
    ap.add_argument("--workdir", help="where to put the output (default: a temporary folder)")
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "export.json"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tilewave-export-"))
    zarr_path = str(work / "bench.ome.zarr")
    shutil.rmtree(zarr_path, ignore_errors=True)
    t0 = time.perf_counter()
    make_output(zarr_path, args.side)
    record: dict = {"command": "python benchmarks/export.py " + " ".join(sys.argv[1:]),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                               f"{round(__import__('psutil').virtual_memory().total / 2**30)} GiB, "
                               f"Python {platform.python_version()}",
                    "side": args.side, "megapixels": round(args.side ** 2 / 1e6, 1),
                    "make_seconds": round(time.perf_counter() - t0, 1)}
    py = sys.executable
    record["pyramid"] = measured([py, str(HERE / "dask_pyramid.py"), zarr_path])
    for name, extra in (("slide_jpeg", ["--format", "slide", "--compression", "jpeg"]),
                        ("ome_deflate", ["--format", "ome", "--compression", "deflate"])):
        dest = str(work / f"bench_{name}.tif")
        record[name] = measured([py, "-m", "tilewave.cli", "export", zarr_path, dest, "--quiet",
                                 "--overwrite", *extra])
        record[name]["file_mib"] = round(os.path.getsize(dest) / 2**20, 1)
        os.remove(dest)
        print(name, record[name], flush=True)
    print("pyramid", record["pyramid"])
    shutil.rmtree(zarr_path, ignore_errors=True)
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
