"""The Stable Diffusion x4 upscaler from a local folder: a tiny random one, built in code
and saved with ``save_pretrained``, loaded by path as a user's folder is."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import zarr_input
from PIL import Image

if any(importlib.util.find_spec(m) is None for m in ("diffusers", "transformers")):
    # Found, not imported: tilewave imports them its own way (see sd_x4.folder).
    pytest.skip("the diffusion extra is not installed", allow_module_level=True)

import tilewave
from tilewave.cli import main
from tilewave.errors import SettingsError
from tilewave.models import load_model
from tilewave.models.base import SamplerSettings, SteppedModel, TileRequest
from tilewave.models.sd_x4 import HALO, OVERLAP, describe
from tilewave.pipeline.grid import TileGrid
from tilewave.pipeline.upscale_window import from_unit, reference_upscale, to_unit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import sd_seams
from tiny_sd_x4 import build_tiny_upscaler

STEPS = 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    return {"full": build_tiny_upscaler(str(root / "full")),
            "no-text": build_tiny_upscaler(str(root / "no-text"), text_encoder=False),
            "ddpm": build_tiny_upscaler(str(root / "ddpm"), scheduler="DDPMScheduler")}


def _sampler(seed=0, steps=STEPS, early_stop=0.0, text=True, **more):
    text_settings = {"prompt": "", "negative_prompt": "", "guidance": 9.0} if text else {}
    return SamplerSettings(steps=steps, noise=None, seed=seed, noise_level=20,
                           early_stop=early_stop, **{**text_settings, **more})


def _photo(height, width, seed=0):
    return sd_seams.sample_image(max(height, width))[:, :height, :width].copy()


def _png(path, pixels):
    Image.fromarray(pixels.transpose(1, 2, 0)).save(path)
    return str(path)


def _output(path):
    return zarr.open_array(f"{path}/0")[:]


# ---------------------------------------------------------------------- the folder


@pytest.mark.subprocess
def test_a_folder_is_described_from_its_json_without_importing_torch(folders):
    code = f"""
        import sys
        from tilewave.models import describe_model
        d = describe_model({folders['full']!r})
        assert (d.name, d.scale, d.modes, d.channels) == ("sd-x4", 4, ("context", "blend"), (3,))
        assert d.sampler.steps == 25 and d.sampler.noise_level == 20 and d.noise_level_max == 350
        heavy = sorted(m for m in ("torch", "diffusers", "transformers", "ray") if m in sys.modules)
        assert not heavy, heavy
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_output_is_four_times_the_input_in_every_mode(folders):
    model = load_model(folders["full"], None, _sampler())
    pixels = _photo(21, 26)
    assert reference_upscale(model, pixels).shape == (3, 84, 104)
    for mode, tile in (("context", 16), ("blend", 16)):
        out = sd_seams.by_hand(model, pixels, tile, mode, overlap=8)["final"]
        assert out.shape == (3, 84, 104) and np.isfinite(out).all() and out.std() > 0


