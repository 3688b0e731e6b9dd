"""``--schedule step``: a multi-step context model's tiles run one sampler step at a
time, each step receiving its neighbours' contexts of that step, the tile's state kept
in the working store between its steps. Same bytes as ``--schedule tile``; a killed job
resumes mid-sampling to the bytes of a clean run."""

from __future__ import annotations

import dataclasses
import pickle
import shutil

import numpy as np
import pytest
import torch
import zarr
from helpers import random_image, recorded_steps, run_until_recorded, zarr_input

import tilewave
from tilewave.errors import ResumeMismatchError, SettingsError
from tilewave.models import describe_model
from tilewave.models.base import SamplerSettings, TileRequest, run_all_steps
from tilewave.models.uniba import UniBA, UniBADiff
from tilewave.models.uniba.arch import UniBAConfig
from tilewave.models.uniba.bridge import UniBADiffNet
from tilewave.models.uniba.train import save_checkpoint
from tilewave.options import Options
from tilewave.pipeline import reference_upscale
from tilewave.pipeline.cascade import Stage
from tilewave.pipeline.job_plan import TILE_CONTEXT_BUDGET, ImageFacts, plan_job
from tilewave.storage import layout
from tilewave.storage.ledger import Ledger, step_entry


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights everywhere, the zero-started layers included, so that every step
    computes something else and a step's context given to another step would show."""
    torch.manual_seed(1)
    net = UniBADiffNet(UniBAConfig(diffusion=True))
    for module in [net.head[-1], net.estimate_tokens, net.estimate_pixels, *net.ada]:
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.05)
    path = tmp_path_factory.mktemp("step") / "random.safetensors"
    save_checkpoint(net, str(path), {"purpose": "test"})
    return str(path)


def _model(path, steps, noise=0.05, seed=5) -> UniBADiff:
    model = UniBA.load(path)
    assert isinstance(model, UniBADiff)
    return model.with_sampler(SamplerSettings(steps, noise, seed))


def _run(src, out, weights, schedule, steps, **kwargs):
    return tilewave.upscale(src, out, model=weights, tile=24, steps=steps, noise=0.05, seed=5,
                            schedule=schedule, executor="local", progress=False, **kwargs)


def test_one_step_at_a_time_equals_all_steps_at_once(weights):
    """The model's side: stepping with the state pickled between steps (as the working
    store keeps it) computes the bytes of its all-steps forward."""
    model = _model(weights, steps=3)
    x = torch.rand(1, 3, 56, 56)
    request = TileRequest(row=0, col=0, core=(0, 40, 0, 40), window=(0, 56, 0, 56),
                          image_size=(90, 90), contexts={})
    whole = model.forward_tile(x, request)
    state = None
    for k in range(3):
        result = model.forward_step(x, request, k, state)
        state = pickle.loads(pickle.dumps(result.state))
        for d, value in result.contexts.items():
            assert torch.equal(value[0][0], whole.contexts[d][k][0][0])
    assert result.output is not None and torch.equal(result.output, whole.output)
    assert torch.equal(run_all_steps(model, x, request, 3).output, whole.output)


@pytest.mark.parametrize("steps", [1, 4, 16])
def test_both_schedules_write_the_same_bytes_and_equal_the_whole_image(weights, tmp_path, steps):
    pixels = random_image((3, 61, 77), "float32", seed=steps)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    tile = _run(src, tmp_path / "tile.zarr", weights, "tile", steps)
    step = _run(src, tmp_path / "step.zarr", weights, "step", steps)
    assert (tile.schedule, step.schedule) == ("tile", "step")
    assert step.tiles_run == step.tiles == 12
    a = zarr.open_array(str(tmp_path / "tile.zarr" / "0"))[:]
    b = zarr.open_array(str(tmp_path / "step.zarr" / "0"))[:]
    assert a.tobytes() == b.tobytes()
    assert np.abs(b - reference_upscale(_model(weights, steps), pixels)).max() <= 1e-4


@pytest.mark.ray
def test_step_schedule_on_ray_workers_writes_the_same_bytes(ray_local, weights, tmp_path):
    pixels = random_image((3, 70, 83), "uint8", seed=3)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    _run(src, tmp_path / "local.zarr", weights, "tile", 3)
    report = tilewave.upscale(src, tmp_path / "ray.zarr", model=weights, tile=24, steps=3,
                              noise=0.05, seed=5, schedule="step", workers=2, progress=False)
    assert report.workers == 2 and report.schedule == "step"
    assert (zarr.open_array(str(tmp_path / "ray.zarr" / "0"))[:].tobytes()
            == zarr.open_array(str(tmp_path / "local.zarr" / "0"))[:].tobytes())


