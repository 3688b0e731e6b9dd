"""The model registry: built-in families, the names users type, and descriptors that
agree with the networks they describe."""

from __future__ import annotations

import json
import os
import struct

import pytest

from tilewave.errors import SettingsError, UnknownModelError
from tilewave.models import (
    ModelEntry,
    available_models,
    canonical_name,
    describe_model,
    get_entry,
    register,
    registry,
    resolve_scale,
)

BUILTIN = {"bicubic", "prefix-sum", "uniba-x2", "span-x2", "span-x4", "realesrgan-x4plus"}


def test_every_builtin_family_is_listed_and_described():
    names = {e.name for e in available_models()}
    assert BUILTIN <= names
    for entry in available_models():
        if entry.folder:  # run from a folder given as --model PATH: by name, a hint
            with pytest.raises(SettingsError, match="--model /path/to/"):
                describe_model(entry.name)
            continue
        desc = describe_model(entry.name)
        assert desc.name == entry.name and desc.scale == entry.default_scale
    assert [e.name for e in available_models()] == sorted(names)


def test_model_entry_is_reexported_by_the_registry():
    from tilewave.models.entry import ModelEntry as Defined

    assert registry.ModelEntry is Defined is ModelEntry


@pytest.mark.parametrize("typed", ["span-x2", "SPAN-x2", "span_x2", " Span_X2 "])
def test_names_are_matched_ignoring_case_and_underscores(typed):
    assert canonical_name(typed) == "span-x2"
    assert get_entry(typed).name == "span-x2"
    assert resolve_scale(typed, None) == 2
    assert describe_model(typed).name == "span-x2"


def test_weights_paths_become_absolute_and_keep_their_spelling():
    assert canonical_name("Models/My_Net.PTH") == os.path.abspath("Models/My_Net.PTH")


def test_an_unknown_name_suggests_the_closest_and_lists_the_rest():
    with pytest.raises(UnknownModelError) as info:
        get_entry("spam-x2")
    message = str(info.value)
    assert "unknown model 'spam-x2'" in message
    assert "did you mean 'span-x2'?" in message
    assert "realesrgan-x4plus" in message and "see `tilewave models`" in message
    assert "\n" not in message


def test_an_existing_file_that_is_not_weights_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.tif").write_text("not weights")
    for typed in ("notes.tif", str(tmp_path / "notes.tif")):
        with pytest.raises(SettingsError, match=r"is a file but not model weights; give weights "
                           r"\(\.pth, .*\.safetensors\)"):
            get_entry(typed)


def test_an_unknown_name_far_from_all_has_no_suggestion():
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'") as info:
        canonical_name("no-such-model")
    assert "did you mean" not in str(info.value)


def test_a_scale_the_model_cannot_run_names_the_canonical_model():
    with pytest.raises(SettingsError, match="model 'span-x2' runs at scale 2, not 3"):
        resolve_scale("SPAN_X2", 3)


def _identity(scale: int):
    from tilewave.models.bicubic import Bicubic

    return Bicubic(scale)


def test_registered_models_are_found_by_canonical_name():
    register(ModelEntry("My_Model", _identity, scales=None, default_scale=2, summary="test entry"))
    assert get_entry("my-model").name == "my-model"
    assert get_entry("MY_MODEL").summary == "test entry"


def test_the_fixture_removed_the_model_registered_before():
    # Runs after the test above: the registry fixture must have undone its register().
    with pytest.raises(UnknownModelError):
        get_entry("my-model")


def test_a_registered_model_replaces_a_builtin_of_that_name():
    register(ModelEntry("bicubic", _identity, scales=(3,), default_scale=3, summary="replacement"))
    assert get_entry("bicubic").summary == "replacement"


def test_the_builtin_is_back_after_the_replacement():
    assert get_entry("bicubic").scales is None


# ------------------------------------------------- descriptors against their networks


def _meta_parameters(build) -> int:
    import torch

    from tilewave.models.base import count_parameters

    with torch.device("meta"):  # shapes only, no memory
        return count_parameters(build())


