"""Tiles through a model one by one against as one batch, on this machine's CPU: the
measurement behind ``--batch``'s CPU default (GPUs batch by default; none is measured
here).

    python benchmarks/batch.py      # writes docs/benchmarks/batch.json and batch.md

For each model and tile size, the same tiles (crops of scikit-image's astronaut photo,
with the model's halo) go through ``forward_image`` one at a time and stacked in batches,
on one torch thread as a worker slot runs them; the best of ``--repeat`` runs is kept,
the two alternating. Also reported: whether the batched output equals the one-by-one
output exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import REPO, machine_info, machine_line  # noqa: E402


def measure(model_name: str, tile: int, batch: int, repeat: int) -> dict:
    import torch
    from skimage import data

    from tilewave.models import describe_model, load_model

    halo = describe_model(model_name, 2).halo
    model = load_model(model_name, 2)
    side = tile + 2 * halo
    photo = torch.from_numpy(data.astronaut().transpose(2, 0, 1).astype(np.float32) / 255)
    tiles = torch.stack([photo[:, 7 * i : 7 * i + side, 11 * i : 11 * i + side] for i in range(batch)])
    alone_s, batched_s = [], []
    with torch.inference_mode():
        for _ in range(repeat):
            t = time.perf_counter()
            alone = torch.cat([model.forward_image(tiles[i : i + 1]) for i in range(batch)])
            alone_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            together = model.forward_image(tiles)
            batched_s.append(time.perf_counter() - t)
    return {"model": model_name, "tile": tile, "window": side, "batch": batch,
            "one_by_one_s": round(min(alone_s), 3), "batched_s": round(min(batched_s), 3),
            "batched_over_one_by_one": round(min(batched_s) / min(alone_s), 3),
            "equal": bool(torch.equal(alone, together)),
            "max_difference": float((alone - together).abs().max())}


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["span-x2", "bicubic"])
    p.add_argument("--tiles", nargs="+", type=int, default=[128, 256])
    p.add_argument("--batches", nargs="+", type=int, default=[2, 4])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json-out", type=Path, default=REPO / "docs" / "benchmarks" / "batch.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [measure(m, t, b, args.repeat) for m in args.models for t in args.tiles for b in args.batches]
    machine = machine_info()
    payload = {"benchmark": "batch", "command": "python benchmarks/batch.py " + " ".join(sys.argv[1:]),
               "machine": machine, "machine_line": machine_line(machine), "runs": rows}
    args.json_out.write_text(json.dumps(payload, indent=1) + "\n")
    table = ["| model | tile | batch | one by one (s) | batched (s) | batched / one by one | equal |",
             "|---|---:|---:|---:|---:|---:|:---:|"]
    table += [f"| {r['model']} | {r['tile']} | {r['batch']} | {r['one_by_one_s']} | {r['batched_s']} | "
              f"{r['batched_over_one_by_one']} | {'yes' if r['equal'] else 'no'} |" for r in rows]
    text = (f"# Batches on CPU\n\n`{payload['command']}` on {payload['machine_line']}, one torch "
            "thread (as a worker slot).\n\n" + "\n".join(table) + "\n")
    args.json_out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
