"""SR3 checkpoints (Diff2X's layout) run from ``--model PATH``.

No real Diff2X weights are used: checkpoints are written with random weights in the
real layout (real key names, shapes at a reduced width) and a JSON configuration beside.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from helpers import random_image, zarr_input

import tilewave
from tilewave.errors import SettingsError
from tilewave.models import describe_model
from tilewave.models.sr3 import SR3Model, expected_shapes, read_config
from tilewave.models.sr3.arch import SR3Config, SR3UNet
from tilewave.models.sr3.sampler import kept_steps

#: A small network in the real layout: two residual blocks fewer per level, 16 channels,
#: attention at the deepest level (16 >> 2 = 4) as Diff2X's 64 >> 2 = 16, three steps.
SMALL: dict[str, Any] = {"inner_channel": 16, "norm_groups": 8, "res_blocks": 1, "channel_multiplier": [1, 2, 2],
         "attn_res": [4], "image_size": 16, "n_timestep": 3, "dropout": 0.0}


def reference_shapes(cfg: SR3Config) -> dict[str, tuple[int, ...]]:
    """Key names and shapes as the SR3 UNet of Janspiry/Image-Super-Resolution-via-
    Iterative-Refinement (``model/sr3_modules/unet.py``, with ``norm_groups``, the version
    Diff2X's ``define_G`` calls) builds them, enumerated here from that structure:
    ``noise_level_mlp`` = Sequential(PositionalEncoding, Linear, Swish, Linear);
    ``Block`` = Sequential(GroupNorm, Swish, Dropout|Identity, Conv3x3);
    ``ResnetBlock`` = noise_func.noise_func.0 (Linear), block1, block2, res_conv if the
    width changes; ``SelfAttention`` = norm, qkv (no bias), out; downs, mid, ups,
    final_conv as that file orders them."""
    c = cfg.inner_channel
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, bias=True):
        out[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            out[f"{name}.bias"] = (cout,)

    def norm(name, ch):
        out[f"{name}.weight"] = out[f"{name}.bias"] = (ch,)

    def block(name, cin, cout):
        norm(f"{name}.block.0", cin)
        conv(f"{name}.block.3", cin, cout, 3)

    def res(name, cin, cout, attn):
        out[f"{name}.res_block.noise_func.noise_func.0.weight"] = (cout, c)
        out[f"{name}.res_block.noise_func.noise_func.0.bias"] = (cout,)
        block(f"{name}.res_block.block1", cin, cout)
        block(f"{name}.res_block.block2", cout, cout)
        if cin != cout:
            conv(f"{name}.res_block.res_conv", cin, cout, 1)
        if attn:
            norm(f"{name}.attn.norm", cout)
            conv(f"{name}.attn.qkv", cout, 3 * cout, 1, bias=False)
            conv(f"{name}.attn.out", cout, cout, 1)

    out["noise_level_mlp.1.weight"], out["noise_level_mlp.1.bias"] = (4 * c, c), (4 * c,)
    out["noise_level_mlp.3.weight"], out["noise_level_mlp.3.bias"] = (c, 4 * c), (c,)
    conv("downs.0", cfg.in_channel, c, 3)
    i, pre, feats, res_now = 1, c, [c], cfg.image_size
    n = len(cfg.channel_mults)
    for level, mult in enumerate(cfg.channel_mults):
        for _ in range(cfg.res_blocks):
            res(f"downs.{i}", pre, c * mult, res_now in cfg.attn_res)
            pre, i = c * mult, i + 1
            feats.append(pre)
        if level != n - 1:
            conv(f"downs.{i}.conv", pre, pre, 3)
            feats.append(pre)
            i, res_now = i + 1, res_now // 2
    res("mid.0", pre, pre, True)
    res("mid.1", pre, pre, False)
    i = 0
    for level in reversed(range(n)):
        for _ in range(cfg.res_blocks + 1):
            res(f"ups.{i}", pre + feats.pop(), c * cfg.channel_mults[level], res_now in cfg.attn_res)
            pre, i = c * cfg.channel_mults[level], i + 1
        if level > 0:
            conv(f"ups.{i}.conv", pre, pre, 3)
            i, res_now = i + 1, res_now * 2
    block("final_conv", pre, cfg.out_channel)
    return out


def test_layout_is_the_reference_one_for_diff2x_and_small_configs():
    diff2x = SR3Config()  # Diff2X's config/diff2x.json: 128, (1, 2, 2), [16], 4 blocks, 64 px
    assert (diff2x.inner_channel, diff2x.channel_mults, diff2x.attn_res, diff2x.res_blocks,
            diff2x.norm_groups, diff2x.image_size, diff2x.n_timestep) == (
        128, (1, 2, 2), (16,), 4, 16, 64, 10)
    ours = expected_shapes(diff2x)
    assert ours == reference_shapes(diff2x)
    assert list(ours) == list(reference_shapes(diff2x))  # same order too
    assert sum(int(np.prod(s)) for s in ours.values()) > 30_000_000
    # 64 px: downs 0 conv, 1-4 blocks, 5 down, 6-9, 10 down, 11-14 at 16 px (attention);
    # ups 0-4 at 16 px (attention), 5 up, 6-10, 11 up, 12-16; mid.0 attends.
    assert {"downs.5.conv.weight", "downs.10.conv.weight", "ups.5.conv.weight",
            "ups.11.conv.weight", "ups.16.res_block.block2.block.3.weight",
            "mid.0.attn.qkv.weight"} <= set(ours)
    attending = sorted({k.split(".attn.")[0] for k in ours if ".attn." in k})
    assert attending == sorted([f"downs.{i}" for i in range(11, 15)]
                               + [f"ups.{i}" for i in range(5)] + ["mid.0"])
    assert ours["downs.0.weight"] == (128, 6, 3, 3) and ours["final_conv.block.3.weight"] == (3, 128, 3, 3)
    small = SR3Config(**{**{k: v for k, v in SMALL.items() if k != "channel_multiplier"},
                         "channel_mults": (1, 2, 2), "attn_res": (4,)})
    assert expected_shapes(small) == reference_shapes(small)


def test_config_in_sr3_layout_and_steps(tmp_path):
    nested = {"model": {"unet": {"in_channel": 6, "out_channel": 3, "inner_channel": 32,
                                 "norm_groups": 16, "channel_multiplier": [1, 2],
                                 "attn_res": [8], "res_blocks": 2, "dropout": 0.2},
                        "beta_schedule": {"train": {"n_timestep": 1000},
                                          "val": {"schedule": "linear", "n_timestep": 7,
                                                  "linear_start": 1e-6, "linear_end": 1e-2}},
                        "diffusion": {"image_size": 32, "channels": 3}}}
    text = json.dumps(nested, indent=1).replace('"unet": {', '"unet": { // the network')
    assert "// the network" in text
    (tmp_path / "m.json").write_text(text)
    cfg = read_config(str(tmp_path / "m.pth"))
    assert (cfg.inner_channel, cfg.channel_mults, cfg.res_blocks, cfg.n_timestep,
            cfg.image_size) == (32, (1, 2), 2, 7, 32)
    assert kept_steps(10, 10) == list(range(10)) and kept_steps(10, 2) == [0, 9]
    (tmp_path / "m.json").write_text(json.dumps({"inner_chanel": 8}))
    with pytest.raises(SettingsError, match="inner_chanel"):
        read_config(str(tmp_path / "m.pth"))


def _checkpoint(tmp_path, name="diff2x_gen.pth", edit=None):
    """A random SR3 network saved as SR3's diffusion wrapper saves it: ``denoise_fn.``
    keys and the schedule's buffers beside them."""
    cfg = SR3Config(**{**{k: v for k, v in SMALL.items() if k != "channel_multiplier"},
                       "channel_mults": (1, 2, 2), "attn_res": (4,)})
    torch.manual_seed(0)
    net = SR3UNet(cfg)
    state = {f"denoise_fn.{k}": v for k, v in net.state_dict().items()}
    state["betas"] = torch.linspace(1e-6, 1e-2, 3)
    if edit:
        edit(state)
    path = tmp_path / name
    torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps(SMALL))
    return str(path)


