"""Tiles batched through a model: the batcher's grouping, and a job's bytes with and
without batches (on CPUs here; GPUs batch by default)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import zarr
from helpers import zarr_input

import tilewave
from tilewave.actors.batching import Batcher


def _call_together(batcher: Batcher, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    out: list[torch.Tensor | None] = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        start.wait()
        out[i] = batcher(inputs[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out  # type: ignore[return-value]


def test_same_shape_inputs_run_as_one_batch_and_each_gets_its_own_output():
    seen: list[int] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x * 2

    batcher = Batcher(run, size=4, wait_s=5.0)  # waits until all four arrived
    inputs = [torch.full((1, 3, 8, 8), float(i)) for i in range(4)]
    out = _call_together(batcher, inputs)
    assert seen == [4]
    for x, y in zip(inputs, out):
        assert torch.equal(y, x * 2)


def test_other_shapes_and_unfilled_batches_run_without_waiting_forever():
    seen: list[tuple[int, ...]] = []
    batcher = Batcher(lambda x: seen.append(tuple(x.shape)) or x + 1, size=3, wait_s=0.05)
    inputs = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 4)]
    out = _call_together(batcher, inputs)
    assert sorted(seen) == [(1, 1, 5, 4), (2, 1, 4, 4)]
    assert [tuple(o.shape) for o in out] == [(1, 1, 4, 4), (1, 1, 4, 4), (1, 1, 5, 4)]


def test_a_failing_batch_fails_every_tile_in_it():
    def run(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    batcher = Batcher(run, size=2, wait_s=0.05)
    errors: list[str] = []

    def one() -> None:
        try:
            batcher(torch.zeros(1, 1, 2, 2))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["out of memory"] * 2


@pytest.mark.ray
def test_batched_tiles_give_the_bytes_of_unbatched_ones(ray_local, tmp_path):
    """Two tiles at once batched through span-x2 in one worker process, against one by
    one. Tiles of 128 (with the halo, 160 px windows): the sizes CPUs batch exactly."""
    from skimage import data

    pixels = np.ascontiguousarray(data.astronaut()[:384, :384].transpose(2, 0, 1))
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    outs = []
    for batch in (1, 2):
        out = tmp_path / f"b{batch}.zarr"
        report = tilewave.upscale(src, str(out), model="span-x2", tile=128, workers=2,
                                  batch=batch, progress=False)
        assert report.workers == 2 and report.processes == 1
        outs.append(zarr.open_array(str(out), path="0")[:])
    np.testing.assert_array_equal(outs[0], outs[1])
