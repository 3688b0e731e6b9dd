"""How fast tilewave copies big striped TIFFs into its Zarr working copy, against
tifffile decoding the same file whole, and how its memory depends on the image height.

Four RGB uint8 TIFFs of a mosaic of scikit-image's astronaut photograph (its lowest 3
bits scrambled, see :func:`mosaic_bands`) are written to a
scratch folder (removed afterwards unless ``--keep``): a single-strip uncompressed one
and a deflate one of 16 rows per strip, each at the full size (default 20000 x 20000)
and at half the height (20000 wide, 10000 high). For each, in its own process:

``tifffile``
    ``tifffile.imread(path)``: the whole file decoded into one array;
``tilewave``
    ``tilewave.storage.ingest.ingest(open_input(path), dest, chunk=512, progress=False)``.

Rates are MB (10**6 bytes) of decoded pixels per second, timed inside the process
(imports excluded), the fastest of ``--repeat`` reads, alternating between the two. Memory is the peak summed PSS of each process, sampled about every
0.1 s (see ``benchmarks/measure.py``). Files are read right after they are written, so
both readers find them in the page cache.

    python benchmarks/ingest.py                         # 20000 x 20000, and 20000 x 10000
    python benchmarks/ingest.py --width 8000 --height 8000 --json-out /tmp/i.json --md-out /tmp/i.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, machine_info, machine_line, measure_command  # noqa: E402
from memory import _astronaut_tiles  # noqa: E402

DEFAULT_JSON_OUT = REPO / "docs" / "benchmarks" / "ingest.json"
DEFAULT_MD_OUT = REPO / "docs" / "benchmarks" / "ingest.md"
CHUNK = 512
MB = 10**6
MIB = 2**20
#: name -> (description, rows per strip (None: one strip), compression)
FILES: dict[str, tuple[str, int | None, str | None]] = {
    "single-strip": ("uncompressed, one strip", None, None),
    "deflate-16": ("deflate, 16 rows per strip", 16, "zlib"),
}
#: Targets: the ingest rate against tifffile's, and the full-height peak against the half.
MIN_RATIO = 0.5
MAX_HEIGHT_GROWTH = 1.15


# --------------------------------------------------------------------------- inputs


def mosaic_bands(height: int, width: int, rows: int = CHUNK) -> Iterator[np.ndarray]:
    """``(rows, width, 3)`` bands of the astronaut mosaic, top to bottom, with the lowest
    3 bits of every sample scrambled: without it deflate finds the photo's 512-pixel
    repeat in each row and compresses the file 36 times, far more than any real image."""
    rng = np.random.default_rng(0)

    def noisy(band: np.ndarray) -> np.ndarray:
        band ^= rng.integers(0, 8, band.shape, dtype=np.uint8)
        return band

    band: np.ndarray | None = None
    for _y, x, block in _astronaut_tiles(height, rows, width):
        if x == 0:
            if band is not None:
                yield noisy(band)
            band = np.empty((block.shape[1], width, 3), np.uint8)
        assert band is not None
        band[:, x:x + block.shape[2]] = block.transpose(1, 2, 0)
    if band is not None:
        yield noisy(band)


def write_input(path: Path, kind: str, height: int, width: int) -> None:
    """Write the ``kind`` TIFF of ``height`` x ``width`` pixels, a band at a time."""
    import imagecodecs
    import tifffile

    _, rows_per_strip, compression = FILES[kind]
    if compression is None:
        out = tifffile.memmap(path, shape=(height, width, 3), dtype="uint8", photometric="rgb")
        y = 0
        for band in mosaic_bands(height, width):
            out[y:y + band.shape[0]] = band
            y += band.shape[0]
        out.flush()
        del out
        return
    assert rows_per_strip is not None

    def strips() -> Iterator[bytes]:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for band in mosaic_bands(height, width, rows_per_strip * 32):
                parts = [band[y:y + rows_per_strip].tobytes() for y in range(0, band.shape[0], rows_per_strip)]
                yield from pool.map(lambda b: imagecodecs.zlib_encode(b, level=6), parts)

    tifffile.imwrite(path, strips(), shape=(height, width, 3), dtype="uint8", photometric="rgb",
                     rowsperstrip=rows_per_strip, compression=compression)


# --------------------------------------------------------------------------- children


def child(argv: Sequence[str]) -> None:
    """``imread PATH`` or ``ingest PATH DEST CHUNK``: time one read, print it as JSON."""
    import tifffile

    from tilewave.storage.ingest import ingest
    from tilewave.storage.inputs import open_input

    what, path = argv[0], argv[1]
    began = time.perf_counter()
    if what == "imread":
        nbytes = tifffile.imread(path).nbytes
    else:
        image = open_input(path)
        ingest(image, argv[2], chunk=int(argv[3]), progress=False)
        nbytes = int(np.prod(image.shape)) * image.dtype.itemsize
    print(json.dumps({"seconds": time.perf_counter() - began, "bytes": nbytes}))


def measure(args: list[str], interval: float) -> dict[str, Any]:
    """Run one child under the memory sampler; its time, rate and peak memory."""
    m = measure_command([sys.executable, __file__, "--child", *args], interval=interval)
    seconds, nbytes = m.report["seconds"], m.report["bytes"]
    return {"seconds": round(seconds, 3), "mb_per_s": round(nbytes / seconds / MB, 1),
            "peak_pss_mib": round(m.peak_pss_bytes / MIB, 1),
            "peak_rss_mib": round(m.peak_rss_sum_bytes / MIB, 1), "wall_s": round(m.wall_s, 2),
            # Other work on the machine slows both readers, and not equally.
            "load_before": round(m.load_before, 2)}


def best(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``tries``, with every try's rate and the highest peak of them all."""
    fastest = dict(max(tries, key=lambda t: t["mb_per_s"]))
    fastest["tries_mb_per_s"] = [t["mb_per_s"] for t in tries]
    fastest["peak_pss_mib"] = max(t["peak_pss_mib"] for t in tries)
    fastest["peak_rss_mib"] = max(t["peak_rss_mib"] for t in tries)
    return fastest