def _run(tmp_path, model, name, **kwargs):
    src = str(tmp_path / "in.zarr")
    if not (tmp_path / "in.zarr").exists():
        zarr_input(src, random_image((3, 20, 20), "uint8", seed=3), chunk=20)
    out = tmp_path / f"{name}.zarr"
    tilewave.upscale(src, out, model=model, executor="local", progress=False, **kwargs)
    return zarr.open_array(f"{out}/0")[:]


def test_checkpoint_runs_in_blend_mode_deterministically(tmp_path):
    model = _checkpoint(tmp_path)
    desc = describe_model(model)
    assert desc.default_mode == "blend" and desc.scale == 2 and desc.steps_max == 3
    assert desc.sampler is not None and desc.sampler.steps == 3 and desc.positional
    assert desc.sampler.early_stop == 0.0  # accepted, and off unless asked for
    a = _run(tmp_path, model, "a", tile=12)
    assert a.shape == (3, 40, 40) and a.dtype == np.uint8
    assert a.std() > 0
    b = _run(tmp_path, model, "b", tile=12)
    assert a.tobytes() == b.tobytes()
    c = _run(tmp_path, model, "c", tile=12, seed=5)
    assert a.tobytes() != c.tobytes()
    d = _run(tmp_path, model, "d", tile=12, steps=1)
    assert d.shape == a.shape and a.tobytes() != d.tobytes()
    with pytest.raises(SettingsError, match="at most 3"):
        _run(tmp_path, model, "e", tile=12, steps=4)


