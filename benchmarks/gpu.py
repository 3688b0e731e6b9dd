"""A GPU check: five models through one GPU worker at several batches and both precisions,
with their output compared against the CPU's. Written to run the day a GPU is lent; it
has not run on one yet (``docs/gpu.md``).

    timeout 540 python benchmarks/gpu.py        # one GPU; budgeted for 8 minutes, not yet run
    python benchmarks/gpu.py --dry-run --out /tmp/gpu.json   # the same code on the CPU, ~1 min

Every configuration is a real ``tilewave.upscale(..., workers=1, batch=B)`` job on Ray
(one instance for the whole script, joined once, so jobs skip Ray's start): one GPU
worker process holding the model, fed ``B`` tiles at a time. Per model, per batch
(1, 4, 8) and per precision (fp16, fp32) it records

- ``tiles``, ``wall_s`` (the whole ``upscale`` call: the worker's start, the model's load
  and CUDA's initialisation included), ``job_s`` (the job's own ``Report.seconds``),
  ``tiles_per_s`` and ``output_megapixels_per_s`` (over ``job_s``);
- the GPU's memory (baseline before the job, peak during it) and utilisation (mean and
  peak), sampled by ``nvidia-smi`` every 200 ms in a background process: the worker's own
  ``torch.cuda.max_memory_allocated`` is not reachable from the driver;
- the output's agreement with the CPU's: the same model on the CPU (a separate process
  with no GPU visible, ``executor="local"``) upscales the input's top-left crop with
  enough margin, and the GPU output's same region is compared with it, as the largest
  difference in 8-bit levels against a tolerance per model and precision (``TOLERANCE``).

fp16 is what tilewave runs on a GPU for a model whose descriptor has ``supports_half``
(``tilewave/actors/worker.py``). tilewave has no switch yet to force fp32 on a GPU; this
script passes ``precision="fp32"`` when :class:`tilewave.options.Options` has a
``precision`` field (``--precision``), and otherwise records those
rows as ``unsupported``. Models without ``supports_half`` (uniba-x2, uniba-diff-x2) run in
fp32 whatever is asked: their fp16 rows are ``not_applicable``.

Sizes (``SIZES``) keep the whole script within 8 minutes: span-x2 on the full 16 MP
input (4096 x 4096, scikit-image's astronaut mirrored and tiled 8 x 8), the slower models
on its top-left crop (realesrgan-x4plus and uniba-x2 2048 x 2048, uniba-diff-x2 2048 x
2048 at 2 steps, the tiny SD x4 upscaler 1024 x 1024 at 4 steps). A time budget
(``--budget-s``: 400 s from the start by default) skips what would not fit, as
``skipped`` rows; every model runs batch 4 before any other batch. ``--dry-run`` runs the
same code on the CPU at a small size (batches 1 and 2, fp32), with every GPU field null,
and still writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tools"))

from measure import machine_info, machine_line  # noqa: E402

#: The tiny SD x4 upscaler's name in this script (the job's model is its folder).
SD_TINY = "sd-x4-tiny"
MODELS = ["span-x2", "realesrgan-x4plus", "uniba-x2", "uniba-diff-x2", SD_TINY]


@dataclasses.dataclass(frozen=True)
class Size:
    """How one model runs: input side, tile, sampler steps, and the side of the top-left
    region compared with the CPU."""

    side: int
    tile: int = 256
    steps: int | None = None
    compare: int = 256


#: On one GPU: within 8 minutes for the whole script (see the module's docstring).
SIZES = {
    "span-x2": Size(4096),
    "realesrgan-x4plus": Size(2048, compare=128),
    "uniba-x2": Size(2048),
    "uniba-diff-x2": Size(2048, steps=2),
    SD_TINY: Size(1024, steps=4),
}
#: ``--dry-run``: the same code on the CPU, small enough for about a minute in all.
DRY_SIZES = {
    "span-x2": Size(96, tile=48, compare=48),
    "realesrgan-x4plus": Size(32, tile=32, compare=32),
    "uniba-x2": Size(96, tile=48, compare=48),
    "uniba-diff-x2": Size(96, tile=48, steps=2, compare=48),
    SD_TINY: Size(32, tile=32, steps=2, compare=32),
}
BATCHES, DRY_BATCHES = (1, 4, 8), (1, 2)
DTYPES, DRY_DTYPES = ("fp16", "fp32"), ("fp32",)
#: The batch every model runs at first (the GPU default, in both precisions), so that a
#: short budget still covers every model.
FIRST_BATCH = 4

#: Largest allowed difference from the CPU's output, in 8-bit levels, per model and the
#: precision the GPU ran in. fp32 is not bit-for-bit fp32 on a GPU: PyTorch lets cuDNN
#: run float32 convolutions in TF32 by default (10-bit mantissa), hence 2 levels for the
#: convolutional models. uniba-diff-x2 compounds differences over its steps. The tiny SD
#: upscaler's random UNet makes differences louder (its output means nothing as an image),
#: so its difference is recorded, not judged (None). These are expectations: they have not
#: met a GPU yet.
TOLERANCE: dict[str, dict[str, int | None]] = {
    "span-x2": {"fp16": 3, "fp32": 2},
    "realesrgan-x4plus": {"fp16": 3, "fp32": 2},
    "uniba-x2": {"fp32": 2},
    "uniba-diff-x2": {"fp32": 3},
    SD_TINY: {"fp16": None, "fp32": None},
}
#: CPU against CPU (``--dry-run``): the same arithmetic, but the reference computes on
#: this process's threads and a Ray worker on one, and a float sum split differently can
#: flip a rounded pixel.
CPU_TOLERANCE = 1
#: The GPU fields of a row: null wherever no GPU was measured.
GPU_FIELDS = ("gpu_memory_baseline_mib", "gpu_memory_peak_mib", "gpu_memory_job_mib",
              "gpu_util_mean_pct", "gpu_util_peak_pct", "gpu_samples")


# --------------------------------------------------------------------------- inputs


def mosaic(side: int) -> np.ndarray:
    """A (side, side, 3) uint8 photo: scikit-image's astronaut tiled, every other copy
    mirrored so that neighbouring copies meet without a hard edge."""
    from skimage import data

    a = data.astronaut()
    row = np.concatenate([a, a[:, ::-1]], axis=1)
    block = np.concatenate([row, row[::-1]], axis=0)
    reps = -(-side // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, reps, 1))[:side, :side])


def write_tiff(path: Path, pixels: np.ndarray) -> str:
    import tifffile

    tile = (256, 256) if min(pixels.shape[:2]) >= 256 else None
    tifffile.imwrite(path, pixels, photometric="rgb", tile=tile)
    return str(path)


def describe(model: str, sd_folder: str | None) -> Any:
    """``model``'s descriptor (the tiny SD upscaler's from its folder)."""
    from tilewave.models import describe_model

    return describe_model(sd_folder if model == SD_TINY and sd_folder else model)


def margin(model: str, sd_folder: str | None) -> int:
    """Input pixels past the compared region that the CPU's crop keeps, so that the
    region's output does not see the crop's edge: the model's halo (for sd-x4 the reach of
    its region past its core), rounded up to whole blocks of 8, plus one block."""
    halo = describe(model, sd_folder).halo
    return -(-halo // 8) * 8 + 8


def context_model(model: str, sd_folder: str | None) -> bool:
    return describe(model, sd_folder).modes[0] == "context"


# --------------------------------------------------------------------------- jobs


def job_options(model: str, size: Size, sd_folder: str | None, **more: Any) -> dict[str, Any]:
    """The keywords of ``tilewave.upscale`` for ``model`` at ``size``."""
    options: dict[str, Any] = {"model": sd_folder if model == SD_TINY and sd_folder else model,
                               "tile": size.tile, "progress": False, "overwrite": True}
    if size.steps is not None:
        options["steps"] = size.steps
    return {**options, **more}


def read_region(output: str, side: int) -> np.ndarray:
    """The top-left ``side`` x ``side`` region of an OME-Zarr output's full resolution."""
    import zarr

    return np.asarray(zarr.open_array(f"{output}/0", mode="r")[:, :side, :side])


