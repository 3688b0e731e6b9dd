"""The pyramid inside the tile DAG: its geometry, the order the driver releases chunks
in, and jobs whose levels equal a whole-image 2 x 2 average, fresh and resumed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.pipeline.pyramid_plan import PyramidFront, PyramidPlan
from tilewave.storage.ledger import Ledger
from tilewave.storage.pyramid import downsample_window


def whole_image_levels(level0: np.ndarray, count: int) -> list[np.ndarray]:
    """Each level from the whole level below: the reference the chunks must match."""
    levels = [level0]
    for _ in range(count):
        c, h, w = levels[-1].shape
        levels.append(downsample_window(levels[-1], -(-h // 2), -(-w // 2)))
    return levels


@pytest.mark.parametrize("shape, chunk", [((2400, 600), (512, 512)), ((2201, 1999), (300, 300)),
                                          ((5000, 1300), (250, 250)), ((3001, 2049), (99, 99))])
def test_children_and_parents_agree_and_cover_every_source_pixel(shape, chunk):
    plan = PyramidPlan.for_output(shape, chunk, smallest=256)
    assert plan.levels >= 2
    for k, i, j in plan.all_chunks():
        kids = plan.children((k, i, j))
        for child in kids:
            assert (k, i, j) in plan.parents(*child)
        # The children's pixels hold exactly the source window.
        y0, y1, x0, x1 = plan.source((k, i, j))
        covered = np.zeros(plan.shapes[k - 1], bool)
        for _, r, c in kids:
            a0, a1, b0, b1 = plan.window(k - 1, r, c)
            covered[a0:a1, b0:b1] = True
        assert covered[y0:y1, x0:x1].all()
        assert covered.sum() < 4 * (y1 - y0 + plan.chunks[k - 1][0]) * (x1 - x0 + plan.chunks[k - 1][1])
    for k in range(plan.levels):
        rows, cols = plan.grid(k)
        for r in range(rows):
            for c in range(cols):
                for parent in plan.parents(k, r, c):
                    assert (k, r, c) in plan.children(parent)


def test_a_chunk_is_released_only_once_all_its_children_are_done():
    plan = PyramidPlan.for_output((3000, 2200), (256, 256), smallest=300)
    rows, cols = -(-3000 // 256), -(-2200 // 256)
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    random.Random(0).shuffle(tiles)
    front = PyramidFront(plan)
    finished_tiles: set[tuple[int, int]] = set()
    finished: set[tuple[int, int, int]] = set()
    order: list[tuple[int, int, int]] = []
    while tiles or not front.finished:
        if tiles and random.random() < 0.7:
            t = tiles.pop()
            finished_tiles.add(t)
            front.finish_tile(*t)
        chunk = front.pop_ready()
        if chunk is None:
            continue
        for k, r, c in plan.children(chunk):
            assert ((r, c) in finished_tiles) if k == 0 else ((k, r, c) in finished)
        finished.add(chunk)
        order.append(chunk)
        front.finish(chunk)
    assert sorted(order) == sorted(plan.all_chunks()) and len(order) == plan.count


@pytest.mark.ray
def test_pyramid_chunks_equal_the_whole_image_average(ray_local, tmp_path):
    """Odd sizes at every level, tiles smaller than a chunk of level 1, workers on Ray."""
    pixels = random_image((3, 1111, 301), "uint8", seed=3)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    out = tmp_path / "out.zarr"
    report = tilewave.upscale(src, str(out), model="bicubic", scale=2, tile=128, workers=2,
                              progress=False)
    group = zarr.open_group(str(out), mode="r")
    level0 = group["0"][:]
    names = ["0", "1", "2"]  # 2222 -> 1111 -> 556 (<= 1024)
    assert "3" not in group
    for got, want in zip((group[n][:] for n in names), whole_image_levels(level0, 2)):
        np.testing.assert_array_equal(got, want)
    paths = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    assert paths == names
    assert report.workers == 2 and report.processes == 1


def test_a_failed_chunk_stops_the_job_and_resume_computes_only_the_missing_ones(tmp_path, monkeypatch, capsys):
    """The fourth pyramid chunk fails: the job stops naming it, the ledger keeps the
    three before it (a marker written into them survives the resume, so they are not
    recomputed), and the resumed job ends with a clean run's levels."""
    from tilewave.cli import main
    from tilewave.pipeline import pyramid_work

    pixels = random_image((1, 1300, 520), "uint16", seed=5)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=130)
    clean, out = tmp_path / "clean.zarr", tmp_path / "out.zarr"
    args = ["--model", "bicubic", "--tile", "130", "--local", "--quiet"]
    assert main(["upscale", src, str(clean), *args]) == 0
    real_chunk, real_average, calls = pyramid_work.process_chunk, pyramid_work.downsample_window, []

    def seen(setup, level, row, col):
        calls.append((level, row, col))
        return real_chunk(setup, level, row, col)

    def fourth_fails(pixels, height, width, nodata=None):
        if len(calls) == 4:
            raise ZeroDivisionError("injected")
        return real_average(pixels, height, width, nodata)

    monkeypatch.setattr(pyramid_work, "process_chunk", seen)
    monkeypatch.setattr(pyramid_work, "downsample_window", fourth_fails)
    assert main(["upscale", src, str(out), *args]) == 1
    err = capsys.readouterr().err
    level, row, col = calls[3]
    assert f"pyramid level {level} chunk (row {row}, col {col})" in err and "--resume" in err
    assert "ZeroDivisionError: injected" in err
    recorded = Ledger(str(out)).done_chunks()
    assert recorded == set(calls[:3])
    plan = PyramidPlan.for_output((2600, 1040), (260, 260))
    for k, r, c in recorded:
        y0, _, x0, _ = plan.window(k, r, c)
        zarr.open_array(str(out), path=str(k), mode="r+")[:, y0, x0] = 7
    monkeypatch.setattr(pyramid_work, "downsample_window", real_average)
    assert main(["upscale", src, str(out), *args, "--resume"]) == 0
    got = [zarr.open_array(str(out), path=k)[:] for k in ("0", "1", "2")]
    want = [zarr.open_array(str(clean), path=k)[:] for k in ("0", "1", "2")]
    # Each level is the average of the level below as it is stored, markers included.
    for k in (1, 2):
        _, h, w = got[k].shape
        for i, j in np.ndindex(*plan.grid(k)):
            if (k, i, j) not in recorded:
                y0, y1, x0, x1 = plan.window(k, i, j)
                a0, a1, b0, b1 = plan.source((k, i, j))
                np.testing.assert_array_equal(got[k][:, y0:y1, x0:x1],
                                              downsample_window(got[k - 1][:, a0:a1, b0:b1], y1 - y0, x1 - x0))
    for k, r, c in recorded:
        y0, _, x0, _ = plan.window(k, r, c)
        assert (got[k][:, y0, x0] == 7).all()
        got[k][:, y0, x0] = want[k][:, y0, x0]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