def test_halo_mode_needs_a_halo_and_then_runs(tmp_path):
    model = _checkpoint(tmp_path)
    with pytest.raises(SettingsError, match="receptive field"):
        _run(tmp_path, model, "h0", tile=10, mode="halo")
    a = _run(tmp_path, model, "h1", tile=10, mode="halo", halo=4)
    b = _run(tmp_path, model, "h2", tile=10, mode="halo", halo=4)
    assert a.shape == (3, 40, 40) and a.tobytes() == b.tobytes()


def test_wrong_keys_are_one_line_settings_error(tmp_path):
    def rename(state):
        state["denoise_fn.downs.1.res_block.blockX.weight"] = state.pop(
            "denoise_fn.downs.1.res_block.block1.block.3.weight")

    model = _checkpoint(tmp_path, "bad.pth", rename)
    with pytest.raises(SettingsError) as info:
        _run(tmp_path, model, "bad", tile=12)
    message = str(info.value)
    assert "\n" not in message and "missing" in message and "unexpected" in message
    assert "downs.1.res_block.block1.block.3.weight" in message

    def reshape(state):
        state["denoise_fn.final_conv.block.3.bias"] = torch.zeros(4)

    model = _checkpoint(tmp_path, "bad2.pth", reshape)
    with pytest.raises(SettingsError, match="of another shape"):
        describe_model(model)


def _sr3_loop(net, condition, noise):
    """SR3's ``p_sample_loop`` for a conditional model, written from its buffers
    (``posterior_mean_coef1/2``, ``posterior_log_variance_clipped``, noise level
    ``sqrt_alphas_cumprod_prev[t + 1]``) with every step of the schedule."""
    b = np.linspace(net.cfg.linear_start, net.cfg.linear_end, net.cfg.n_timestep)
    ab = np.cumprod(1 - b)
    ab_prev = np.append(1.0, ab[:-1])
    coef1 = b * np.sqrt(ab_prev) / (1 - ab)
    coef2 = (1 - ab_prev) * np.sqrt(1 - b) / (1 - ab)
    log_var = np.log(np.maximum(b * (1 - ab_prev) / (1 - ab), 1e-20))
    x = noise(net.cfg.n_timestep)
    for t in reversed(range(net.cfg.n_timestep)):
        level = torch.full((1,), float(np.sqrt(ab[t])))
        eps = net(torch.cat([condition, x], 1), level)
        x0 = (np.sqrt(1 / ab[t]) * x - np.sqrt(1 / ab[t] - 1) * eps).clamp(-1, 1)
        mean = coef1[t] * x0 + coef2[t] * x
        x = mean + (noise(t) * np.exp(0.5 * log_var[t]) if t > 0 else 0)
    return x


