"""uniba-diff-x2: a multi-step bridge sampler whose tiles carry per-step KV contexts.

Tiled runs must equal the whole-image block-raster forward of the same model, for any
step count, tile size and worker count; noise must be a function of position only.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import zarr
from helpers import random_image, run_until_recorded, tiled_by_hand, zarr_input

import tilewave
from tilewave.errors import ResumeMismatchError, SettingsError
from tilewave.models import describe_model, load_model
from tilewave.models.base import SamplerSettings
from tilewave.models.position_noise import position_noise
from tilewave.models.uniba import NOISE_MAX, UniBA, UniBADiff, weights_path
from tilewave.models.uniba.arch import UniBAConfig, context_bytes
from tilewave.models.uniba.bridge import NOISE_MAX as NET_NOISE_MAX
from tilewave.models.uniba.bridge import UniBADiffNet
from tilewave.models.uniba.train import TrainSettings, save_checkpoint, train
from tilewave.pipeline import reference_upscale
from tilewave.pipeline.grid import TileGrid
from tilewave.pipeline.upscale_window import run_tile

SHIPPED = os.path.exists(weights_path(2, diffusion=True))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A bridge network with random weights everywhere, the layers that start at zero
    included: otherwise every step would compute the same thing and the steps' contexts
    could be swapped without a trace."""
    torch.manual_seed(0)
    net = UniBADiffNet(UniBAConfig(diffusion=True))
    zero_started = [net.head[-1], net.estimate_tokens, net.estimate_pixels, *net.ada]
    for module in zero_started:
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.05)
    path = tmp_path_factory.mktemp("uniba-diff") / "random.safetensors"
    save_checkpoint(net, str(path), {"purpose": "test"})
    return str(path)


def _model(path, steps=2, noise=0.05, seed=7) -> UniBADiff:
    model = UniBA.load(path)
    assert isinstance(model, UniBADiff)
    return model.with_sampler(SamplerSettings(steps, noise, seed))


def _tiled(model, pixels, tile, withhold=None):
    """Every tile in raster order, contexts handed by hand. ``withhold`` is
    ``(direction, step)``: that step's context from that neighbour is dropped."""
    def drop_step(inbound):
        if withhold and inbound[withhold[0]] is not None:
            steps = list(inbound[withhold[0]])
            steps[withhold[1]] = None
            inbound[withhold[0]] = steps

    return tiled_by_hand(model, pixels, tile, drop_step)


# Odd sizes: neither a multiple of the tile nor of the 8-pixel block.
SIZES = {64: (139, 101), 128: (147, 269), 256: (263, 301)}


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("tile", [64, 128, 256])
def test_tiles_equal_the_whole_image(weights, steps, tile):
    if steps == 4 and tile == 256:
        pytest.skip("covered by the slow variant below")
    model = _model(weights, steps=steps)
    pixels = random_image((3, *SIZES[tile]), "float32", seed=steps)
    whole = reference_upscale(model, pixels)
    assert np.abs(_tiled(model, pixels, tile) - whole).max() <= 1e-4


@pytest.mark.slow
def test_four_steps_in_tiles_of_256_equal_the_whole_image(weights):
    model = _model(weights, steps=4)
    pixels = random_image((3, *SIZES[256]), "float32", seed=4)
    assert np.abs(_tiled(model, pixels, 256) - reference_upscale(model, pixels)).max() <= 1e-4


def test_deterministic_sampling_equals_whole_image(weights):
    model = _model(weights, steps=3, noise=0.0)
    pixels = random_image((3, 70, 83), "float32", seed=9)
    assert np.abs(_tiled(model, pixels, 24) - reference_upscale(model, pixels)).max() <= 1e-4


@pytest.mark.parametrize("direction", ["left", "top", "top_left"])
@pytest.mark.parametrize("step", [0, 1])
def test_every_steps_context_matters(weights, direction, step):
    model = _model(weights, steps=2)
    pixels = random_image((3, 48, 48), "float32", seed=2)
    whole = reference_upscale(model, pixels)
    assert np.abs(_tiled(model, pixels, 16, withhold=(direction, step)) - whole).max() > 1e-5


