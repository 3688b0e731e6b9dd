"""An option is declared once (tilewave/options.py): the command line's flags, the API's
keywords and what the plan reads all come from its fields."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from tilewave.cli import _parser
from tilewave.models.base import TILING_MODES, SamplerSettings
from tilewave.options import (
    RAMPS,
    SAMPLER_OPTIONS,
    TIFF_COMPRESSIONS,
    TIFF_KINDS,
    Options,
    SamplerOptions,
    flag_of,
    from_arguments,
    from_keywords,
    option_fields,
    sampler_given,
)
from tilewave.options import TILING_MODES as OPTION_MODES
from tilewave.pipeline.blend import RAMPS as BLEND_RAMPS


def _upscale_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["upscale"]


def test_every_option_is_a_flag_and_a_keyword_with_its_default():
    parser = _upscale_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for f in option_fields():
        assert flag_of(f) in flags, f.name
    # Parsing no flags gives the options' defaults, sampler included.
    args = parser.parse_args(["in.tif", "out.zarr"])
    assert from_arguments(args) == Options()
    assert from_keywords("upscale", {}) == Options()


def test_flags_and_keywords_give_the_same_options():
    args = _upscale_parser().parse_args(
        ["in.tif", "out.zarr", "--tile", "64", "--local", "--quiet", "--steps", "3",
         "--early-stop", "0.01", "--no-durable", "--format", "ome"])
    given = from_keywords("upscale", {"tile": 64, "executor": "local", "progress": False,
                                      "steps": 3, "early_stop": 0.01, "durable": False,
                                      "tiff_format": "ome"})
    assert from_arguments(args) == given
    assert given.sampler == SamplerOptions(steps=3, early_stop=0.01)
    assert sampler_given(given) == {"steps": 3, "early_stop": 0.01}
    assert from_keywords("upscale", {"sampler": SamplerOptions(steps=3, early_stop=0.01),
                                     "tile": 64, "executor": "local", "progress": False,
                                     "durable": False, "tiff_format": "ome"}) == given
    with pytest.raises(TypeError, match="give one of them"):
        from_keywords("upscale", {"sampler": SamplerOptions(), "steps": 2})
    # --local is a shorthand of --executor local.
    for flags in (["--local"], ["--executor", "local"]):
        args = _upscale_parser().parse_args(["in.tif", "out.zarr", *flags])
        assert from_arguments(args) == from_keywords("upscale", {"executor": "local"})


def test_the_sampler_options_are_the_sampler_settings():
    assert SAMPLER_OPTIONS == tuple(f.name for f in fields(SamplerSettings))


def test_choices_shown_by_help_are_the_modules_own():
    from tilewave.storage.tiff_export import COMPRESSIONS, KINDS

    assert OPTION_MODES == TILING_MODES and RAMPS == BLEND_RAMPS
    assert set(TIFF_KINDS) == set(KINDS) and set(TIFF_COMPRESSIONS) == set(COMPRESSIONS)