def test_sampler_is_sr3s_with_all_steps_and_noise_is_keyed_by_position(tmp_path):
    from tilewave.models import load_model
    from tilewave.models.base import TileRequest
    from tilewave.models.sr3.sampler import sample

    model = load_model(_checkpoint(tmp_path))
    assert isinstance(model, SR3Model)
    net = model.net
    torch.manual_seed(1)
    condition = torch.rand(1, 3, 16, 16) * 2 - 1
    fields = {t: torch.randn(1, 3, 16, 16) for t in range(net.cfg.n_timestep + 1)}
    ours = sample(net, condition, net.cfg.n_timestep, fields.__getitem__)
    assert torch.allclose(ours, _sr3_loop(net, condition, fields.__getitem__), atol=1e-5)

    x = torch.from_numpy(random_image((3, 8, 8), "float32", seed=4))[None]

    def tile(window, core):
        request = TileRequest(row=0, col=0, core=core, window=window, image_size=(40, 40),
                              contexts={})
        return model.forward_tile(x, request).output

    whole = tile((4, 12, 6, 14), (4, 12, 6, 14))
    assert whole.shape == (1, 3, 16, 16)
    part = tile((4, 12, 6, 14), (6, 10, 8, 12))
    assert torch.equal(part, whole[..., 4:12, 4:12])
    moved = tile((8, 16, 6, 14), (8, 16, 6, 14))  # same pixels elsewhere: other noise
    assert not torch.equal(moved, whole)


def test_grey_input_runs_band_by_band(tmp_path):
    model = _checkpoint(tmp_path)
    src = zarr_input(tmp_path / "grey.zarr", random_image((1, 12, 12), "uint16", seed=2), chunk=12)
    tilewave.upscale(src, tmp_path / "g.zarr", model=model, tile=8, executor="local",
                     progress=False)
    out = zarr.open_array(f"{tmp_path}/g.zarr/0")[:]
    assert out.shape == (1, 24, 24) and out.dtype == np.uint16 and out.std() > 0


# ------------------------------------------------- per-tile noise estimation (--early-stop)

#: Random weights do not denoise: a sample's estimated noise stays near 0.5 while a 2x
#: bicubic condition's is a few hundredths, so the tests scale the target up from
#: Diff2X's 1 to make textured windows stop part-way through the 10 steps.
STOP = 18.0


def _ten_steps(tmp_path) -> str:
    """A random checkpoint with Diff2X's 10-step sampling schedule."""
    model = _checkpoint(tmp_path, "diff2x_ten.pth")
    (tmp_path / "diff2x_ten.json").write_text(json.dumps({**SMALL, "n_timestep": 10}))
    return model