def test_contexts_hold_every_step_and_layer(weights):
    model = _model(weights, steps=3)
    cfg = model.net.cfg
    tile_blocks = 4
    side = tile_blocks * cfg.block
    request_px = random_image((3, side, side), "float32")
    grid = TileGrid(side, side, side, 2, halo=cfg.halo)
    _, ctx = run_tile(model, grid, grid[0, 0], request_px, "context", {})
    assert set(ctx) == {"right", "below", "below_right"}
    assert all(len(per_step) == 3 and len(per_step[0]) == cfg.layers for per_step in ctx.values())
    per_block_layer = 2 * cfg.heads * cfg.tokens_per_side ** 2 * (cfg.dim // cfg.heads) * 4
    assert context_bytes(ctx) == 3 * (2 * tile_blocks + 1) * cfg.layers * per_block_layer


def test_noise_is_a_function_of_position():
    whole = position_noise(3, 1, 3, -5, 60, 10, 90)
    part = position_noise(3, 1, 3, 20, 41, 33, 70)
    np.testing.assert_array_equal(part, whole[:, 25:46, 23:60])
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05
    for other in (position_noise(4, 1, 3, -5, 60, 10, 90), position_noise(3, 2, 3, -5, 60, 10, 90)):
        assert abs(np.corrcoef(whole.ravel(), other.ravel())[0, 1]) < 0.02
    # Neighbouring pixels and channels are independent too.
    assert abs(np.corrcoef(whole[0, :, 1:].ravel(), whole[0, :, :-1].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(whole[0].ravel(), whole[1].ravel())[0, 1]) < 0.03


def test_seed_and_noise_change_the_output_and_zero_noise_ignores_the_seed(weights):
    pixels = random_image((3, 40, 40), "float32", seed=5)
    a = reference_upscale(_model(weights, noise=0.05, seed=1), pixels)
    b = reference_upscale(_model(weights, noise=0.05, seed=2), pixels)
    assert np.abs(a - b).max() > 1e-3
    c = reference_upscale(_model(weights, noise=0.0, seed=1), pixels)
    d = reference_upscale(_model(weights, noise=0.0, seed=2), pixels)
    np.testing.assert_array_equal(c, d)


def test_one_step_from_a_one_step_checkpoint_is_that_checkpoint(tmp_path):
    """Warm start: every added layer is zero, so the bridge model computes exactly what
    the one-step model does, whatever the steps and noise."""
    from tilewave.models.uniba.train import _initial_network

    net, _ = _initial_network(TrainSettings(diffusion=True))
    model = UniBADiff(net, SamplerSettings(steps=4, noise=0.1, seed=3))
    x = torch.rand(1, 3, 40, 48)
    with torch.inference_mode():
        assert (model.forward_image(x) - load_model("uniba-x2").forward_image(x)).abs().max() < 1e-5


def test_noise_limit_is_the_trained_one():
    assert NOISE_MAX == NET_NOISE_MAX


@pytest.mark.ray
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_pipeline_on_ray_equals_whole_image(ray_local, weights, tmp_path, steps):
    pixels = random_image((3, 83, 70), "float32", seed=3)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    report = tilewave.upscale(src, tmp_path / "out.zarr", model=weights, tile=24, workers=2,
                              steps=steps, noise=0.05, seed=7, progress=False)
    assert report.mode == "context" and report.workers == 2
    assert report.sampler == {"steps": steps, "noise": 0.05, "seed": 7}
    out = zarr.open_array(str(tmp_path / "out.zarr" / "0"))[:]
    assert np.abs(out - reference_upscale(_model(weights, steps=steps), pixels)).max() <= 1e-4


def test_resume_with_other_sampler_settings_is_refused(weights, tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))
    out = tmp_path / "o.zarr"
    tilewave.upscale(src, out, model=weights, tile=16, steps=2, executor="local", progress=False)
    with pytest.raises(ResumeMismatchError, match="steps"):
        tilewave.upscale(src, out, model=weights, tile=16, steps=3, resume=True,
                         executor="local", progress=False)


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "bicubic", "steps": 3}, "steps apply to multi-step models"),
    ({"model": "uniba-x2", "noise": 0.1, "seed": 2}, "noise and seed apply"),
])
def test_sampler_options_on_a_one_pass_model_are_refused(tmp_path, kwargs, message):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))
    with pytest.raises(SettingsError, match=message):
        tilewave.upscale(src, tmp_path / "o.zarr", executor="local", progress=False, **kwargs)
    assert not (tmp_path / "o.zarr").exists()


