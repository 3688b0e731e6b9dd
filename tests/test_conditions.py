"""Conditioned models: told the input's JPEG quality, which a job reads from the file."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
import torch
import zarr
from PIL import Image

import tilewave
from tilewave.models import load_model
from tilewave.models.conditions import jpeg_level
from tilewave.models.span.arch import SpanNet
from tilewave.models.span.weights import save_span
from tilewave.models.uniba.arch import UniBANet
from tilewave.models.uniba.config import UniBAConfig
from tilewave.pipeline import reference_upscale


def test_the_level_runs_from_zero_for_no_jpeg_to_almost_one_for_the_worst():
    assert jpeg_level(None) == 0.0 and jpeg_level(100) == 0.0
    assert jpeg_level(90) == pytest.approx(0.1) and jpeg_level(1) == pytest.approx(0.99)


def test_a_new_condition_channel_changes_nothing_until_trained():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 24)
    span = SpanNet(2, features=8, blocks=2).eval()
    grown = span.with_conditions(1).eval()
    c = torch.tensor([[0.7], [0.1]])
    assert torch.equal(span(x), grown(x, c)) and torch.equal(span(x), grown(x))
    uniba = UniBANet(UniBAConfig(layers=1, dim=16, heads=1, stem=8)).eval()
    torch.nn.init.normal_(uniba.head[-1].weight, std=0.1)  # not bicubic alone
    window = torch.rand(1, 3, 16 + 2 * uniba.cfg.halo, 24 + 2 * uniba.cfg.halo)
    told = uniba.with_conditions(("jpeg_quality",)).eval()
    assert told.cfg.conditions == ("jpeg_quality",)
    assert torch.allclose(uniba.forward_tile(window, (8, 16))[0],
                          told.forward_tile(window, (8, 16), None, torch.tensor([[0.7]]))[0])


@pytest.fixture
def conditioned(tmp_path):
    """A small SPAN whose condition channel matters (random weights), as a file."""
    torch.manual_seed(1)
    net = SpanNet(2, features=8, blocks=1, conditions=1)
    with torch.no_grad():
        net.head.weight[:, 3] = torch.randn_like(net.head.weight[:, 3]) * 0.01
    path = tmp_path / "told.safetensors"
    save_span(net, str(path), {"trained_for": "a test"})
    return str(path)


def test_a_job_tells_the_model_the_quality_of_its_jpeg_input(tmp_path, conditioned):
    from skimage import data

    pixels = data.coffee()[:64, :96]
    jpg, png = tmp_path / "in.jpg", tmp_path / "in.png"
    Image.fromarray(pixels).save(jpg, quality=70)
    decoded = np.asarray(Image.open(jpg))
    png.write_bytes(imagecodecs.png_encode(decoded))  # the same pixels, not JPEG to a reader
    model = load_model(conditioned)
    assert model.descriptor.conditions == ("jpeg_quality",)
    outputs = {}
    for path in (jpg, png):
        out = tmp_path / f"{path.suffix[1:]}.zarr"
        tilewave.upscale(str(path), out, model=conditioned, tile=32, executor="local", progress=False)
        outputs[path.suffix] = zarr.open_array(f"{out}/0")[:]
        told = zarr.open_group(str(out)).attrs["tilewave"]["settings"]["condition"]
        assert told == {"jpeg_quality": 70 if path == jpg else None}
    lr = np.ascontiguousarray(decoded.transpose(2, 0, 1))
    expected = {".jpg": reference_upscale(model.with_condition({"jpeg_quality": 70}), lr),
                ".png": reference_upscale(model, lr)}
    for suffix, out in outputs.items():
        assert np.abs(out.astype(int) - expected[suffix]).max() <= 1
    assert np.abs(outputs[".jpg"].astype(int) - outputs[".png"]).max() > 2
