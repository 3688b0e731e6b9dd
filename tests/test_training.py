"""The degradations real scans carry, and the fine-tuning loop's guards."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tilewave.storage.compression import colour_of, estimate_quality, quantisation_tables
from tilewave.training.degradation import (
    ScanDegradation,
    box_downscale,
    jpeg_bytes,
    jpeg_roundtrip,
)
from tilewave.training.finetune import FinetuneSettings, finetune
from tilewave.training.networks import SpanTrainee
from tilewave.training.pairs import Batch


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:128, :128].transpose(2, 0, 1).astype(np.float32) / 255


def test_box_downscale_is_the_block_mean():
    x = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8)
    assert np.allclose(box_downscale(x, 2)[1, 2, 3], x[1, 4:6, 6:8].mean())


@pytest.mark.parametrize("chroma,colour", [("420", "YCbCr 4:2:0"), ("444", "YCbCr 4:4:4"),
                                           ("rgb", "RGB")])
def test_jpeg_is_written_as_asked(chroma, colour):
    stream = jpeg_bytes(photo(), 40, chroma)
    assert estimate_quality(quantisation_tables(stream)[0]) == (40, True)
    assert colour_of(stream) == colour
    back = jpeg_roundtrip(photo(), 40, chroma)
    assert back.shape == photo().shape and 0.005 < np.abs(back - photo()).mean() < 0.05


def test_every_history_keeps_shapes_and_ranges_and_repeats_with_its_seed():
    degradation = ScanDegradation(scale=2)
    seen = set()
    for seed in range(60):
        made = degradation.draw(photo(), random.Random(seed))
        assert made.lr.shape == (3, 64, 64) and made.hr.shape == (3, 128, 128)
        assert made.lr.dtype == np.float32 and 0 <= made.lr.min() and made.lr.max() <= 1
        again = degradation.draw(photo(), random.Random(seed))
        assert np.array_equal(made.lr, again.lr) and made.history == again.history
        if made.gain < 1:  # a 16-bit range: quantised to 16 bits, and no JPEG
            assert "jpeg" not in made.history
            assert np.allclose(made.lr * 65535, np.rint(made.lr * 65535), atol=1e-3)
        seen.update(step.split()[0] for step in made.history.split(", "))
    assert {"box", "bicubic", "noise", "jpeg", "range"} <= seen


class Spiky:
    """Batches of a fixed pair whose target is near the network's own output, and one
    absurd batch at ``spike``: the loss runs away."""

    def __init__(self, trainee: SpanTrainee, spike: int):
        self.calls, self.spike = 0, spike
        rng = np.random.default_rng(0)
        self.lr = torch.from_numpy(rng.random((2, 3, 20, 20), dtype=np.float32))
        with torch.no_grad():
            own = trainee.forward(self.lr, (0, 0))
        self.hr = own + torch.from_numpy(rng.normal(0, 0.05, own.shape).astype(np.float32))

    def batch(self, n, rng):
        self.calls += 1
        hr = self.hr + (50.0 if self.calls == self.spike else 0.0)
        return Batch(self.lr, hr, torch.ones(2), torch.zeros(2, 1))


def test_a_runaway_loss_rolls_back_and_halves_the_rate(tmp_path):
    from tilewave.models.span.arch import SpanNet

    torch.manual_seed(0)
    net = SpanNet(2, features=8, blocks=1)
    trainee = SpanTrainee(net, 2, margin=2)
    out = tmp_path / "net.safetensors"
    threads = torch.get_num_threads()
    wanted = 1 if threads > 1 else 2
    record = finetune(trainee, Spiky(trainee, spike=80), FinetuneSettings(batch=2, lr=1e-4, steps=90,
                                                                  threads=wanted), str(out), {})
    assert record["threads"] == wanted
    # The caller's later convolutions (an in-process job) run on the threads they had.
    assert torch.get_num_threads() == threads
    assert record["rollbacks"] == [79] and record["steps"] == 90
    assert np.isfinite(record["loss"]) and record["loss"] < 0.2
    from tilewave.models.span.weights import load_span_file

    assert sum(p.numel() for p in load_span_file(str(out)).parameters()) == sum(
        p.numel() for p in net.parameters())


def test_a_budget_is_required(tmp_path):
    from tilewave.errors import SettingsError
    from tilewave.models.span.arch import SpanNet

    trainee = SpanTrainee(SpanNet(2, features=8, blocks=1), 2)
    with pytest.raises(SettingsError, match="--steps or --minutes"):
        finetune(trainee, Spiky(trainee, 0), FinetuneSettings(), str(tmp_path / "n.safetensors"), {})