@pytest.mark.parametrize("damage, message", [
    (lambda f: os.remove(os.path.join(f, "unet", "diffusion_pytorch_model.safetensors")),
     "incomplete: unet/ has no weights"),
    (lambda f: os.remove(os.path.join(f, "model_index.json")), "model_index.json) is missing"),
    (lambda f: shutil.rmtree(os.path.join(f, "vae")), "the VAE's config"),
    (lambda f: shutil.rmtree(os.path.join(f, "tokenizer")), "names a tokenizer but tokenizer/"),
    (lambda f: shutil.rmtree(os.path.join(f, "text_encoder")), "names a text encoder but"),
    (lambda f: _edit_json(f, "model_index.json", _class_name="StableDiffusionPipeline"),
     "holds a StableDiffusionPipeline, not the Stable Diffusion x4 upscaler"),
    (lambda f: _edit_json(f, "scheduler/scheduler_config.json", _class_name="EulerAncestralDiscreteScheduler"),
     "DDIMScheduler or DDPMScheduler only"),
    (lambda f: _edit_json(f, "unet/config.json", in_channels=4), "not an x4 upscaler's UNet"),
])
def test_a_broken_folder_is_one_line_with_exit_2(folders, tmp_path, capsys, damage, message):
    folder = str(tmp_path / "copy")
    shutil.copytree(folders["full"], folder)
    damage(folder)
    src = _png(tmp_path / "in.png", _photo(16, 16))
    assert main(["upscale", src, str(tmp_path / "out.zarr"), "--model", folder, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and folder in err
    assert not os.path.exists(tmp_path / "out.zarr")


def _edit_json(folder, name, **changes):
    path = os.path.join(folder, name)
    with open(path) as f:
        value = json.load(f)
    value.update(changes)
    with open(path, "w") as f:
        json.dump(value, f)


def test_half_precision_files_are_found_per_component(folders, tmp_path):
    folder = str(tmp_path / "copy")
    shutil.copytree(folders["full"], folder)
    unet = os.path.join(folder, "unet", "diffusion_pytorch_model")
    os.rename(unet + ".safetensors", unet + ".fp16.safetensors")  # the VAE's stay as they are
    pixels = _photo(12, 12)
    ours = reference_upscale(load_model(folder, None, _sampler()), pixels)
    assert ours.tobytes() == reference_upscale(load_model(folders["full"], None, _sampler()), pixels).tobytes()


@pytest.mark.parametrize("flags, message", [
    (["--tile", "8"], "--tile must be at least 16, not 8"),
    (["--steps", "1000"], "--steps for 'sd-x4' must be at most 999"),
])
def test_tiles_below_the_overlap_and_steps_past_the_schedule_are_refused(folders, tmp_path, capsys,
                                                                         flags, message):
    src = _png(tmp_path / "in.png", _photo(16, 16))
    assert main(["upscale", src, str(tmp_path / "o.zarr"), "--model", folders["full"], *flags,
                 "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_a_folder_named_like_a_model_does_not_hide_it(tmp_path, monkeypatch):
    from tilewave.models import canonical_name, get_entry

    (tmp_path / "span-x2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert canonical_name("span-x2") == "span-x2" and get_entry("span-x2").name == "span-x2"
    with pytest.raises(SettingsError, match="model_index.json"):
        get_entry("./span-x2")


def test_a_damaged_weights_file_is_one_line(folders, tmp_path):
    from tilewave.models.sd_x4.folder import FolderFacts, load_parts

    folder = str(tmp_path / "copy")
    shutil.copytree(folders["full"], folder)
    with open(os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(SettingsError, match="cannot be loaded .*copy the folder again"):
        load_parts(FolderFacts.read(folder))


def test_a_missing_path_and_the_bare_name_say_what_to_give(tmp_path, capsys):
    src = _png(tmp_path / "in.png", _photo(16, 16))
    for model, message in ((str(tmp_path / "nowhere"), "does not exist"),
                           ("sd-x4", "--model /path/to/stable-diffusion-x4-upscaler")):
        assert main(["upscale", src, str(tmp_path / "o.zarr"), "--model", model, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


@pytest.mark.subprocess
def test_without_the_extra_the_error_names_it(folders, tmp_path):
    src = _png(tmp_path / "in.png", _photo(16, 16))
    # The import system's own way of saying a package is not installed.
    code = f"""
        import sys
        sys.modules["diffusers"] = None
        from tilewave.cli import main
        sys.exit(main(["upscale", {src!r}, {str(tmp_path / 'o.zarr')!r}, "--model",
                       {folders['full']!r}, "--quiet"]))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1, err
    assert "pip install -e '" in err and "[diffusion]'" in err and "diffusers" in err


@pytest.mark.subprocess
def test_nothing_is_fetched_and_the_hub_is_off(folders):
    code = f"""
        import os, socket
        def refuse(*args, **kwargs):
            raise AssertionError("a connection was attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from tilewave.models import load_model
        from tilewave.models.base import SamplerSettings
        load_model({folders['full']!r}, None, SamplerSettings(steps=1, noise=None, prompt="a",
                   negative_prompt="", guidance=9.0, noise_level=20, early_stop=0.0))
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------- sampling


def test_noise_is_keyed_by_position_so_a_tile_does_not_depend_on_order_or_retries(folders):
    model = load_model(folders["full"], None, _sampler(seed=5))
    pixels = _photo(40, 44)
    raster = sd_seams.by_hand(model, pixels, 16, "context")["final"]
    again = sd_seams.by_hand(model, pixels, 16, "context")["final"]
    by_columns = sd_seams.by_hand(model, pixels, 16, "context", order="columns")["final"]
    assert raster.tobytes() == again.tobytes() == by_columns.tobytes()


def test_the_seed_changes_the_output(folders):
    pixels = _photo(20, 20)
    a = reference_upscale(load_model(folders["full"], None, _sampler(seed=1)), pixels)
    b = reference_upscale(load_model(folders["full"], None, _sampler(seed=2)), pixels)
    assert a.tobytes() != b.tobytes()


def test_a_ddpm_folder_samples_with_position_keyed_noise(folders):
    pixels = _photo(24, 24)
    model = load_model(folders["ddpm"], None, _sampler(seed=3))
    assert model.parts.eta == 1.0
    a = sd_seams.by_hand(model, pixels, 16, "context")["final"]
    b = sd_seams.by_hand(model, pixels, 16, "context", order="columns")["final"]
    c = reference_upscale(load_model(folders["ddpm"], None, _sampler(seed=4)), pixels)
    assert a.tobytes() == b.tobytes()
    assert from_unit(a, np.dtype("uint8")).tobytes() != c.tobytes()


def _states(context):
    """A tile's per-step context for one neighbour as its window and all its latent states
    (one per step, then the final one), or None where it sent no latents."""
    if all(step is None or step["latents"] is None for step in context):
        return None
    windows = {tuple(step["latents"]["window"]) for step in context}
    assert len(windows) == 1
    assert [len(step["latents"]["states"]) for step in context] == [1] * (len(context) - 1) + [2]
    return windows.pop(), [t for step in context for t in step["latents"]["states"]]


def test_a_tile_takes_its_neighbours_latents_where_they_overlap(folders):
    model = load_model(folders["full"], None, _sampler())
    pixels = _photo(16, 80)

    def run(col, contexts):
        core = (0, 16, 16 * col, 16 * col + 16)
        window = (0, 16, max(0, core[2] - 32), core[3] + 32)
        x = to_unit(pixels[:, :, window[2] : window[3]])
        return model.forward_tile(x, TileRequest(row=0, col=col, core=core, window=window,
                                                 image_size=(16, 80), contexts=contexts))

    left = run(0, {})
    assert all(len(v) == STEPS for v in left.contexts.values())  # one context per step
    window, strip = _states(left.contexts["right"])
    assert window == (0, 16, 16 - OVERLAP, 16 + OVERLAP) and len(strip) == STEPS + 1
    with_context, alone = run(1, {"left": left.contexts["right"]}), run(1, {})
    assert _states(with_context.contexts["below"]) is None  # one row of tiles: none below
    # Only the last step sends decoded pixels.
    assert [c is not None and c["pixels"] is not None
            for c in with_context.contexts["right"]] == [False] * (STEPS - 1) + [True]
    # At every step, its latents where the two overlap (columns 16 to 32) are the left
    # tile's; alone, they are its own.
    window, mine = _states(with_context.contexts["right"])
    assert window == (0, 16, 32 - OVERLAP, 32 + OVERLAP)
    for theirs, ours in zip(strip, mine, strict=True):
        assert torch.equal(ours[:, :, :16], theirs[:, :, 16:32])
    own = _states(alone.contexts["right"])[1][-1]
    assert not torch.equal(own[:, :, :16], strip[-1][:, :, 16:32])
    assert not torch.equal(with_context.output, alone.output)
    assert with_context.steps == (STEPS, STEPS)


def test_per_step_contexts_leave_smaller_seams_and_less_ghosting_than_final_only_blending(folders):
    model = load_model(folders["full"], None, _sampler(steps=6))
    rows = sd_seams.measure(model, _photo(64, 64), 32)
    a, b = rows["(a) final-only blending"], rows["(b) per-step overlap contexts"]
    assert b["ghosting"] < 0.5 * a["ghosting"]
    assert b["seam_raw"] < a["seam_raw"]


def test_early_stop_saves_steps_and_stays_close(folders):
    pixels = _photo(24, 24)
    full = load_model(folders["full"], None, _sampler(steps=8))
    early = load_model(folders["full"], None, _sampler(steps=8, early_stop=0.5))
    x = to_unit(pixels)
    whole = (0, 24, 0, 24)
    done = full.forward_tile(x, TileRequest(row=0, col=0, core=whole, window=whole,
                                            image_size=(24, 24), contexts={}))
    stopped = early.forward_tile(x, TileRequest(row=0, col=0, core=whole, window=whole,
                                                image_size=(24, 24), contexts={}))
    assert done.steps == (8, 8) and stopped.steps[0] < 8
    difference = float((done.output - stopped.output).abs().mean())
    assert 0 < difference < 0.1


# ---------------------------------------------------------- one step at a time


def _tiles(pixels, tile):
    """Every tile of ``pixels``' grid, in raster order: index, input window in unit space,
    and its request with no contexts yet."""
    _, h, w = pixels.shape
    return [(t.index, to_unit(pixels[:, t.read[0] : t.read[1], t.read[2] : t.read[3]]),
             TileRequest(row=t.row, col=t.col, core=t.core, window=t.read, image_size=(h, w),
                         contexts={}))
            for t in TileGrid(h, w, tile, 4, halo=HALO)]


def _inbound(sent, r, c):
    """What tile ``(r, c)`` receives from what its neighbours sent (absent ones left out)."""
    found = {"left": sent.get((r, c - 1), {}).get("right"), "top": sent.get((r - 1, c), {}).get("below"),
             "top_left": sent.get((r - 1, c - 1), {}).get("below_right")}
    return {k: v for k, v in found.items() if v is not None}


def _tile_by_tile(model, tiles):
    """``--schedule tile``: each tile's steps in one call, tiles in raster order."""
    sent, done = {}, {}
    for (r, c), x, request in tiles:
        result = model.forward_tile(x, dataclasses.replace(request, contexts=_inbound(sent, r, c)))
        sent[r, c] = result.contexts
        done[r, c] = (result.output, result.steps)
    return done


def _step_by_step(model, tiles, steps, order):
    """``--schedule step``: one step of one tile per call, in an order the (tile, step) DAG
    allows; states and contexts go through pickle between calls, as through the store."""
    nodes = [(k, i) for k in range(steps) for i in range(len(tiles))]
    if order == "diagonal":  # a wavefront over rows, columns and steps
        nodes.sort(key=lambda n: (sum(tiles[n[1]][0]) + n[0], n[1]))
    sent, states, done = {}, {}, {}
    for k, i in nodes:
        (r, c), x, request = tiles[i]
        step_sent = {index: contexts for (index, step), contexts in sent.items() if step == k}
        result = model.forward_step(x, dataclasses.replace(request, contexts=_inbound(step_sent, r, c)),
                                    k, states.pop((r, c), None))
        sent[(r, c), k] = pickle.loads(pickle.dumps(result.contexts))
        if k + 1 < steps:
            assert result.output is None and result.steps is None
            states[r, c] = pickle.loads(pickle.dumps(result.state))
        else:
            assert result.state is None
            done[r, c] = (result.output, result.steps)
    return done


@pytest.mark.parametrize("folder, settings, order", [
    ("full", {"seed": 5}, "step-major"),
    ("full", {"seed": 5}, "diagonal"),
    ("full", {"steps": 8, "early_stop": 0.2, "seed": 1}, "step-major"),
    ("ddpm", {"seed": 3}, "diagonal"),
])
def test_steps_one_at_a_time_with_pickled_states_give_the_bytes_of_whole_tiles(folders, folder,
                                                                               settings, order):
    model = load_model(folders[folder], None, _sampler(**settings))
    tiles = _tiles(_photo(48, 32), 16)  # 3 rows of 2 tiles
    whole = _tile_by_tile(model, tiles)
    stepped = _step_by_step(model, tiles, model.sampler.steps, order)
    assert whole.keys() == stepped.keys() and len(whole) == 6
    for index, (output, steps) in whole.items():
        assert torch.equal(output, stepped[index][0]), index
        assert steps == stepped[index][1]
    if settings.get("early_stop"):
        # Tiles stopped at different steps: the held estimate crossed the pickling too.
        assert len({steps for _, steps in whole.values()}) > 1


def _step(model, pixels, tile, index, step, state, contexts=None):
    (_, x, request), = [t for t in _tiles(pixels, tile) if t[0] == index]
    return model.forward_step(x, dataclasses.replace(request, contexts=contexts or {}), step, state)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    assert value is None or isinstance(value, (int, float, str)), type(value)
    return []


def test_the_state_between_steps_is_plain_small_and_on_the_cpu(folders):
    pixels = _photo(96, 96)
    plain = load_model(folders["full"], None, _sampler(steps=4))
    state = _step(plain, pixels, 32, (1, 1), 0, None).state
    # An inner tile of 32: the region is its core, 16 behind and 32 ahead, 80 x 80 latents.
    assert state["latents"].shape == (1, 4, 80, 80)
    assert state["estimate"] is None and state["frozen"] is None and state["steps_run"] == 1
    for t in _tensors(state):
        assert t.device.type == "cpu" and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert len(pickle.dumps(state)) < 80 * 80 * 4 * 4 + 4096
    early = load_model(folders["full"], None, _sampler(steps=8, early_stop=0.2, seed=1))
    states = [None]
    for k in range(7):
        states.append(_step(early, pixels, 32, (1, 1), k, states[-1]).state)
    before, after = states[1], states[-1]
    # Before a stop it carries the estimate over the tile's own latents; after, the held
    # estimate and its noise (padded, as the latents) instead.
    assert before["estimate"].shape == (1, 4, 80, 80) and before["frozen"] is None
    assert after["estimate"] is None and [t.shape for t in after["frozen"]] == [(1, 4, 80, 80)] * 2
    assert after["step"] == 7 and after["steps_run"] < 7


def test_a_step_leaves_its_state_alone_so_a_retry_gives_the_same_bytes(folders):
    model = load_model(folders["full"], None, _sampler())
    pixels = _photo(32, 32)
    state = _step(model, pixels, 16, (0, 0), 0, None).state
    kept = pickle.loads(pickle.dumps(state))
    first = _step(model, pixels, 16, (0, 0), 1, state)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(state), _tensors(kept), strict=True))
    again = _step(model, pixels, 16, (0, 0), 1, state)
    assert torch.equal(first.state["latents"], again.state["latents"])


def test_a_step_out_of_range_or_with_the_wrong_state_is_refused(folders):
    model = load_model(folders["full"], None, _sampler())
    pixels = _photo(16, 16)
    state = _step(model, pixels, 16, (0, 0), 0, None).state
    for step, given, message in ((STEPS, state, "not step 3"), (1, None, "needs the state of step 0"),
                                 (0, state, "starts from no state"), (2, state, "left for step 1")):
        with pytest.raises(ValueError, match=message):
            _step(model, pixels, 16, (0, 0), step, given)


def test_the_model_says_it_runs_step_by_step(folders):
    assert describe().stepwise and "per sampler step" in describe().context_format
    model = load_model(folders["full"], None, _sampler())
    assert model.descriptor.stepwise and isinstance(model, SteppedModel)


def test_a_folder_without_text_encoder_runs_and_refuses_a_prompt(folders, tmp_path, capsys):
    model = load_model(folders["no-text"], None, _sampler(text=False))
    assert reference_upscale(model, _photo(12, 12)).shape == (3, 48, 48)
    src = _png(tmp_path / "in.png", _photo(16, 16))
    args = ["upscale", src, str(tmp_path / "o.zarr"), "--model", folders["no-text"], "--quiet"]
    assert main([*args, "--prompt", "a cat"]) == 2
    err = capsys.readouterr().err
    assert "has no --prompt" in err and "--noise-level" in err


def test_a_prompt_changes_the_output(folders):
    pixels = _photo(16, 16)
    plain = reference_upscale(load_model(folders["full"], None, _sampler()), pixels)
    prompted = reference_upscale(load_model(folders["full"], None, _sampler(prompt="a red barn")), pixels)
    assert plain.tobytes() != prompted.tobytes()


@pytest.mark.parametrize("flag, value, message", [
    ("--noise-level", "351", "between 0 and 350"),
    ("--noise", "0.1", "has no --noise"),
])
def test_sampler_settings_out_of_range_are_refused(folders, tmp_path, capsys, flag, value, message):
    src = _png(tmp_path / "in.png", _photo(16, 16))
    assert main(["upscale", src, str(tmp_path / "o.zarr"), "--model", folders["full"],
                 flag, value, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_prompt_options_on_a_one_pass_model_are_refused(tmp_path, capsys):
    src = _png(tmp_path / "in.png", _photo(16, 16))
    assert main(["upscale", src, str(tmp_path / "o.zarr"), "--prompt", "x", "--quiet"]) == 2
    assert "--prompt apply to multi-step models" in capsys.readouterr().err


def test_models_lists_the_family_and_its_extra(capsys):
    assert main(["models", "--json"]) == 0
    record = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "sd-x4")
    assert record["scale"] == "4" and record["sampler"]["noise_level"] == 20
    assert record["installed"].startswith("yes (diffusers")


# ------------------------------------------------------------------------- on Ray


@pytest.mark.ray
def test_a_ray_job_equals_the_tiles_by_hand_for_any_worker_count(ray_local, folders, tmp_path):
    pixels = _photo(40, 56)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=16)
    options = {"model": folders["full"], "tile": 16, "steps": STEPS, "seed": 2, "progress": False}
    one = tilewave.upscale(src, tmp_path / "one.zarr", workers=1, **options)
    two = tilewave.upscale(src, tmp_path / "two.zarr", workers=2, **options)
    assert one.tiles_run == two.tiles_run == 12 and one.steps_run == one.steps_total == 12 * STEPS
    assert _output(tmp_path / "one.zarr").tobytes() == _output(tmp_path / "two.zarr").tobytes()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers compute it (see actors.worker)
    try:
        by_hand = sd_seams.by_hand(load_model(folders["full"], None, _sampler(seed=2)), pixels,
                                   16, "context")["final"]
    finally:
        torch.set_num_threads(threads)
    assert _output(tmp_path / "one.zarr").tobytes() == from_unit(by_hand, np.dtype("uint8")).tobytes()


@pytest.mark.ray
def test_a_step_scheduled_ray_job_writes_the_bytes_of_the_tile_schedule(ray_local, folders,
                                                                         tmp_path):
    src = zarr_input(tmp_path / "in.zarr", _photo(40, 56), chunk=16)
    options = {"model": folders["full"], "tile": 16, "steps": STEPS, "seed": 2, "progress": False,
               "early_stop": 0.05}
    tile = tilewave.upscale(src, tmp_path / "tile.zarr", schedule="tile", **options)
    step = tilewave.upscale(src, tmp_path / "step.zarr", schedule="step", workers=2, **options)
    assert (tile.schedule, step.schedule) == ("tile", "step")
    assert step.steps_run == tile.steps_run and step.steps_total == 12 * STEPS
    assert step.peak_context_bytes < tile.peak_context_bytes
    assert _output(tmp_path / "step.zarr").tobytes() == _output(tmp_path / "tile.zarr").tobytes()


@pytest.mark.ray
def test_adaptive_sends_glass_to_bicubic_and_counts_the_steps_saved(ray_local, folders, tmp_path):
    from tilewave.models.bicubic import Bicubic

    pixels = np.full((3, 48, 48), 238, np.uint8)  # glass, and one tile of tissue
    pixels[:, :16, :16] = _photo(16, 16)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=16)
    report = tilewave.upscale(src, tmp_path / "out.zarr", model=folders["full"], tile=16,
                              steps=STEPS, adaptive=True, progress=False)
    assert report.tiles_cheap == 8 and report.steps_run == STEPS and report.steps_total == 9 * STEPS
    out = _output(tmp_path / "out.zarr")
    bicubic = reference_upscale(Bicubic(4), pixels)
    assert np.array_equal(out[:, 128:, 128:], bicubic[:, 128:, 128:])
    assert not np.array_equal(out[:, :64, :64], bicubic[:, :64, :64])


@pytest.mark.subprocess
@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_run_resumes_to_the_bytes_of_a_clean_run(ray_local, folders, tmp_path):
    from helpers import run_until_recorded

    src = zarr_input(tmp_path / "in.zarr", _photo(64, 80), chunk=16)
    args = ["--model", folders["full"], "--tile", "16", "--steps", "2", "--seed", "4", "--workers", "1"]
    options = {"model": folders["full"], "tile": 16, "steps": 2, "seed": 4, "workers": 1}
    clean = tmp_path / "clean.zarr"
    tilewave.upscale(src, clean, progress=False, **options)
    out = str(tmp_path / "out.zarr")
    recorded = run_until_recorded([src, out, *args], out, 6)
    assert 6 <= recorded < 20, "the kill must land mid-run"
    report = tilewave.upscale(src, out, resume=True, progress=False, **options)
    assert report.tiles_run == 20 - recorded
    assert _output(out).tobytes() == _output(clean).tobytes()
