"""Planning stages: ``name:N`` stages, canonical stage names, and refusals whose
suggestions the planner itself accepts."""

from __future__ import annotations

import math
import re

import pytest

from tilewave.errors import SettingsError, UnknownModelError
from tilewave.pipeline.cascade import Stage, plan_stages, suggestions


def test_stages_with_explicit_scales():
    assert plan_stages("span-x2,bicubic:3", None) == [Stage("span-x2", 2), Stage("bicubic", 3)]
    assert plan_stages("span-x2,bicubic:3", 6) == [Stage("span-x2", 2), Stage("bicubic", 3)]
    assert plan_stages("bicubic:3", None) == [Stage("bicubic", 3)]
    assert plan_stages("span-x2:2", None) == [Stage("span-x2", 2)]


def test_stage_names_are_canonical():
    assert plan_stages("SPAN_x2", 4) == [Stage("span-x2", 2)] * 2
    assert plan_stages("Span_X4, BICUBIC:2", None) == [Stage("span-x4", 4), Stage("bicubic", 2)]


@pytest.mark.parametrize("model, message", [
    ("span-x2:3", "stage 'span-x2:3': model 'span-x2' runs at scale 2, not 3"),
    ("span-x2,bicubic:0", "stage 'bicubic:0'.*not 0"),
])
def test_a_stage_scale_the_model_cannot_run_is_refused(model, message):
    with pytest.raises(SettingsError, match=message):
        plan_stages(model, None)


def test_explicit_stages_must_multiply_to_the_scale():
    with pytest.raises(SettingsError, match="upscale x6, not x4"):
        plan_stages("span-x2,bicubic:3", 4)


def test_unknown_stage_names_suggest_the_closest():
    with pytest.raises(UnknownModelError, match="'bicubc'; did you mean 'bicubic'"):
        plan_stages("span-x2,bicubc:3", None)


def test_a_scale_below_one_is_refused():
    with pytest.raises(SettingsError, match="positive integer"):
        plan_stages("span-x2", 0)


def _suggested(message: str) -> list[str]:
    """The alternatives after "try" in a refusal: "A, B or C"."""
    alternatives = message.split("; try ", 1)[1]
    return re.split(r", (?=--)| or (?=--)", alternatives)


def _arguments(text: str, model: str) -> tuple[str, int]:
    """``--model M --scale N`` (``--model`` absent: the model that was refused)."""
    found = dict(re.findall(r"--(model|scale) (\S+)", text))
    assert " ".join(f"--{k} {v}" for k, v in found.items()) == text
    return found.get("model", model), int(found["scale"])


REFUSED = [("span-x2", 3), ("span-x2", 6), ("span-x2", 12), ("span-x4", 8), ("span-x4", 2),
           ("span-x2", 1), ("realesrgan-x4plus", 6), ("span-x2", 5), ("SPAN_x4", 24)]


@pytest.mark.parametrize("model, scale", REFUSED)
def test_every_suggestion_is_accepted_and_reaches_its_scale(model, scale):
    with pytest.raises(SettingsError, match="not a product") as info:
        plan_stages(model, scale)
    message = str(info.value)
    offered = _suggested(message)
    assert offered == [str(s) for s in suggestions(model, scale)]
    for text in offered:
        suggested_model, suggested_scale = _arguments(text, model)
        stages = plan_stages(suggested_model, suggested_scale)
        assert math.prod(s.scale for s in stages) == suggested_scale, text


def test_suggestions_for_x3_with_span_x2():
    assert [str(s) for s in suggestions("span-x2", 3)] == [
        "--scale 2", "--scale 4", "--model bicubic --scale 3"]


def test_a_bicubic_remainder_is_suggested_where_the_model_divides_the_scale():
    assert str(suggestions("span-x2", 6)[0]) == "--model span-x2,bicubic:3 --scale 6"
    assert str(suggestions("span-x2", 12)[0]) == "--model span-x2,span-x2,bicubic:3 --scale 12"
    assert str(suggestions("span-x4", 8)[0]) == "--model span-x4,bicubic:2 --scale 8"
    assert all("bicubic:" not in str(s) for s in suggestions("span-x2", 3))


def test_a_weights_file_stage_runs_by_absolute_path(tmp_path, monkeypatch):
    import shutil

    from tilewave.models.uniba import weights_path

    shutil.copy(weights_path(2), tmp_path / "Mine_x2.safetensors")
    monkeypatch.chdir(tmp_path)
    mine = str(tmp_path / "Mine_x2.safetensors")
    assert plan_stages("Mine_x2.safetensors:2,bicubic:2", None) == [Stage(mine, 2),
                                                                    Stage("bicubic", 2)]
    assert plan_stages("Mine_x2.safetensors", 4) == [Stage(mine, 2)] * 2
    with pytest.raises(SettingsError, match=r"try --model .*Mine_x2\.safetensors,bicubic:3"):
        plan_stages("Mine_x2.safetensors", 6)
