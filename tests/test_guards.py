"""What tilewave refuses or repairs before it can do harm: overlapping paths, files it
did not write, settings that cannot work, and job state damaged by a crash."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.errors import (
    OutputExistsError,
    ResumeMismatchError,
    SettingsError,
    TileFailedError,
    UnreadableInputError,
)
from tilewave.models import ModelDescriptor, ModelEntry, load_model, register
from tilewave.models.base import ImageModel
from tilewave.pipeline import reference_upscale
from tilewave.storage.ledger import Ledger


def _tree(path):
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(path) for f in files}


def test_ingest_never_writes_into_or_over_its_input(tmp_path):
    src = zarr_input(tmp_path / "src.zarr", random_image((3, 40, 40), "uint8"))
    before = _tree(src)
    with pytest.raises(SettingsError, match="overlaps the input"):
        tilewave.ingest_image(src, f"{src}/copy", progress=False)
    with pytest.raises(SettingsError, match="overlaps the input"):
        tilewave.ingest_image(src, src, overwrite=True, progress=False)
    assert _tree(src) == before


def test_overwrite_never_deletes_a_plain_file(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(OutputExistsError, match="is a file"):
        tilewave.upscale(src, notes, overwrite=True, executor="local", progress=False)
    assert notes.read_text() == "keep me"


@pytest.mark.parametrize("name", ["out.png", "OUT.JPG", "scan.jpeg"])
def test_an_output_named_as_a_flat_image_is_refused_not_made_a_folder(tmp_path, name):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    stem = os.path.splitext(name)[0]
    with pytest.raises(SettingsError, match=rf"names a .* image, which tilewave does not write; "
                       rf"name it .*{stem}\.zarr \(OME-Zarr\) or .*{stem}\.tif"):
        tilewave.upscale(src, tmp_path / name, executor="local", progress=False)
    assert not (tmp_path / name).exists()


def test_resume_with_nothing_to_resume_says_so_before_it_starts(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    for name, model in (("typo.zarr", "bicubic"), ("typo.tif", "bicubic"), ("c.zarr", "bicubic:2,bicubic:2")):
        with pytest.raises(ResumeMismatchError, match=r"nothing to resume: .* does not exist \(nor "
                           r"any stage of it\); check the path, or drop resume=True"):
            tilewave.upscale(src, tmp_path / name, model=model, resume=True, executor="local",
                             progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]
    # A cascade killed in its first stage has only that stage's store: that resumes.
    out = tmp_path / "c.zarr"
    tilewave.upscale(src, out, model="bicubic:2,bicubic:2", executor="local", progress=False,
                     keep_stages=True)
    import shutil

    shutil.rmtree(out)
    report = tilewave.upscale(src, out, model="bicubic:2,bicubic:2", resume=True,
                              executor="local", progress=False)
    assert report.tiles > 0 and out.exists()


def test_context_models_keep_their_own_halo(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((1, 20, 20), "float32"))
    with pytest.raises(SettingsError, match="drop halo"):
        tilewave.upscale(src, tmp_path / "o.zarr", model="prefix-sum", halo=1, executor="local",
                         progress=False)
    assert not (tmp_path / "o.zarr").exists()


def test_a_tile_larger_than_the_image_is_clamped(tmp_path):
    pixels = random_image((3, 50, 40), "uint8")
    src = zarr_input(tmp_path / "in.zarr", pixels)
    tilewave.upscale(src, tmp_path / "o.zarr", tile=4096, executor="local", progress=False)
    out = zarr.open_array(str(tmp_path / "o.zarr" / "0"))
    assert out.chunks == (3, 100, 100)
    assert out[:].tobytes() == reference_upscale(load_model("bicubic", 2), pixels).tobytes()


def test_a_torn_ledger_line_is_dropped_not_merged(tmp_path):
    ledger = Ledger(str(tmp_path))
    ledger.record([(0, 0)])
    ledger.close()
    with open(ledger.path, "a") as f:
        f.write("1")  # a crash mid-line
    assert Ledger(str(tmp_path)).done() == {(0, 0)}
    again = Ledger(str(tmp_path))
    again.record([(1, 0)])
    again.close()
    assert Ledger(str(tmp_path)).done() == {(0, 0), (1, 0)}


class _WrongSize(ImageModel):
    def __init__(self, scale: int):
        self.descriptor = ModelDescriptor("wrong-size", scale, ("halo",))

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        return x  # forgets to upscale


def test_a_model_returning_the_wrong_size_fails_its_tile(tmp_path):
    register(ModelEntry("wrong-size", _WrongSize, scales=None, default_scale=2,
                        summary="test: returns its input"))
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    with pytest.raises(TileFailedError, match="tile \\(row 0, col 0\\).*output pixels") as info:
        tilewave.upscale(src, tmp_path / "o.zarr", model="wrong-size", tile=8, executor="local",
                         progress=False)
    assert info.value.exit_code == 1 and info.value.window == (0, 8, 0, 8)
    # The worker's traceback goes to the job's log, not to the user's terminal.
    log = (tmp_path / "o.zarr" / ".tilewave" / "errors.log").read_text()
    assert "Traceback" in log and "output pixels" in log


def _break_chunk(src, key):
    path = os.path.join(src, *key.split("/"))
    good = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(b"garbage")
    return path, good


def test_context_resume_after_a_failed_tile_and_a_lost_context(tmp_path):
    pixels = np.random.default_rng(6).integers(0, 4, (1, 64, 64)).astype(np.float32)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=16)
    out = tmp_path / "o.zarr"
    chunk, good = _break_chunk(src, "c/0/2/1")  # read by tile (2, 1) only: no halo
    # Tile (2, 1) cannot read its input; the tiles before it are done and keep.
    with pytest.raises(UnreadableInputError, match=r"y=32:48, x=16:32 .*resume=True"):
        tilewave.upscale(src, out, model="prefix-sum", tile=16, executor="local", progress=False)
    with open(chunk, "wb") as f:
        f.write(good)
    contexts = out / ".tilewave" / "contexts"
    lost = contexts / "2_0_right.pkl"
    kept = lost.read_bytes()
    lost.unlink()
    with pytest.raises(ResumeMismatchError, match="context it left for tile \\(2, 1\\)"):
        tilewave.upscale(src, out, model="prefix-sum", tile=16, resume=True, executor="local",
                         progress=False)
    lost.write_bytes(kept)
    report = tilewave.upscale(src, out, model="prefix-sum", tile=16, resume=True, executor="local",
                              progress=False)
    assert report.tiles_run == 16 - 9
    expected = reference_upscale(load_model("prefix-sum", 2), pixels)
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], expected)


@pytest.mark.ray
def test_more_workers_than_cpus_is_refused(ray_local, tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    with pytest.raises(SettingsError, match="workers=3 asks for more workers than the cluster's 2 CPUs"):
        tilewave.upscale(src, tmp_path / "o.zarr", workers=3, progress=False)
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.subprocess
def test_an_unreachable_cluster_is_refused_quickly(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    run = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", src,
                          str(tmp_path / "o.zarr"), "--address", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("tilewave: error: cannot reach the Ray cluster at '127.0.0.1:1'")
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("record", ['{"tilewave": 1}', "[1, 2]", "{not json",
                                    '{"tilewave": "0.1.0", "input": {}}'])
def test_a_damaged_job_record_cannot_be_resumed(tmp_path, record):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    out = tmp_path / "out.zarr"
    tilewave.upscale(src, out, tile=16, executor="local", progress=False)
    (out / ".tilewave").mkdir()
    (out / ".tilewave" / "job.json").write_text(record)
    with pytest.raises(ResumeMismatchError, match="cannot be resumed; choose another output or "
                                                  "pass overwrite=True"):
        tilewave.upscale(src, out, tile=16, executor="local", progress=False, resume=True)