def reference_main(spec_path: str) -> int:
    """``--reference SPEC``: the CPU references, in this process (started with no GPU
    visible), with the local executor; writes their top-left regions as .npy files."""
    import tilewave

    spec = json.loads(Path(spec_path).read_text())
    timings = {}
    for ref in spec["references"]:
        t = time.perf_counter()
        report = tilewave.upscale(ref["input"], ref["output"], executor="local", **ref["options"])
        np.save(ref["region"], read_region(report.output, ref["region_side"]))
        shutil.rmtree(ref["output"], ignore_errors=True)
        timings[ref["model"]] = round(time.perf_counter() - t, 2)
    print(json.dumps({"reference_seconds": timings}))
    return 0


def run_references(plan: list[dict[str, Any]], work: Path) -> dict[str, float]:
    """The CPU references of every model, in one child process that sees no GPU."""
    spec = work / "references.json"
    spec.write_text(json.dumps({"references": plan}))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--reference", str(spec)],
                          env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"the CPU references failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["reference_seconds"]


# --------------------------------------------------------------------------- the GPU


class GpuSampler:
    """``nvidia-smi``'s memory and utilisation of every GPU, every ``interval_ms``, read
    in a background process while a job runs. Without ``nvidia-smi`` it records nothing."""

    QUERY = "--query-gpu=index,memory.used,utilization.gpu"

    def __init__(self, interval_ms: int = 200):
        self.exe = shutil.which("nvidia-smi")
        self.interval_ms = interval_ms
        self.samples: list[tuple[int, float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def baseline(self) -> float | None:
        """The memory used on the busiest GPU now (MiB), before a job."""
        if self.exe is None:
            return None
        out = subprocess.run([self.exe, self.QUERY, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        rows = [self._parse(line) for line in out.splitlines()]
        used = [r[1] for r in rows if r is not None]
        return max(used) if used else None

    @staticmethod
    def _parse(line: str) -> tuple[int, float, float] | None:
        parts = [p.strip() for p in line.split(",")]
        try:
            return int(parts[0]), float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            return None  # "[N/A]" or a partial line

    def __enter__(self) -> GpuSampler:
        self.samples = []
        if self.exe is not None:
            self._proc = subprocess.Popen(
                [self.exe, self.QUERY, "--format=csv,noheader,nounits", f"--loop-ms={self.interval_ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            row = self._parse(line)
            if row is not None:
                self.samples.append(row)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=10)
            self._proc = None

    def summary(self, baseline: float | None) -> dict[str, Any]:
        """Peak memory and utilisation of the GPU whose memory rose most (the worker's)."""
        if not self.samples:
            return dict.fromkeys(GPU_FIELDS)
        by_gpu: dict[int, list[tuple[float, float]]] = {}
        for index, memory, util in self.samples:
            by_gpu.setdefault(index, []).append((memory, util))
        rows = max(by_gpu.values(), key=lambda r: max(m for m, _ in r))
        peak = max(m for m, _ in rows)
        utils = [u for _, u in rows]
        return {"gpu_memory_baseline_mib": baseline, "gpu_memory_peak_mib": peak,
                "gpu_memory_job_mib": None if baseline is None else peak - baseline,
                "gpu_util_mean_pct": round(statistics.fmean(utils), 1),
                "gpu_util_peak_pct": max(utils), "gpu_samples": len(rows)}


def fp32_switch() -> str | None:
    """The ``tilewave.upscale`` keyword that forces fp32 on a GPU, where tilewave has one:
    ``precision`` (``"auto"`` or ``"fp32"``, ``--precision``)."""
    from tilewave.options import Options

    return "precision" if any(f.name == "precision" for f in dataclasses.fields(Options)) else None


# --------------------------------------------------------------------------- configurations


def compare(region: np.ndarray, reference: np.ndarray, tolerance: int | None) -> dict[str, Any]:
    diff = np.abs(region.astype(np.int16) - reference.astype(np.int16))
    worst = int(diff.max())
    return {"max_abs_diff_levels": worst, "mean_abs_diff_levels": round(float(diff.mean()), 4),
            "share_over_1_level": round(float((diff > 1).mean()), 6),
            "tolerance_levels": tolerance, "passed": None if tolerance is None else worst <= tolerance}


def row_for(model: str, size: Size, batch: int, dtype: str, device: str) -> dict[str, Any]:
    return {"model": model, "input": f"{size.side}x{size.side}", "tile": size.tile, "steps": size.steps,
            "batch": batch, "dtype": dtype, "device": device, "status": "pending", "note": None,
            "tiles": None, "wall_s": None, "job_s": None, "tiles_per_s": None,
            "output_megapixels_per_s": None, **dict.fromkeys(GPU_FIELDS), "equality": None}


def applicability(model: str, dtype: str, device: str, supports_half: bool,
                  switch: str | None) -> tuple[str | None, dict[str, Any]]:
    """(why a configuration does not run, or None; the extra keywords it runs with)."""
    if device == "cpu":
        return None, {}
    if dtype == "fp16" and not supports_half:
        return "not_applicable: the model has no half-precision path; it runs in fp32 on GPUs", {}
    if dtype == "fp32" and supports_half:
        if switch is None:
            return ("unsupported: this tilewave has no option to force fp32 on a GPU "
                    "(--precision)"), {}
        return None, {switch: "fp32"}
    return None, {}


def run_configuration(row: dict[str, Any], model: str, size: Size, job_input: str, output: Path,
                      options: dict[str, Any], reference: np.ndarray, tolerance: int | None,
                      sampler: GpuSampler | None) -> None:
    """Run one job and fill ``row`` with what it measured."""
    import tilewave

    baseline = sampler.baseline() if sampler else None
    began = time.perf_counter()
    if sampler is not None:
        with sampler:
            report = tilewave.upscale(job_input, str(output), workers=1, **options)
    else:
        report = tilewave.upscale(job_input, str(output), workers=1, **options)
    wall = time.perf_counter() - began
    region = read_region(report.output, reference.shape[-1])
    shutil.rmtree(output, ignore_errors=True)
    _, height, width = report.shape
    row.update(status="ok", tiles=report.tiles, wall_s=round(wall, 2), job_s=round(report.seconds, 2),
               tiles_per_s=round(report.tiles / report.seconds, 2),
               output_megapixels_per_s=round(height * width / 1e6 / report.seconds, 2),
               equality={"region": f"top-left {reference.shape[-1]}x{reference.shape[-2]} output pixels",
                         "reference": "cpu", **compare(region, reference, tolerance)})
    if sampler is not None:
        row.update(sampler.summary(baseline))


def order(models: list[str], batches: tuple[int, ...], dtypes: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """Every configuration, each model's at ``FIRST_BATCH`` before any other."""
    every = [(m, b, d) for m in models for b in batches for d in dtypes]
    first = [c for c in every if c[1] == FIRST_BATCH]
    return first + [c for c in every if c not in first]


# --------------------------------------------------------------------------- main


def prepare(models: list[str], sizes: dict[str, Size], work: Path
            ) -> tuple[dict[str, str], list[dict[str, Any]], str | None]:
    """Write the inputs (one per size), build the tiny SD upscaler, plan the references."""
    sd_folder = None
    if SD_TINY in models:
        from tiny_sd_x4 import build_tiny_upscaler

        sd_folder = build_tiny_upscaler(str(work / "sd_x4_tiny"))
    photo = mosaic(max(sizes[m].side for m in models))
    inputs: dict[str, str] = {}
    for side in sorted({sizes[m].side for m in models}):
        inputs[str(side)] = write_tiff(work / f"input_{side}.tif", photo[:side, :side])
    references = []
    for m in models:
        size = sizes[m]
        # A context model's top-left tile must be the same tile in both jobs (contexts flow
        # from it, none into it); a halo model's region is exact for any tiling, so its
        # crop runs as one tile.
        compared = size.tile if context_model(m, sd_folder) else size.compare
        crop = min(size.side, compared + margin(m, sd_folder))
        crop_path = write_tiff(work / f"reference_{m}.tif", photo[:crop, :crop])
        tile = size.tile if context_model(m, sd_folder) else -(-crop // 8) * 8
        scale = describe(m, sd_folder).scale
        references.append({"model": m, "input": crop_path, "output": str(work / f"reference_{m}.zarr"),
                           "options": job_options(m, dataclasses.replace(size, tile=tile), sd_folder),
                           "region": str(work / f"reference_{m}.npy"),
                           "region_side": compared * scale})
    return inputs, references, sd_folder


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | input | batch | dtype | status | tiles/s | wall s | GPU MiB peak (job) | "
            "GPU util mean/peak % | max diff (tol) | ok |")
    lines = [head, "|---|---|---:|---|---|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        eq = r["equality"] or {}
        mem = ("-" if r["gpu_memory_peak_mib"] is None
               else f"{r['gpu_memory_peak_mib']:.0f} ({r['gpu_memory_job_mib'] or 0:.0f})")
        util = "-" if r["gpu_util_mean_pct"] is None else f"{r['gpu_util_mean_pct']}/{r['gpu_util_peak_pct']}"
        diff = "-" if not eq else f"{eq['max_abs_diff_levels']} ({eq['tolerance_levels']})"
        passed = {True: "yes", False: "NO", None: "-"}[eq.get("passed")]
        status = r["status"].split(":")[0]
        lines.append(f"| {r['model']} | {r['input']} | {r['batch']} | {r['dtype']} | {status} | "
                     f"{r['tiles_per_s'] if r['tiles_per_s'] is not None else '-'} | "
                     f"{r['wall_s'] if r['wall_s'] is not None else '-'} | {mem} | {util} | {diff} | {passed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="the same code on the CPU at a small size (no GPU fields), about a minute")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "gpu.json")
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip configurations once this many seconds have passed since the "
                    "start (default: 400 on a GPU, none in a dry run)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reference:
        return reference_main(args.reference)
    started = time.perf_counter()
    dry = args.dry_run
    if dry:
        # No GPU for Ray to find, nor for its workers: the dry run is the CPU's.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    sizes, batches, dtypes = (DRY_SIZES, DRY_BATCHES, DRY_DTYPES) if dry else (SIZES, BATCHES, DTYPES)
    budget = args.budget_s if args.budget_s is not None else (None if dry else 400.0)

    from tilewave.actors.cluster import connect, disconnect

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tilewave-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        inputs, references, sd_folder = prepare(args.models, sizes, work)
        prepared_s = time.perf_counter() - started
        reference_s = run_references(references, work)
        regions = {r["model"]: np.load(r["region"]) for r in references}
        cluster = connect()
        if not dry and cluster.gpus < 1:
            disconnect(cluster)
            print("gpu.py: Ray finds no GPU here; run with --dry-run for the CPU check", file=sys.stderr)
            return 2
        device = "cuda" if cluster.gpus >= 1 else "cpu"
        switch = fp32_switch()
        sampler = GpuSampler() if device == "cuda" else None
        rows: dict[tuple[str, int, str], dict[str, Any]] = {}
        last_wall: dict[str, float] = {}
        try:
            for model, batch, dtype in order(args.models, batches, dtypes):
                size = sizes[model]
                row = rows[model, batch, dtype] = row_for(model, size, batch, dtype, device)
                desc = describe(model, sd_folder)
                why, extra = applicability(model, dtype, device, desc.supports_half, switch)
                if why is not None:
                    row.update(status=why.split(":")[0], note=why)
                    continue
                elapsed = time.perf_counter() - started
                if budget is not None and elapsed + last_wall.get(model, 0.0) > budget:
                    row.update(status="skipped", note=f"time budget: {elapsed:.0f} s of {budget:.0f} s "
                               f"spent, the last {model} run took {last_wall.get(model, 0):.0f} s")
                    continue
                tolerance = CPU_TOLERANCE if device == "cpu" else TOLERANCE[model][dtype]
                options = job_options(model, size, sd_folder, batch=batch, **extra)
                try:
                    run_configuration(row, model, size, inputs[str(size.side)], work / "out.zarr",
                                      options, regions[model], tolerance, sampler)
                except Exception as exc:  # one failed configuration must not lose the others
                    row.update(status="failed", note=f"{type(exc).__name__}: {exc}"[:500])
                    continue
                last_wall[model] = row["wall_s"]
                half = device == "cuda" and desc.supports_half and dtype == "fp16"
                row["note"] = ("ran in fp32" if not half else
                               "ran in fp16 (the VAE in fp32)" if model == SD_TINY else "ran in fp16")
                if device == "cuda" and (desc.modes[0] == "context" or desc.positional) and batch > 1:
                    row["note"] += f"; not batched ({desc.modes[0]} mode): {batch} tiles at once on threads"
                if device == "cpu" and batch > 1:
                    row["note"] += "; a CPU worker with one slot runs one tile at a time"
        finally:
            disconnect(cluster)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ordered = [rows[c] for c in sorted(rows, key=lambda c: (args.models.index(c[0]), c[1], c[2]))]
    machine = machine_info()
    gpu_name = None
    if device == "cuda" and shutil.which("nvidia-smi"):
        gpu_name = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                   "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    payload = {
        "benchmark": "gpu", "dry_run": dry, "device": device,
        "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine, "machine_line": machine_line(machine), "gpu": gpu_name,
        "ray_gpus": cluster.gpus, "fp32_switch": switch, "budget_s": budget,
        "sizes": {m: dataclasses.asdict(sizes[m]) for m in args.models},
        "batches": list(batches), "dtypes": list(dtypes),
        "tolerance_levels": {m: ({"fp32": CPU_TOLERANCE} if dry else TOLERANCE[m]) for m in args.models},
        "prepare_s": round(prepared_s, 2), "reference_s": reference_s,
        "total_s": round(time.perf_counter() - started, 2), "runs": ordered,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"# GPU check{' (dry run, CPU)' if dry else ''}\n\n`{payload['command']}` on "
          f"{payload['machine_line']}{', ' + gpu_name if gpu_name else ''}; {payload['total_s']} s\n")
    print(table(ordered))
    failed = [r for r in ordered if r["status"] == "failed" or (r["equality"] or {}).get("passed") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