def test_noise_beyond_the_trained_limit_is_refused(weights, tmp_path):
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))
    with pytest.raises(SettingsError, match="between 0 and 0.1"):
        tilewave.upscale(src, tmp_path / "o.zarr", model=weights, noise=0.5, executor="local",
                         progress=False)


def test_training_a_bridge_model_moves_it_off_its_start(tmp_path):
    import imagecodecs
    from skimage import data

    img = tmp_path / "coins.png"
    img.write_bytes(imagecodecs.png_encode(data.coins()))
    out = tmp_path / "w.safetensors"
    record = train([str(img)], str(out), TrainSettings(steps=3, batch=2, crop=16, diffusion=True),
                   progress=False)
    assert record["steps"] == 3 and record["init"] == "uniba_x2.safetensors"
    model = UniBA.load(str(out))
    assert isinstance(model, UniBADiff) and model.descriptor.name == "uniba-diff-x2"
    x = torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        assert (model.forward_image(x) - load_model("uniba-x2").forward_image(x)).abs().max() > 0


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_killed_run_resumes_to_the_bytes_of_a_clean_run(ray_local, weights, tmp_path):
    pixels = random_image((3, 160, 200), "uint8", seed=8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    args = ["--model", weights, "--tile", "24", "--steps", "2", "--noise", "0.05", "--seed", "3"]
    options = {"model": weights, "tile": 24, "steps": 2, "noise": 0.05, "seed": 3}
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, clean, progress=False, **options)
    out = str(tmp_path / "out.zarr")
    total = 7 * 9
    recorded = run_until_recorded([src, out, *args], out, 12)
    assert 12 <= recorded < total, "the kill must land mid-run"
    report = tilewave.upscale(src, out, resume=True, progress=False, **options)
    assert report.tiles_run == total - recorded
    assert zarr.open_array(f"{out}/0")[:].tobytes() == zarr.open_array(f"{clean}/0")[:].tobytes()


def test_describing_the_model_needs_no_weights():
    desc = describe_model("uniba-diff-x2")
    assert desc.sampler == SamplerSettings(4, 0.0, 0) and desc.noise_max == NOISE_MAX
    assert desc.modes == ("context",) and desc.block == 8 and "per sampler step" in (desc.context_format or "")


@pytest.mark.skipif(not SHIPPED, reason="shipped weights not built")
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_shipped_model_gives_the_same_bytes_for_tiles_of_128_and_256(tmp_path, noise):
    from skimage import data

    assert os.path.getsize(weights_path(2, diffusion=True)) < 20 * 1024**2
    pixels = np.ascontiguousarray(data.astronaut()[100:363, 150:461].transpose(2, 0, 1))  # uint8
    model = load_model("uniba-diff-x2", 2, SamplerSettings(4, noise, 0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker runs: one thread, one summation order
    try:
        a, b = _tiled(model, pixels, 128), _tiled(model, pixels, 256)
    finally:
        torch.set_num_threads(threads)
    assert a.dtype == np.uint8 and a.tobytes() == b.tobytes()


def test_models_lists_the_sampler_defaults(capsys):
    from tilewave.cli import main

    assert main(["models"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("uniba-diff-x2"))
    assert "--steps 4 --noise 0 --seed 0" in line and "context" in line


def test_negative_noise_is_refused_by_the_command_line(capsys):
    from tilewave.cli import main

    with pytest.raises(SystemExit) as info:
        main(["upscale", "in.png", "out.zarr", "--model", "uniba-diff-x2", "--noise", "-0.1"])
    assert info.value.code == 2
    assert "--noise: -0.1 must be a finite number of at least 0" in capsys.readouterr().err
