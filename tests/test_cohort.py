"""A cohort: many inputs in one run, each into its own output in one folder, with one
Ray start and one set of workers; each output equals its input upscaled alone, a failed
input is reported while the others run, and each input resumes on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from helpers import zarr_input
from skimage import data

import tilewave
from tilewave.errors import OutputExistsError, SettingsError
from tilewave.pipeline.cohort import expand_inputs, outputs_for


@pytest.fixture()
def inputs(tmp_path):
    """A PNG, a TIFF and a Zarr store, of real photo pixels, in one folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    photo = data.astronaut()
    (folder / "a.png").write_bytes(imagecodecs.png_encode(photo[:70, :90]))
    tifffile.imwrite(folder / "b.tif", photo[100:160, 200:248])
    zarr_input(folder / "c.zarr", photo[300:340, 300:364].transpose(2, 0, 1).copy(), chunk=32)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_inputs_are_files_folders_and_patterns_each_once(inputs, tmp_path):
    a, b, c = (str(inputs / n) for n in ("a.png", "b.tif", "c.zarr"))
    assert expand_inputs([str(inputs)]) == [a, b, c]
    assert expand_inputs([str(inputs / "*.png"), a, c]) == [a, c]
    with pytest.raises(SettingsError, match="no input matches"):
        expand_inputs([str(inputs / "*.svs")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SettingsError, match="holds no image"):
        expand_inputs([str(tmp_path / "empty")])
    assert outputs_for([a, c], "/out", ".tif") == ["/out/a.tif", "/out/c.tif"]
    with pytest.raises(SettingsError, match="would both write"):
        outputs_for([a, str(tmp_path / "a.tif")], "/out")
    with pytest.raises(SettingsError, match="--suffix '.png'"):
        outputs_for([a], "/out", ".png")


def test_each_output_equals_its_input_upscaled_alone_and_a_failure_stays_its_own(inputs, tmp_path):
    (inputs / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # damaged
    report = tilewave.upscale_cohort(inputs, tmp_path / "out", model="uniba-x2", tile=32,
                                     executor="local", progress=False)
    assert [o.input.rsplit("/", 1)[1] for o in report.outcomes] == ["a.png", "b.tif", "c.zarr", "d.png"]
    assert [o.input for o in report.failed] == [str(inputs / "d.png")]
    assert "d.png" in report.failed[0].error and not (tmp_path / "out" / "d.zarr").exists()
    for name in ("a.png", "b.tif", "c.zarr"):
        stem = name.split(".")[0]
        alone = tilewave.upscale(inputs / name, tmp_path / f"alone_{stem}.zarr", model="uniba-x2",
                                 tile=32, executor="local", progress=False)
        assert alone.tiles_run >= 2
        assert (zarr.open_array(str(tmp_path / "out" / f"{stem}.zarr" / "0"))[:].tobytes()
                == zarr.open_array(alone.array)[:].tobytes())
    summary = report.as_dict()
    assert summary["done"] == 3 and summary["failed"] == 1
    assert summary["inputs"][0]["report"]["tiles_run"] == summary["inputs"][0]["report"]["tiles"]


def test_resume_continues_the_cohort(inputs, tmp_path):
    out = tmp_path / "out"
    first = tilewave.upscale_cohort([inputs / "a.png"], out, model="bicubic", tile=32,
                                    executor="local", progress=False)
    assert not first.failed
    again = tilewave.upscale_cohort(inputs, out, model="bicubic", tile=32, resume=True,
                                    executor="local", progress=False)
    assert not again.failed
    assert [o.report.tiles_run for o in again.outcomes] == [0, 4, 4]
    with pytest.raises(OutputExistsError, match=r"exists \(and 2 more\); pass resume=True"):
        tilewave.upscale_cohort(inputs, out, model="bicubic", executor="local", progress=False)


def test_the_next_input_fills_the_workers_an_input_leaves_idle(tmp_path):
    """Two tiles at once: input a's first tile runs alone (its neighbours wait for it),
    so input b's one tile takes the other slot and b ends first; each output is as if
    upscaled alone."""
    photo = data.astronaut()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(imagecodecs.png_encode(photo[:96, :96]))
    (folder / "b.png").write_bytes(imagecodecs.png_encode(photo[200:232, 200:232]))
    report = tilewave.upscale_cohort(folder, tmp_path / "out", model="uniba-x2", tile=32,
                                     executor="local", workers=2, progress=False)
    a, b = report.outcomes
    assert not report.failed and a.report.tiles_run == 9 and b.report.tiles_run == 1
    assert b.began < a.ended and b.ended < a.ended
    for name in ("a", "b"):
        alone = tilewave.upscale(folder / f"{name}.png", tmp_path / f"alone_{name}.zarr",
                                 model="uniba-x2", tile=32, executor="local", workers=2,
                                 progress=False)
        assert (zarr.open_array(str(tmp_path / "out" / f"{name}.zarr" / "0"))[:].tobytes()
                == zarr.open_array(alone.array)[:].tobytes())


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_an_input_whose_tile_fails_leaves_the_workers_to_the_others(tmp_path, executor):
    """A NaN in input a's last tile fails a, part-way, while b and c share the workers
    with it: they finish, equal to their inputs upscaled alone, and a's output goes, as
    for a job alone stopped by its pixels (its tiles still running ended first)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    folder.mkdir()
    images = {name: rng.random((1, 64, 64), dtype=np.float32) for name in "abc"}
    images["a"][0, 60, 60] = np.nan
    for name, pixels in images.items():
        zarr_input(folder / f"{name}.zarr", pixels, chunk=32)
    report = tilewave.upscale_cohort(folder, tmp_path / "out", model="bicubic", tile=32,
                                     executor=executor, workers=2, progress=False)
    assert [o.input.rsplit("/", 1)[1] for o in report.failed] == ["a.zarr"]
    assert "NaN or infinite values (first at x=60, y=60" in report.failed[0].error
    assert not (tmp_path / "out" / "a.zarr").exists()
    for name in "bc":
        alone = tilewave.upscale(folder / f"{name}.zarr", tmp_path / f"alone_{name}.zarr",
                                 model="bicubic", tile=32, executor="local", workers=2,
                                 progress=False)
        assert (zarr.open_array(str(tmp_path / "out" / f"{name}.zarr" / "0"))[:].tobytes()
                == zarr.open_array(alone.array)[:].tobytes())


def _cli(*args, cwd=None):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.subprocess
def test_three_paths_without_an_output_dir_are_one_line():
    done = _cli("a.png", "b.png", "c.zarr")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "give one INPUT and one OUTPUT (got 3 paths)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.subprocess
@pytest.mark.ray
def test_one_ray_start_and_one_set_of_workers_serve_the_cohort(inputs, tmp_path):
    """From the command line, on Ray: the workers start once, the report is per input,
    and a failed input makes the exit status non-zero."""
    (inputs / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    done = _cli(str(inputs), "--output-dir", str(tmp_path / "out"), "--model", "uniba-x2",
                "--tile", "32", "--workers", "1", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert [o["status"] for o in report["inputs"]] == ["done", "done", "done", "failed"]
    assert done.stderr.count("starting a local Ray instance") == 1
    assert done.stderr.count("starting 1 worker process") == 1
    assert done.stderr.count("input 4 of 4") == 2  # its start, then its failure
    assert "3/4 c: upscale + pyramid" in done.stderr  # inputs run at once: bars say whose
    shape = zarr.open_array(str(tmp_path / "out" / "a.zarr" / "0")).shape
    assert shape == (3, 140, 180)