@pytest.mark.subprocess
def test_a_killed_step_run_resumes_mid_sampling_to_the_bytes_of_a_clean_run(weights, tmp_path):
    pixels = random_image((3, 96, 120), "uint8", seed=8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    clean = tmp_path / "clean.zarr"
    _run(src, clean, weights, "tile", 3)
    out = str(tmp_path / "out.zarr")
    args = ["--model", weights, "--tile", "24", "--steps", "3", "--noise", "0.05", "--seed", "5",
            "--schedule", "step", "--local"]
    # Killed once some tiles are part-way through their steps: 20 tiles, 60 steps.
    recorded_steps_before = run_until_recorded([src, out, *args], out, 6,
                                               recorded_tiles=recorded_steps)
    ledger = Ledger(out)
    partial = ledger.steps_done()
    assert recorded_steps_before >= 6 and partial, "the kill must land mid-sampling"
    assert all(0 < ran < 3 for ran in partial.values())
    states = tmp_path / "out.zarr" / ".tilewave" / "states"
    for tile, ran in partial.items():
        assert (states / f"{tile[0]}_{tile[1]}_s{ran - 1}.pkl").exists()
    # A copy whose state of one tile is lost is refused, naming it, before anything runs.
    lost = tmp_path / "lost.zarr"
    shutil.copytree(out, lost)
    tile, ran = next(iter(partial.items()))
    (lost / ".tilewave" / "states" / f"{tile[0]}_{tile[1]}_s{ran - 1}.pkl").unlink()
    with pytest.raises(ResumeMismatchError, match=rf"tile \({tile[0]}, {tile[1]}\) ran {ran} of its 3"):
        _run(src, lost, weights, "step", 3, resume=True)
    report = _run(src, out, weights, "step", 3, resume=True)
    assert report.tiles_run == 20 - len(ledger.done())
    assert zarr.open_array(f"{out}/0")[:].tobytes() == zarr.open_array(f"{clean}/0")[:].tobytes()


def test_the_ledger_keeps_steps_apart_from_tiles(tmp_path):
    out = str(tmp_path / "o.zarr")
    ledger = Ledger(out)
    ledger.record([step_entry(0, 1, 0), step_entry(0, 1, 1), step_entry(1, 1, 0), (0, 0)],
                  [None, None, None, 7])
    again = Ledger(out)
    assert again.done() == {(0, 0)} and again.done_chunks() == set()
    assert again.steps_done() == {(0, 1): 2, (1, 1): 1}
    assert again.checksums() == {(0, 0): 7}
    again.record([(0, 1)], [9])
    again.forget([(1, 1)])
    third = Ledger(out)
    assert third.steps_done() == {} and third.done() == {(0, 0), (0, 1)}
    with open(layout.ledger_path(out)) as f:
        assert "step 0 1 1\n" in f.read()


def _plan(options: Options, desc):
    facts = ImageFacts(height=512, width=512, channels=3)
    return plan_job("/tmp/o.zarr", options, facts, [Stage(desc.name, desc.scale)], [desc]).stages[0]


def test_auto_runs_one_step_at_a_time_where_a_tiles_contexts_would_be_large():
    desc = describe_model("uniba-diff-x2")
    small = _plan(Options(model="uniba-diff-x2"), desc)
    assert not small.stepwise and "schedule" not in small.settings()
    per_pixel, constant = desc.step_context_bytes
    assert 4 * (per_pixel * small.grid.tile + constant) < TILE_CONTEXT_BUDGET
    large = dataclasses.replace(desc, step_context_bytes=(TILE_CONTEXT_BUDGET // 256, 0))
    planned = _plan(Options(model="uniba-diff-x2"), large)
    assert planned.stepwise and planned.settings()["schedule"] == "step"
    assert not _plan(Options(model="uniba-diff-x2", schedule="tile"), large).stepwise


def test_a_schedule_that_cannot_apply_is_refused(tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))
    with pytest.raises(SettingsError, match="schedule apply to multi-step models"):
        tilewave.upscale(src, tmp_path / "o.zarr", model="bicubic", schedule="step",
                         executor="local", progress=False)
    assert not (tmp_path / "o.zarr").exists()
    # A model whose easy tiles may take bicubic (sd-x4's kind): no steps to interleave.
    tolerant = dataclasses.replace(describe_model("uniba-diff-x2"), tolerates_missing_contexts=True)
    with pytest.raises(SettingsError, match="drop --adaptive or use --schedule tile"):
        _plan(Options(model="uniba-diff-x2", schedule="step", adaptive=True), tolerant)
    assert not _plan(Options(model="uniba-diff-x2", adaptive=True), tolerant).stepwise


def test_resuming_with_the_other_schedule_is_refused(weights, tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))
    out = tmp_path / "o.zarr"
    _run(src, out, weights, "step", 2)
    with pytest.raises(ResumeMismatchError, match="schedule"):
        _run(src, out, weights, "tile", 2, overwrite=False, resume=True)


def test_verify_takes_back_tiles_part_way_through_their_steps_too():
    """A damaged tile runs again with every tile above and left of it; under --schedule
    step that includes tiles that ran only some steps, whose earlier steps' contexts are
    gone (their neighbours used them)."""
    from tilewave.pipeline.verify import to_rerun

    tiles, _ = to_rerun({(0, 1)}, set(), {(0, 1), (0, 2)}, set(), True, None, partial={(0, 0)})
    assert tiles == {(0, 0), (0, 1)}


def test_step_applies_to_the_stages_that_have_steps():
    from tilewave.pipeline.cascade import plan_stages

    options = Options(model="uniba-diff-x2,bicubic:3", schedule="step")
    stages = plan_stages(options.model, None)
    descs = [describe_model(s.model, s.scale) for s in stages]
    facts = ImageFacts(height=96, width=96, channels=3)
    plan = plan_job("/tmp/o.zarr", options, facts, stages, descs)
    assert [s.stepwise for s in plan.stages] == [True, False]
