"""Cascades: a scale reached in stages, each an out-of-core job into its own store."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.pipeline.cascade import Stage, plan_stages


def test_plan_stages():
    assert plan_stages("span-x2", 8) == [Stage("span-x2", 2)] * 3
    assert plan_stages("span-x4,span-x2", None) == [Stage("span-x4", 4), Stage("span-x2", 2)]
    assert plan_stages("bicubic", 8) == [Stage("bicubic", 8)]  # any scale in one step
    assert plan_stages("span-x4", None) == [Stage("span-x4", 4)]
    with pytest.raises(SettingsError, match="not a product"):
        plan_stages("span-x4", 8)
    with pytest.raises(SettingsError, match="x8, not x4"):
        plan_stages("span-x4,span-x2", 4)


@pytest.fixture
def photo_input(tmp_path):
    from skimage import data

    pixels = np.ascontiguousarray(data.chelsea()[60:124, 150:230].transpose(2, 0, 1))
    return pixels, zarr_input(tmp_path / "in.zarr", pixels, chunk=32)


def test_x4_as_two_x2_stages_equals_running_them_by_hand(photo_input, tmp_path):
    pixels, src = photo_input
    out = tmp_path / "x4.zarr"
    report = tilewave.upscale(src, str(out), model="span-x2", scale=4, tile=32,
                              executor="local", progress=False)
    assert report.scale == 4 and report.shape == (3, 256, 320)
    assert report.model == "span-x2 x2 then span-x2 x2"
    assert not (tmp_path / "x4.zarr.stage1.zarr").exists()
    tilewave.upscale(src, str(tmp_path / "a.zarr"), model="span-x2", tile=32, executor="local",
                     progress=False)
    tilewave.upscale(str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), model="span-x2",
                     tile=32, executor="local", progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(out), path="0")[:],
                                  zarr.open_array(str(tmp_path / "b.zarr"), path="0")[:])
    group = zarr.open_group(str(out), mode="r")
    assert len(group.attrs["ome"]["multiscales"][0]["datasets"]) == 1  # 320 px: no pyramid


def test_resume_continues_at_the_unfinished_stage(photo_input, tmp_path):
    pixels, src = photo_input
    out = tmp_path / "x4.zarr"
    # Stage 1 finished (as a crash during stage 2 would leave it), stage 2 not begun.
    tilewave.upscale(src, str(tmp_path / "x4.zarr.stage1.zarr"), model="span-x2", tile=32,
                     executor="local", progress=False)
    report = tilewave.upscale(src, str(out), model="span-x2", scale=4, tile=32,
                              executor="local", progress=False, resume=True, keep_stages=True)
    assert report.tiles == 6 + 20 and report.tiles_run == 20  # stage 1 was not run again
    assert (tmp_path / "x4.zarr.stage1.zarr").exists()


def test_mixed_stages_and_an_existing_output(photo_input, tmp_path):
    pixels, src = photo_input
    out = tmp_path / "x8.zarr"
    report = tilewave.upscale(src, str(out), model="span-x4,bicubic", tile=32,
                              executor="local", progress=False)
    assert report.scale == 8 and zarr.open_array(str(out), path="0").shape == (3, 512, 640)
    from tilewave.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="overwrite=True"):
        tilewave.upscale(src, str(out), model="span-x4,bicubic", tile=32, executor="local",
                         progress=False)
