"""Inf-DiT from a SwissArmyTransformer checkpoint folder (``--model PATH``).

No trained weights are available here: the checkpoints are written in the release's
layout (``latest``, ``<iteration>/mp_rank_00_model_states.pt`` holding ``{"module": ...}``
beside DeepSpeed-style bookkeeping, ``model_config.json``) with the release's tensor
names, at a reduced depth and width, with random weights everywhere (the tensors the
release starts at zero included, so that every path of the network shows).
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import random_image, tiled_by_hand

from tilewave.errors import SettingsError
from tilewave.models.base import SamplerSettings, TileRequest
from tilewave.models.infdit import describe, folder_entry, is_infdit_folder
from tilewave.models.infdit.arch import InfDiTNet
from tilewave.models.infdit.checkpoint import LATEST, STATES, expected_shapes
from tilewave.models.infdit.clip import VisionTower
from tilewave.models.infdit.config import InfDiTConfig
from tilewave.models.infdit.model import InfDiT
from tilewave.models.infdit.sampler import sigmas
from tilewave.pipeline import reference_upscale

#: Two layers of width 64, 16-pixel blocks of 4-pixel patches (4 input pixels a block),
#: a rotary table of 32 tokens, so that a 40-pixel input wraps round it as the release's
#: 1024-token table wraps on inputs past 1024 pixels.
SMALL = InfDiTConfig(layers=2, hidden=64, heads=2, block_px=16, image_size=16, vector_dim=16,
                     max_sequence_length=8)


def _random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if ".rope." in key:  # derived tables: saved as the release saves them
            state[key] = value.clone()
            continue
        fan_in = value[0].numel() if value.ndim > 1 else 1
        std = 0.3 if value.ndim == 1 else 0.7 / fan_in ** 0.5
        if key.startswith(("mixins.final_layer.", "mixins.adaln_layer.adaLN_modulations")):
            std *= 0.1  # keeps the estimate mostly inside [-1, 1]: few clipped pixels
        state[key] = torch.randn(value.shape, generator=generator) * std
    return state


def write_checkpoint(folder: str, cfg: InfDiTConfig = SMALL, clip: str | None = "embedded",
                     config_json: bool = True, seed: int = 0) -> str:
    """An Inf-DiT SAT folder with random weights; the CLIP tower (a small ViT in
    OpenCLIP's layout) ``embedded`` in the save, in ``clip/`` as OpenCLIP's file, or absent."""
    state = _random_state(InfDiTNet(cfg), seed)
    tower = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.05
             for k, v in VisionTower(64, 2, 14, 16, cfg.vector_dim).state_dict().items()}
    if clip == "embedded":
        state |= {f"image_encoder.model.visual.{k}": v for k, v in tower.items()}
        state["image_encoder.model.token_embedding.weight"] = torch.zeros(4, 8)  # the text side
    os.makedirs(os.path.join(folder, "1000"), exist_ok=True)
    saved = {"module": state, "iteration": 1000, "np_rng_state": np.random.RandomState(0).get_state(),
             "ds_version": "0.14.0"}
    torch.save(saved, os.path.join(folder, "1000", STATES))
    with open(os.path.join(folder, LATEST), "w") as f:
        f.write("1000")
    if clip == "file":
        os.makedirs(os.path.join(folder, "clip"), exist_ok=True)
        full = {f"visual.{k}": v for k, v in tower.items()} | {"logit_scale": torch.ones(())}
        torch.save(full, os.path.join(folder, "clip", "open_clip_pytorch_model.bin"))
    if config_json:
        args = {"model_class": "DiffusionEngine", "num_layers": cfg.layers, "hidden_size": cfg.hidden,
                "num_attention_heads": cfg.heads, "vocab_size": 1, "layernorm_order": "pre",
                "max_sequence_length": cfg.max_sequence_length, "layernorm_epsilon": 1e-6,
                "image_size": cfg.image_size, "patch_size": cfg.patch, "in_channels": 6,
                "out_channels": 3, "input_time": "adaln", "nogate": True, "cross_adaln": False,
                "sr_scale": 4, "qk_ln": True, "random_position": True,
                "image_block_size": cfg.block_px, "vector_dim": cfg.vector_dim,
                "image_condition": True, "re_position": True, "cross_lr": True}
        with open(os.path.join(folder, "model_config.json"), "w") as f:
            json.dump(args, f)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as a worker runs a positional model on a CPU: these networks are
    tiny, and threads handing them tiny tensors cost more than they compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return write_checkpoint(str(tmp_path_factory.mktemp("infdit") / "ckpt"))


@pytest.fixture(scope="module")
def loaded(checkpoint) -> InfDiT:
    model = folder_entry(checkpoint).factory(4)
    assert isinstance(model, InfDiT)
    return model


def _model(loaded: InfDiT, steps: int = 2, seed: int = 3) -> InfDiT:
    proxy = torch.from_numpy(random_image((3, 40, 36), "float32", seed=11))[None]
    return loaded.with_sampler(SamplerSettings(steps=steps, noise=None, seed=seed)).with_proxy(proxy)


def test_folder_is_recognised_and_described(checkpoint, tmp_path):
    assert is_infdit_folder(checkpoint)
    assert not is_infdit_folder(str(tmp_path))
    desc = folder_entry(checkpoint).describe(4)  # type: ignore[misc]
    assert (desc.name, desc.scale, desc.modes, desc.block, desc.halo) == ("inf-dit", 4, ("context",), 4, 4)
    assert desc.size.multiple_of == 4 and desc.stepwise and desc.supports_half
    assert desc.sampler is not None and desc.sampler.steps == 20
    assert desc.parameters == sum(int(np.prod(s)) for k, s in expected_shapes(SMALL).items()
                                  if ".rope." not in k)


def test_loads_strictly_with_the_release_names(loaded):
    state = loaded.net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(SMALL)
    assert loaded.tower is not None


def test_release_configuration_has_the_release_layout():
    """The full-size network, built without memory, has exactly the tensors (names and
    shapes) :func:`expected_shapes` lists for the released arguments."""
    cfg = InfDiTConfig()
    with torch.device("meta"):
        net = InfDiTNet(cfg)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected_shapes(cfg)
    assert expected_shapes(cfg)["mixins.adaln_layer.rope.freqs_cos"] == (1024, 1024, 80)
    assert describe(cfg, "x").block == 32


def test_schedule_is_the_release_one():
    levels = sigmas(20)
    assert len(levels) == 21 and float(levels[-1]) == 0
    # float32, as the release computes them: 40 and 0.002 to about 1e-6
    assert float(levels[0]) == pytest.approx(40.0, rel=1e-5) and float(levels[-2]) == pytest.approx(0.002, rel=1e-5)


# 22 x 19 input pixels: neither a multiple of the tile nor of the 4-pixel block.
@pytest.mark.parametrize("tile", [8, 12])
def test_tiles_equal_the_whole_image(loaded, tile):
    # Heun's method needs steps to bring sigma = 40 down: with 10, few pixels are clipped.
    model = _model(loaded, steps=10)
    pixels = random_image((3, 22, 19), "float32", seed=1)
    whole = reference_upscale(model, pixels)
    clipped = np.mean((whole <= 0) | (whole >= 1))
    assert clipped < 0.15 and whole.std() > 0.05  # an image, not a clipped one
    assert np.abs(tiled_by_hand(model, pixels, tile) - whole).max() <= 1e-4


def test_tiles_equal_the_whole_image_past_the_rotary_wrap(loaded):
    """40 input pixels are 160 output pixels, 40 tokens: past the 32-token table."""
    model = _model(loaded, steps=4)
    pixels = random_image((3, 40, 12), "float32", seed=2)
    whole = reference_upscale(model, pixels)
    assert np.abs(tiled_by_hand(model, pixels, 16) - whole).max() <= 1e-4


def test_twenty_steps_in_tiles_equal_the_whole_image(loaded):
    model = _model(loaded, steps=20)
    pixels = random_image((3, 16, 12), "float32", seed=4)
    assert np.abs(tiled_by_hand(model, pixels, 8) - reference_upscale(model, pixels)).max() <= 1e-4


@pytest.mark.parametrize("direction", ["left", "top", "top_left"])
def test_every_context_matters_and_a_missing_one_is_refused(loaded, direction):
    model = _model(loaded, steps=6)
    pixels = random_image((3, 16, 16), "float32", seed=5)
    whole = reference_upscale(model, pixels)

    def wrong(inbound):  # the second step's keys and values changed a little
        if inbound[direction] is not None:
            steps = list(inbound[direction])
            steps[1] = [[(k * 1.1, v * 1.1) for k, v in evaluation] for evaluation in steps[1]]
            inbound[direction] = steps

    assert np.abs(tiled_by_hand(model, pixels, 8, wrong) - whole).max() > 1e-4

    def drop(inbound):
        if inbound[direction] is not None:
            inbound[direction] = [None, *inbound[direction][1:]]

    with pytest.raises(ValueError, match="no context"):
        tiled_by_hand(model, pixels, 8, drop)


def test_step_by_step_through_pickle_equals_forward_tile(loaded):
    model = _model(loaded, steps=3)
    x = torch.from_numpy(random_image((3, 12, 12), "float32", seed=6))[None]
    request = TileRequest(row=0, col=0, core=(0, 8, 0, 8), window=(0, 12, 0, 12),
                          image_size=(20, 20), contexts={})
    with torch.inference_mode():
        whole = model.forward_tile(x, request)
        state, contexts = None, {}
        for k in range(3):
            result = model.forward_step(x, request, k, state)
            state = pickle.loads(pickle.dumps(result.state))
            for d, value in result.contexts.items():
                contexts.setdefault(d, []).append(pickle.loads(pickle.dumps(value)))
    assert result.output is not None and result.steps == (3, 3)
    assert torch.equal(result.output, whole.output)
    assert set(contexts) == {"right", "below", "below_right"}
    # Per step: 2 evaluations (1 for the last), each per layer (keys, values) of the border.
    assert [len(step) for step in contexts["right"]] == [2, 2, 1]
    k, v = contexts["right"][0][1][SMALL.layers - 1]
    assert k.shape == v.shape == (2, SMALL.tokens_per_side ** 2, SMALL.heads, SMALL.head_dim)
    for step_a, step_b in zip(contexts["right"], whole.contexts["right"]):
        for eval_a, eval_b in zip(step_a, step_b):
            assert all(torch.equal(a[0], b[0]) for a, b in zip(eval_a, eval_b))


def test_seed_changes_the_output(loaded):
    pixels = random_image((3, 8, 8), "float32", seed=7)
    a = reference_upscale(_model(loaded, steps=1, seed=1), pixels)
    b = reference_upscale(_model(loaded, steps=1, seed=2), pixels)
    assert np.abs(a - b).max() > 1e-3


def test_not_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for path in (str(tmp_path), str(tmp_path / "absent")):
        with pytest.raises(SettingsError) as info:
            folder_entry(path)
        assert "\n" not in str(info.value) and "Inf-DiT" in str(info.value)
    (tmp_path / LATEST).write_text("500")
    with pytest.raises(SettingsError, match="500/mp_rank_00_model_states.pt is missing"):
        folder_entry(str(tmp_path))


def test_the_states_file_alone_is_a_checkpoint(tmp_path):
    """The release as downloaded: the states file in the folder, no ``latest``."""
    folder = write_checkpoint(str(tmp_path / "ckpt"), config_json=False)
    os.replace(os.path.join(folder, "1000", STATES), os.path.join(folder, STATES))
    os.remove(os.path.join(folder, LATEST))
    assert is_infdit_folder(folder)
    assert folder_entry(folder).describe(4).block == 4  # type: ignore[misc]


def test_other_weights_are_refused(tmp_path):
    os.makedirs(tmp_path / "7")
    torch.save({"module": {"layer.weight": torch.zeros(2)}}, tmp_path / "7" / STATES)
    (tmp_path / LATEST).write_text("7")
    assert not is_infdit_folder(str(tmp_path))
    with pytest.raises(SettingsError, match="holds no Inf-DiT network"):
        folder_entry(str(tmp_path))


def test_mismatched_configuration_is_one_line(tmp_path):
    folder = write_checkpoint(str(tmp_path / "ckpt"), clip="file")
    with open(os.path.join(folder, "model_config.json")) as f:
        args = json.load(f)
    with open(os.path.join(folder, "model_config.json"), "w") as f:
        json.dump(args | {"hidden_size": 128}, f)
    with pytest.raises(SettingsError, match="other shapes") as info:
        folder_entry(folder)
    assert "\n" not in str(info.value)
    with open(os.path.join(folder, "model_config.json"), "w") as f:
        json.dump(args | {"cross_lr": False}, f)
    with pytest.raises(SettingsError, match="cross_lr"):
        folder_entry(folder)


def test_missing_clip_says_what_and_where(tmp_path):
    folder = write_checkpoint(str(tmp_path / "ckpt"), clip=None, config_json=False)
    with pytest.raises(SettingsError) as info:
        folder_entry(folder)
    message = str(info.value)
    assert "\n" not in message and "ViT-L/14" in message and "clip/" in message


def test_clip_file_beside_and_config_from_shapes(tmp_path):
    """OpenCLIP's own weights file in clip/, and no model_config.json: the configuration
    is read from the tensors' shapes."""
    folder = write_checkpoint(str(tmp_path / "ckpt"), clip="file", config_json=False)
    model = folder_entry(folder).factory(4)
    assert isinstance(model, InfDiT) and model.tower is not None and model.net.cfg == SMALL
    unconditioned = model.with_sampler(SamplerSettings(steps=1, noise=None, seed=0))
    with pytest.raises(SettingsError, match="CLIP embedding of the whole input"):
        unconditioned.forward_tile(torch.rand(1, 3, 8, 8), TileRequest(
            row=0, col=0, core=(0, 4, 0, 4), window=(0, 8, 0, 8), image_size=(8, 8), contexts={}))


def test_a_job_runs_the_folder_on_both_schedules_with_the_inputs_overview(checkpoint, tmp_path):
    """Through the registry, the plan and the workers: the job shows the model a view of
    its whole input once (pipeline.overview), and both schedules write the same bytes, which
    equal the whole image run with that view."""
    import zarr
    from helpers import zarr_input

    import tilewave
    from tilewave.models import describe_model
    from tilewave.pipeline.overview import overview

    assert describe_model(checkpoint).name == "inf-dit"
    pixels = random_image((3, 22, 19), "uint8", seed=5)
    src = zarr_input(tmp_path / "in.zarr", pixels, chunk=16)
    outputs = {}
    for schedule in ("tile", "step"):
        out = tmp_path / f"{schedule}.zarr"
        report = tilewave.upscale(src, out, model=checkpoint, tile=8, steps=3, seed=2,
                                  schedule=schedule, executor="local", progress=False)
        assert report.scale == 4 and report.schedule == schedule and report.tiles_run == 9
        outputs[schedule] = zarr.open_array(str(out / "0"))[:]
    assert outputs["tile"].tobytes() == outputs["step"].tobytes()
    view = overview(lambda y0, y1, x0, x1: pixels[:, y0:y1, x0:x1], 22, 19, 448)
    model = folder_entry(checkpoint).factory(4).with_sampler(
        SamplerSettings(steps=3, noise=None, seed=2)).with_condition({"overview": view})
    assert np.abs(outputs["step"].astype(int) - reference_upscale(model, pixels).astype(int)).max() <= 1
    # A tile larger than the default budget holds: auto picks the step schedule for the
    # release's size (its contexts are ~293 MB a block and evaluation).
    from tilewave.pipeline.job_plan import TILE_CONTEXT_BUDGET, tile_context_bytes

    release = describe(InfDiTConfig(), "release")
    assert tile_context_bytes(release, 32, 20) > TILE_CONTEXT_BUDGET


def test_the_overview_box_averages_the_whole_image_window_by_window():
    from tilewave.pipeline.overview import overview

    pixels = random_image((3, 1000, 700), "uint16", seed=6)
    reads = []

    def read(y0, y1, x0, x1):
        reads.append((y1 - y0) * (x1 - x0))
        return pixels[:, y0:y1, x0:x1]

    view = overview(read, 1000, 700, 224, window=256)
    factor = 700 // 224
    assert view.shape == (3, 1000 // factor, 700 // factor) and min(view.shape[1:]) >= 224
    expected = (pixels[:, : 333 * 3, : 233 * 3].astype(np.float64) / 65535).reshape(
        3, 333, 3, 233, 3).mean((2, 4))
    assert np.abs(view - expected).max() < 1e-5
    assert max(reads) <= 256 * 256  # never the whole image at once
    # Nodata is left out of the averages: a box with some is the mean of the rest.
    holes = pixels.copy()
    holes[:, :3, :3] = 7
    holes[:, 0, :3] = 100
    view = overview(lambda y0, y1, x0, x1: holes[:, y0:y1, x0:x1], 1000, 700, 224, nodata=7)
    assert np.allclose(view[:, 0, 0], 100 / 65535)


def test_the_family_is_listed_and_by_name_says_to_give_the_folder(capsys):
    from tilewave.cli import main
    from tilewave.models import describe_model

    with pytest.raises(SettingsError, match="--model /path/to/inf-dit"):
        describe_model("inf-dit")
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("inf-dit"))
    assert "--steps 20" in row and "--model PATH" in row
