"""Verified resume and durable chunks: a resumed run reads back what the ledger lists,
runs again what is damaged (and what depends on it), and ends with a clean run's bytes;
chunks reach the disk before their ledger lines."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import random_image, run_until_recorded, zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.pipeline.pyramid_plan import PyramidPlan
from tilewave.pipeline.verify import to_rerun
from tilewave.storage.ledger import Ledger

# ------------------------------------------------------------------ the rule


def test_a_halo_job_reruns_only_the_damaged_tiles():
    done = {(r, c) for r in range(4) for c in range(5)}
    tiles, chunks = to_rerun({(2, 3)}, set(), done, set(), dependent=False, pyramid=None)
    assert tiles == {(2, 3)} and chunks == set()


def test_a_context_job_reruns_every_recorded_tile_above_and_left_of_a_damaged_one():
    done = {(r, c) for r in range(4) for c in range(5)} - {(3, 4)}
    tiles, _ = to_rerun({(2, 1)}, set(), done, set(), dependent=True, pyramid=None)
    assert tiles == {(r, c) for r in range(3) for c in range(2)}
    # Two damaged tiles: the union of their rectangles, only of what was recorded.
    tiles, _ = to_rerun({(0, 4), (1, 0)}, set(), done, set(), dependent=True, pyramid=None)
    assert tiles == {(0, c) for c in range(5)} | {(1, 0)}


def test_pyramid_chunks_above_a_rerun_tile_or_chunk_run_again():
    plan = PyramidPlan.for_output((4096, 4096), (512, 512))  # levels 1 (2048) and 2 (1024)
    done_tiles = {(r, c) for r in range(8) for c in range(8)}
    done_chunks = set(plan.all_chunks())
    tiles, chunks = to_rerun({(5, 2)}, set(), done_tiles, done_chunks, False, plan)
    assert tiles == {(5, 2)} and chunks == {(1, 2, 1), (2, 1, 0)}
    _, chunks = to_rerun(set(), {(1, 0, 3)}, done_tiles, done_chunks, False, plan)
    assert chunks == {(1, 0, 3), (2, 0, 1)}


# ------------------------------------------------------------------ the ledger


def test_the_ledger_keeps_checksums_and_takes_entries_back(tmp_path):
    ledger = Ledger(str(tmp_path / "out"))
    ledger.record([(0, 0), (0, 1), (1, 0, 0)], [0xDEADBEEF, None, 7])
    ledger.forget([(0, 1)])
    ledger.record([(0, 1)], [5])
    ledger.close()
    path = tmp_path / "out" / ".tilewave" / "ledger.log"
    with open(path, "a") as f:
        f.write("2 2 c=0000")  # a line torn by a crash
    again = Ledger(str(tmp_path / "out"))
    assert again.checksums() == {(0, 0): 0xDEADBEEF, (0, 1): 5, (1, 0, 0): 7}
    assert again.done() == {(0, 0), (0, 1)} and again.done_chunks() == {(1, 0, 0)}
    assert path.read_text().splitlines()[0] == "0 0 c=deadbeef"


# ------------------------------------------------------------------ real runs


def _chunk(output: pathlib.Path, row: int, col: int) -> pathlib.Path:
    return output / "0" / "c" / "0" / str(row) / str(col)


def _damage(output: pathlib.Path, tiles: list[tuple[int, int]]) -> None:
    """Tear one chunk (cut it short), overwrite one with noise, delete one."""
    torn, noise, gone = (_chunk(output, *t) for t in tiles)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 3])
    noise.write_bytes(os.urandom(noise.stat().st_size))
    gone.unlink()


def _same(a: pathlib.Path, b: pathlib.Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(ga.array_keys()) == sorted(gb.array_keys())
    for key in ga.array_keys():
        assert ga[key][:].tobytes() == gb[key][:].tobytes(), f"array {key} differs"


@pytest.mark.subprocess
@pytest.mark.parametrize("model, args, pixels", [
    ("span-x2", [], random_image((3, 700, 600), "uint8", seed=3)),
    ("prefix-sum", [], np.random.default_rng(5).integers(0, 4, (1, 640, 512)).astype(np.float32)),
    ("bicubic", ["--mode", "blend", "--overlap", "8", "--halo", "0"],
     random_image((3, 640, 576), "uint16", seed=6)),
], ids=["halo", "context", "blend"])
def test_damaged_chunks_of_recorded_tiles_are_found_and_run_again(tmp_path, model, args, pixels):
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    common = [src, "--model", model, "--tile", "32", *args]
    clean, out = tmp_path / "clean.zarr", tmp_path / "out.zarr"
    subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", common[0], str(clean),
                    *common[1:], "--local", "--quiet"], check=True)
    run_until_recorded([common[0], str(out), *common[1:], "--local"], out, 50)
    done = sorted(Ledger(str(out)).done())
    assert len(done) >= 50, "the run must have recorded tiles to damage"
    victims = [done[1], done[len(done) // 2], done[-5]]
    _damage(out, victims)

    kwargs = dict(model=model, tile=32, executor="local", progress=False, resume=True)
    if "--mode" in args:
        kwargs.update(mode="blend", overlap=8, halo=0)
    report = tilewave.upscale(src, str(out), verify=True, **kwargs)
    assert report.verified >= len(done)
    assert report.repaired >= 3
    if model == "prefix-sum":  # a context model runs the rectangles above-left again
        last = max(victims)
        assert report.repaired >= sum(1 for t in done if t[0] <= last[0] and t[1] <= last[1])
    _same(out, clean)


@pytest.mark.subprocess
def test_a_run_killed_mid_way_is_checked_on_resume_without_asking(tmp_path):
    pixels = random_image((3, 640, 640), "uint8", seed=8)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    out = tmp_path / "out.zarr"
    run_until_recorded([src, str(out), "--model", "span-x2", "--tile", "32", "--local"], out, 40)
    victim = sorted(Ledger(str(out)).done())[3]
    _chunk(out, *victim).unlink()  # what a power loss does to a chunk never flushed
    report = tilewave.upscale(src, str(out), model="span-x2", tile=32, executor="local",
                              progress=False, resume=True)
    assert report.verified >= 40 and report.repaired >= 1
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, str(clean), model="span-x2", tile=32, executor="local", progress=False)
    _same(out, clean)


@pytest.mark.subprocess
def test_a_run_stopped_cleanly_is_not_checked_again(tmp_path):
    pixels = random_image((3, 640, 640), "uint8", seed=9)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    out = tmp_path / "out.zarr"
    run_until_recorded([src, str(out), "--model", "span-x2", "--tile", "32", "--local"], out, 40,
                       sig=signal.SIGINT)
    assert not (out / ".tilewave" / "running").exists()
    report = tilewave.upscale(src, str(out), model="span-x2", tile=32, executor="local",
                              progress=False, resume=True)
    assert report.verified == 0 and report.tiles_run < report.tiles


def test_verify_without_resume_is_refused(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 64, 64), "uint8"))
    with pytest.raises(SettingsError, match="give it with resume=True"):
        tilewave.upscale(src, str(tmp_path / "out.zarr"), verify=True, executor="local",
                         progress=False)


def test_durable_chunks_reach_the_disk_before_their_ledger_lines(tmp_path, monkeypatch):
    """Every chunk file and the folders naming it are fsynced before the ledger line that
    records its tile is (the real fsync runs; the calls are only watched)."""
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 96, 128), "uint8"), chunk=32)
    out = tmp_path / "out.zarr"
    events: list[str] = []
    real_fsync = os.fsync

    def watched(fd: int) -> None:
        real_fsync(fd)
        events.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", watched)
    tilewave.upscale(src, str(out), model="bicubic", tile=32, executor="local", progress=False)
    ledger = str(out / ".tilewave" / "ledger.log")
    first_record = events.index(ledger)
    synced = set(events[:first_record])
    chunk = str(_chunk(out, 0, 0))
    assert chunk in synced and os.path.dirname(chunk) in synced and str(out / "0") in synced
    # Every tile's chunk was synced, each before a ledger record.
    chunks = {e for e in events if e.startswith(str(out / "0" / "c"))}
    assert len([c for c in chunks if os.path.isfile(c)]) == 12

    events.clear()
    tilewave.upscale(src, str(tmp_path / "fast.zarr"), model="bicubic", tile=32,
                     executor="local", progress=False, durable=False)
    assert not [e for e in events if "/c/" in e]