def _flat_and_noisy(height: int = 16, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    flat = np.full((3, height, width), 0.5, np.float32)
    return flat, random_image((3, height, width), "float32", seed=6)


def _forward(model, pixels: np.ndarray, window=None, core=None):
    from tilewave.models.base import TileRequest

    h, w = pixels.shape[1:]
    window = window or (0, h, 0, w)
    request = TileRequest(row=0, col=0, core=core or window, window=window,
                          image_size=(64, 64), contexts={})
    return model.forward_tile(torch.from_numpy(pixels)[None], request)


def test_noise_estimate_is_immerkaers_on_the_luma():
    from tilewave.models.sr3.sampler import LUMA, noise_sigmas
    from tilewave.pipeline.difficulty import immerkaer_sigma

    rng = np.random.default_rng(0)
    grey = rng.normal(0.0, 0.05, (64, 64))
    image = torch.from_numpy(np.stack([grey] * 3))[None]
    (sigma,) = noise_sigmas(image)
    assert abs(sigma - 0.05) < 0.005  # Immerkaer recovers the added noise's deviation
    assert noise_sigmas(torch.full((2, 3, 8, 8), 0.3)) == [0.0, 0.0]
    colour = torch.from_numpy(rng.random((1, 3, 20, 24)))
    luma = sum(w * colour[0, i].numpy() for i, w in enumerate(LUMA))
    assert noise_sigmas(colour) == [pytest.approx(immerkaer_sigma(luma))]
    assert noise_sigmas(colour, (12, 16)) == noise_sigmas(colour[..., :12, :16])


def test_each_windows_input_noise_decides_how_long_it_denoises(tmp_path):
    from tilewave.models import load_model
    from tilewave.models.base import SamplerSettings

    base = load_model(_ten_steps(tmp_path))
    assert isinstance(base, SR3Model) and base.sampler.early_stop == 0.0

    def model(stop: float) -> SR3Model:
        return base.with_sampler(SamplerSettings(steps=10, noise=None, seed=0, early_stop=stop))

    flat, noisy = _flat_and_noisy()
    # A flat window's target is 0: it runs every step whatever the setting.
    assert _forward(model(STOP), flat).steps == (10, 10)
    assert _forward(model(1e6), flat).steps == (10, 10)
    stopped = _forward(model(STOP), noisy)
    run = stopped.steps[0]
    assert stopped.steps[1] == 10 and 1 <= run < 10
    again = _forward(model(STOP), noisy)
    assert again.steps == stopped.steps and torch.equal(again.output, stopped.output)
    assert _forward(model(2 * STOP), noisy).steps[0] <= run  # a looser target, no later
    full = _forward(base, noisy)
    assert full.steps == (10, 10) and not torch.equal(full.output, stopped.output)
    # 0 is off: the default's bytes, every step.
    off = _forward(model(0.0), noisy)
    assert off.steps == (10, 10) and torch.equal(off.output, full.output)


def _held_loop(net, condition, noise, run: int) -> torch.Tensor:
    """SR3's loop over every step with the clean estimate held (no network pass, no
    noise) after ``run`` steps, as tilewave's ``early_stop`` describes the rest of the
    path."""
    b = np.linspace(net.cfg.linear_start, net.cfg.linear_end, net.cfg.n_timestep)
    ab = np.cumprod(1 - b)
    ab_prev = np.append(1.0, ab[:-1])
    x = noise(net.cfg.n_timestep)
    x0 = None
    for k, t in enumerate(reversed(range(net.cfg.n_timestep))):
        if k < run:
            eps = net(torch.cat([condition, x], 1), torch.full((1,), float(np.sqrt(ab[t]))))
            x0 = (np.sqrt(1 / ab[t]) * x - np.sqrt(1 / ab[t] - 1) * eps).clamp(-1, 1)
        mean = (b[t] * np.sqrt(ab_prev[t]) / (1 - ab[t])) * x0 \
            + ((1 - ab_prev[t]) * np.sqrt(1 - b[t]) / (1 - ab[t])) * x
        x = mean + (noise(t) * np.sqrt(b[t] * (1 - ab_prev[t]) / (1 - ab[t]))
                    if t > 0 and k < run else 0)
    return x


def test_a_stopped_window_holds_the_rest_of_its_path(tmp_path):
    import torch.nn.functional as F

    from tilewave.models import load_model
    from tilewave.models.sr3.sampler import sample_window

    net = load_model(_ten_steps(tmp_path)).net
    _, noisy = _flat_and_noisy()
    condition = F.interpolate(torch.from_numpy(noisy)[None] * 2 - 1, scale_factor=2.0,
                              mode="bicubic", align_corners=False).clamp(-1, 1)
    torch.manual_seed(2)
    fields = {t: torch.randn(1, 3, 32, 32) for t in range(11)}
    asked: list[int] = []

    def noise(t: int) -> torch.Tensor:
        asked.append(t)
        return fields[t]

    done = sample_window(net, condition, 10, noise, STOP)
    assert done.steps == 10 and 1 <= done.steps_run < 10
    # x_T, then one field per step that ran (none after the stop): keys by timestep.
    assert asked == list(range(10, 9 - done.steps_run, -1))
    by_hand = _held_loop(net, condition, fields.__getitem__, done.steps_run)
    assert torch.allclose(done.image, by_hand, atol=1e-5)
    full = sample_window(net, condition, 10, fields.__getitem__)
    assert full.steps_run == 10
    assert torch.allclose(full.image, _sr3_loop(net, condition, fields.__getitem__), atol=1e-5)


def test_the_decision_belongs_to_the_window_not_to_the_core(tmp_path):
    from tilewave.models import load_model
    from tilewave.models.base import SamplerSettings

    model = load_model(_ten_steps(tmp_path)).with_sampler(
        SamplerSettings(steps=10, noise=None, seed=0, early_stop=STOP))
    _, noisy = _flat_and_noisy()
    window = (4, 20, 6, 22)
    whole = _forward(model, noisy, window)
    part = _forward(model, noisy, window, (8, 16, 10, 18))  # another tiling's core, same window
    assert part.steps == whole.steps and whole.steps[0] < 10
    assert torch.equal(part.output, whole.output[..., 8:24, 8:24])


def _flat_left_noisy_right(tmp_path) -> str:
    """Flat grey on the left; on the right fine texture (which ``--adaptive`` keeps for
    the model: pure noise is no structure to it) with noise on top."""
    pixels = np.full((3, 32, 32), 128, np.uint8)
    y, x = np.mgrid[:32, :16]
    texture = 128 + 90 * np.sin(1.0 * x) * np.cos(0.8 * y)
    noise = random_image((3, 32, 16), "uint8", seed=5).astype(np.float64) / 255 - 0.5
    pixels[:, :, 16:] = np.clip(texture + 200 * noise, 0, 255).astype(np.uint8)
    return zarr_input(str(tmp_path / "half.zarr"), pixels, chunk=16)


def _job(tmp_path, model, src, name, **kwargs):
    report = tilewave.upscale(src, tmp_path / f"{name}.zarr", model=model, tile=16, halo=2,
                              executor="local", progress=False, **kwargs)
    return report, zarr.open_array(f"{tmp_path}/{name}.zarr/0")[:]


def test_early_stop_job_counts_the_steps_saved_and_the_cli_takes_it(tmp_path):
    from tilewave.cli import main

    model, src = _ten_steps(tmp_path), _flat_left_noisy_right(tmp_path)
    plain, default = _job(tmp_path, model, src, "plain")
    assert plain.steps_run == plain.steps_total == 4 * 10
    report, stopped = _job(tmp_path, model, src, "stop", early_stop=STOP)
    assert report.sampler is not None and report.sampler["early_stop"] == STOP
    # The two flat tiles run all 10 steps; the textured ones stop early.
    assert report.steps_total == 40 and 20 < report.steps_run < 40
    assert stopped.shape == default.shape and stopped.tobytes() != default.tobytes()
    assert np.array_equal(stopped[:, :, :24], default[:, :, :24])  # flat tiles' own pixels
    _, again = _job(tmp_path, model, src, "again", early_stop=STOP)
    assert again.tobytes() == stopped.tobytes()
    _, off = _job(tmp_path, model, src, "off", early_stop=0)
    assert off.tobytes() == default.tobytes()
    assert main(["upscale", src, str(tmp_path / "cli.zarr"), "--model", model, "--tile", "16",
                 "--halo", "2", "--local", "--early-stop", str(STOP), "--quiet"]) == 0
    assert zarr.open_array(f"{tmp_path}/cli.zarr/0")[:].tobytes() == stopped.tobytes()


def test_adaptive_sends_flat_tiles_to_bicubic_with_early_stop_on_the_rest(tmp_path):
    model, src = _ten_steps(tmp_path), _flat_left_noisy_right(tmp_path)
    report, out = _job(tmp_path, model, src, "adaptive", adaptive=True, early_stop=STOP)
    assert report.tiles_run == 4 and report.tiles_cheap == 2
    assert report.steps_total == 40 and 0 < report.steps_run < 20
    assert out.shape == (3, 64, 64)