@pytest.mark.parametrize("scale", [2, 4])
def test_span_parameter_constants_count_the_network(scale):
    from tilewave.models import span
    from tilewave.models.span.arch import SpanNet

    assert span.PARAMETERS[scale] == _meta_parameters(lambda: SpanNet(scale))
    assert describe_model(f"span-x{scale}").parameters == span.PARAMETERS[scale]


def test_realesrgan_parameter_constant_counts_the_network():
    from tilewave.models import realesrgan
    from tilewave.models.realesrgan.arch import RRDBNet

    assert realesrgan.PARAMETERS == _meta_parameters(RRDBNet) == 16_697_987
    assert describe_model("realesrgan-x4plus").parameters == realesrgan.PARAMETERS


def test_uniba_descriptor_from_its_header_matches_the_network():
    from tilewave.models.uniba import weights_path
    from tilewave.models.uniba.arch import UniBANet
    from tilewave.models.uniba.config import UniBAConfig

    desc = describe_model("uniba-x2")
    with open(weights_path(2).replace(".safetensors", ".json")) as f:
        record = json.load(f)
    cfg = UniBAConfig(**record["config"])
    assert desc.parameters == record["parameters"] == _meta_parameters(lambda: UniBANet(cfg))
    assert desc.halo == cfg.halo and desc.block == cfg.block


def _safetensors(path, header: bytes) -> str:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return str(path)


def test_uniba_header_reader_refuses_what_is_not_a_checkpoint(tmp_path):
    from tilewave.models.uniba import _read_header, is_uniba_file

    junk = {
        "short.safetensors": b"\x01\x02",
        "huge.safetensors": struct.pack("<Q", 2**40) + b"{}",
        "cut.safetensors": struct.pack("<Q", 100) + b"{}",
        "list.safetensors": struct.pack("<Q", 2) + b"[]",
        "plain.safetensors": struct.pack("<Q", 2) + b"{}",
    }
    for name, data in junk.items():
        (tmp_path / name).write_bytes(data)
        assert not is_uniba_file(str(tmp_path / name))
        with pytest.raises(SettingsError, match="not a UniBA checkpoint"):
            _read_header(str(tmp_path / name))


def test_uniba_header_reader_reads_config_and_shapes(tmp_path):
    from tilewave.models.uniba import _read_header, is_uniba_file

    header = {"__metadata__": {"config": json.dumps({"scale": 2, "dim": 32})},
              "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
              "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}}
    path = _safetensors(tmp_path / "w.safetensors", json.dumps(header).encode())
    assert is_uniba_file(path)
    cfg, parameters = _read_header(path)
    assert (cfg.scale, cfg.dim, parameters) == (2, 32, 17)


@pytest.mark.parametrize("name,init", [("span-x2-scan", "span-x2"), ("uniba-x2-scan", "uniba-x2")])
def test_the_scan_models_describe_their_weights_and_keep_a_record(name, init):
    """Shipped with a training record beside them: what they started from, trained and
    held out; told the input's JPEG quality; listed as made for scans."""
    from tilewave.models import load_model

    desc = describe_model(name)
    model = load_model(name)
    assert desc.conditions == model.descriptor.conditions == ("jpeg_quality",)
    assert desc.parameters == sum(p.numel() for k, p in model.net.state_dict().items()
                                  if k != "mean")
    assert "JPEG" in desc.trained_for and desc.scan_variant is None
    assert describe_model(init).scan_variant == name
    folder = "span" if name.startswith("span") else "uniba"
    path = os.path.join(os.path.dirname(registry.__file__), folder, name.replace("-", "_") + ".json")
    with open(path) as f:
        record = json.load(f)
    assert record["init"].startswith(init) and record["steps"] > 0
    assert "he_target_image.png" in record["held_out"]
    assert not set(record["held_out"]) & set(record["images"])


def test_models_says_what_each_is_for(capsys):
    from tilewave.cli import main

    assert main(["models", "--json"]) == 0
    listed = {r["name"]: r["for"] for r in json.loads(capsys.readouterr().out)}
    assert "use span-x2-scan" in listed["span-x2"] and "use uniba-x2-scan" in listed["uniba-x2"]
    assert listed["span-x2-scan"].startswith("scans as they come: JPEG-compressed")
    assert "not upscaling" in listed["prefix-sum"]
