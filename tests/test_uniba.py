"""The UniBA transformer: tiles passing KV-cache contexts equal the whole-image forward."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import zarr
from helpers import random_image, tiled_by_hand, zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.models import load_model
from tilewave.models.uniba import UniBA, weights_path
from tilewave.models.uniba.arch import UniBAConfig, UniBANet, context_bytes
from tilewave.models.uniba.train import TrainSettings, save_checkpoint, train
from tilewave.pipeline import reference_upscale


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A UniBA net with random weights everywhere (the trained head starts at zero,
    which would hide mistakes in the transformer part behind plain bicubic)."""
    torch.manual_seed(0)
    net = UniBANet(UniBAConfig())
    for p in net.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path_factory.mktemp("uniba") / "random.safetensors"
    save_checkpoint(net, str(path), {"purpose": "test"})
    return str(path)


def _tiled(model, pixels, tile, drop=None):
    """Every tile in raster order, contexts handed by hand; ``drop`` names one inbound
    context to withhold from every tile."""
    def withhold(inbound):
        if drop:
            inbound[drop] = None

    return tiled_by_hand(model, pixels, tile, withhold)


@pytest.mark.parametrize("size,tile", [((75, 61), 16), ((9, 130), 24), ((40, 40), 40)])
def test_tiles_equal_the_whole_image(weights, size, tile):
    model = UniBA.load(weights)
    pixels = random_image((3, *size), "float32", seed=1)
    whole = reference_upscale(model, pixels)
    assert np.abs(_tiled(model, pixels, tile) - whole).max() <= 1e-4


@pytest.mark.parametrize("drop", ["left", "top", "top_left"])
def test_every_context_matters(weights, drop):
    model = UniBA.load(weights)
    pixels = random_image((3, 48, 48), "float32", seed=2)
    whole = reference_upscale(model, pixels)
    assert np.abs(_tiled(model, pixels, 16, drop=drop) - whole).max() > 1e-5


def test_far_positions_keep_their_precision(weights):
    """Rotary attention depends only on offsets between tokens, so a tile deep inside a
    gigapixel image must compute what it computes at the origin; angles of large global
    positions lose precision unless they are computed carefully."""
    net = UniBA.load(weights).net
    m = net.cfg.halo
    window = torch.rand(1, 3, 16 + 2 * m, 16 + 2 * m)
    a, _ = net.forward_tile(window, (0, 0))
    b, _ = net.forward_tile(window, (200_000, 300_000))
    assert (a - b).abs().max() <= 1e-4


@pytest.mark.ray
@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_on_ray_equals_whole_image(ray_local, weights, tmp_path, workers):
    pixels = random_image((3, 83, 70), "float32", seed=3)
    src = zarr.create_array(str(tmp_path / "in.zarr"), shape=pixels.shape, chunks=(3, 32, 32),
                            dtype="float32")
    src[:] = pixels
    report = tilewave.upscale(str(tmp_path / "in.zarr"), tmp_path / "out.zarr", model=weights,
                              tile=24, workers=workers, progress=False)
    assert report.mode == "context" and report.workers == workers
    out = zarr.open_array(str(tmp_path / "out.zarr" / "0"))[:]
    assert np.abs(out - reference_upscale(UniBA.load(weights), pixels)).max() <= 1e-4


def test_contexts_are_the_border_blocks_kv(weights):
    cfg = UniBAConfig()
    net = UniBA.load(weights).net
    tile_blocks = 4
    side = tile_blocks * cfg.block
    _, ctx = net.forward_tile(torch.rand(1, 3, side + 2 * cfg.halo, side + 2 * cfg.halo), (0, 0))
    heads, t, hd = cfg.heads, cfg.tokens_per_side ** 2, cfg.dim // cfg.heads
    per_block_layer = 2 * heads * t * hd * 4  # keys and values, float32
    assert context_bytes(ctx) == (2 * tile_blocks + 1) * cfg.layers * per_block_layer


def test_saved_contexts_hold_only_the_border_blocks(tmp_path):
    """The contexts a worker persists are views of the tile's keys and values: the files
    must hold those border blocks, not the whole tile's tensors behind the views."""
    from tilewave.pipeline.tile_work import to_cpu as _to_cpu
    from tilewave.storage.contexts import ContextStore

    net = load_model("uniba-x2").net
    cfg = net.cfg
    side = 32 * cfg.block  # a 256-pixel tile
    _, ctx = net.forward_tile(torch.rand(1, 3, side + 2 * cfg.halo, side + 2 * cfg.halo), (0, 0))
    store = ContextStore(str(tmp_path / "out.zarr"))
    for direction, value in ctx.items():
        saved = store.save((0, 0), direction, _to_cpu(value))
        size = os.path.getsize(saved.path)
        assert size < 1.1 * context_bytes({direction: value}) + 16_384, (direction, size)
        for (k, v), (k2, v2) in zip(value, saved.load()):
            assert torch.equal(k, k2) and torch.equal(v, v2)


def test_tile_must_be_whole_blocks(tmp_path, weights):
    pixels = random_image((3, 20, 20), "float32")
    src = zarr.create_array(str(tmp_path / "in.zarr"), shape=pixels.shape, chunks=(3, 20, 20),
                            dtype="float32")
    src[:] = pixels
    with pytest.raises(SettingsError, match="multiple of 8"):
        tilewave.upscale(str(tmp_path / "in.zarr"), tmp_path / "o.zarr", model=weights, tile=20,
                         executor="local", progress=False)


def test_training_writes_a_loadable_checkpoint_that_moves_off_bicubic(tmp_path):
    import imagecodecs
    from skimage import data

    img = tmp_path / "coins.png"
    img.write_bytes(imagecodecs.png_encode(data.coins()))  # grey: trained as 3 channels
    out = tmp_path / "w.safetensors"
    record = train([str(img)], str(out), TrainSettings(steps=3, batch=2, crop=16), progress=False)
    assert record["steps"] == 3 and os.path.exists(out)
    model = UniBA.load(str(out))
    x = torch.rand(1, 3, 24, 24)
    bicubic = load_model("bicubic", 2).forward_image(x)
    # The head starts at zero (exactly bicubic); three steps must have moved it.
    assert (model.forward_image(x) - bicubic).abs().max() > 0


@pytest.mark.skipif(not os.path.exists(weights_path(2)), reason="shipped weights not built")
def test_shipped_model_tiles_equal_its_whole_image(tmp_path):
    model = load_model("uniba-x2")
    assert model.descriptor.scale == 2 and model.descriptor.modes == ("context",)
    assert 100_000 < model.descriptor.parameters < 5_000_000
    assert os.path.getsize(weights_path(2)) < 20 * 1024**2
    from skimage import data

    pixels = np.ascontiguousarray(data.coffee()[:101, :133].transpose(2, 0, 1))  # uint8
    src = zarr_input(tmp_path / "in.zarr", pixels)
    tilewave.upscale(src, tmp_path / "o.zarr", model="uniba-x2", tile=32, executor="local",
                     progress=False)
    out = zarr.open_array(str(tmp_path / "o.zarr" / "0"))[:].astype(int)
    # Float differences of 1e-6 may flip a rounding: at most 1 LSB, on few pixels.
    diff = np.abs(out - reference_upscale(model, pixels).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