# --------------------------------------------------------------------------- report


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["runs"]
    lines = [
        "# Ingest of striped TIFFs",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine_line']}",
        "",
        f"Rates are MB (10^6 bytes) of decoded pixels per second, the fastest of "
        f"{payload['repeat']} reads by each (alternating); memory is the highest peak PSS of the "
        "process over them. tifffile decodes the whole file into one array (`tifffile.imread`); "
        f"tilewave copies it into a Zarr v3 array of {CHUNK} x {CHUNK} chunks "
        "(`tilewave.storage.ingest.ingest`).",
        "",
        "Pixels: a mosaic of scikit-image's astronaut photograph with the lowest 3 bits of "
        "each sample scrambled (`mosaic_bands`).",
        "",
        "| file | size (w x h) | decoded MB | file MB | tifffile MB/s | tilewave MB/s | ratio "
        "| tifffile peak MiB | tilewave peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['description']} | {r['width']} x {r['height']} | {r['decoded_bytes'] / MB:,.0f} "
            f"| {r['file_bytes'] / MB:,.0f} "
            f"| {r['tifffile']['mb_per_s']:,.0f} | {r['tilewave']['mb_per_s']:,.0f} | {r['ratio']:.2f} "
            f"| {r['tifffile']['peak_pss_mib']:,.0f} | {r['tilewave']['peak_pss_mib']:,.0f} |")
    lines += ["", f"Targets: tilewave at least {MIN_RATIO:.0%} of tifffile's rate; tilewave's "
              f"full-height peak at most {MAX_HEIGHT_GROWTH}x its half-height peak.", ""]
    for kind, t in payload["targets"].items():
        lines.append(f"- {FILES[kind][0]}: rate ratios {', '.join(f'{v:.2f}' for v in t['ratios'])} "
                     f"({'met' if t['rate_met'] else 'not met'}); full / half height peak "
                     f"{t['height_growth']:.2f} ({'met' if t['memory_met'] else 'not met'})")
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Ingest rate and memory of big striped TIFFs "
                                            "against tifffile's whole-file decode.")
    p.add_argument("--width", type=int, default=20000)
    p.add_argument("--height", type=int, default=20000,
                   help="full height; the half-height files are half this (default: 20000)")
    p.add_argument("--files", nargs="+", choices=list(FILES), default=list(FILES))
    p.add_argument("--chunk", type=int, default=CHUNK, help="ingest chunk (default: 512)")
    p.add_argument("--repeat", type=int, default=3,
                   help="reads of each file by each reader; the fastest counts (default: 3)")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                   help="folder for the scratch folder of inputs and outputs (default: /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples")
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT)
    p.add_argument("--md-out", type=Path, default=DEFAULT_MD_OUT)
    return p.parse_args(argv)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="tilewave-ingest-bench-", dir=args.scratch))
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        for kind in args.files:
            for height in (args.height, args.height // 2):
                path = scratch / f"{kind}_{args.width}x{height}.tif"
                _progress(f"[{kind} {args.width} x {height}] writing ...")
                write_input(path, kind, height, args.width)
                run: dict[str, Any] = {"file": kind, "description": FILES[kind][0],
                                       "width": args.width, "height": height,
                                       "decoded_bytes": args.width * height * 3,
                                       "file_bytes": path.stat().st_size}
                dest = scratch / "work.zarr"
                tries: dict[str, list[dict[str, Any]]] = {"tifffile": [], "tilewave": []}
                # Alternated, so that other load on the machine weighs on both alike.
                for _ in range(args.repeat):
                    tries["tifffile"].append(measure(["imread", str(path)], args.interval))
                    tries["tilewave"].append(measure(["ingest", str(path), str(dest), str(args.chunk)],
                                                     args.interval))
                    shutil.rmtree(dest, ignore_errors=True)
                path.unlink()
                for reader, measured in tries.items():
                    run[reader] = best(measured)
                run["ratio"] = round(run["tilewave"]["mb_per_s"] / run["tifffile"]["mb_per_s"], 3)
                runs.append(run)
                _progress(f"[{kind} {args.width} x {height}] tifffile {run['tifffile']['mb_per_s']} "
                          f"MB/s, tilewave {run['tilewave']['mb_per_s']} MB/s (ratio {run['ratio']}), "
                          f"tilewave peak PSS {run['tilewave']['peak_pss_mib']} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    targets = {}
    for kind in args.files:
        full, half = (next(r for r in runs if r["file"] == kind and r["height"] == h)
                      for h in (args.height, args.height // 2))
        growth = full["tilewave"]["peak_pss_mib"] / half["tilewave"]["peak_pss_mib"]
        targets[kind] = {"ratios": [full["ratio"], half["ratio"]],
                         "rate_met": min(full["ratio"], half["ratio"]) >= MIN_RATIO,
                         "height_growth": round(growth, 3),
                         "memory_met": growth <= MAX_HEIGHT_GROWTH}
    machine = machine_info()
    payload = {
        "benchmark": "ingest",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", os.path.relpath(__file__, REPO),
                               *(sys.argv[1:] if argv is None else argv)]),
        "method": "rates: decoded bytes over the seconds of the read inside its own process; "
                  f"memory: peak over samples every ~{args.interval:g} s of the process's PSS",
        "units": {"rate": "MB/s, MB = 10**6 bytes", "memory": "MiB"},
        "chunk": args.chunk,
        "repeat": args.repeat,
        "targets_definition": {"min_ratio": MIN_RATIO, "max_height_growth": MAX_HEIGHT_GROWTH},
        "machine": machine,
        "machine_line": machine_line(machine),
        "total_seconds": round(time.perf_counter() - began, 1),
        "runs": runs,
        "targets": targets,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(payload)
    args.md_out.write_text(table)
    print(table)
    _progress(f"total {payload['total_seconds']:.0f} s; wrote {args.json_out} and {args.md_out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
