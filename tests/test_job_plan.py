"""The job planner: a pure function of options, image facts and model descriptors, tested
without I/O, Ray or torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tilewave.errors import SettingsError
from tilewave.models.base import ModelDescriptor
from tilewave.pipeline.cascade import Stage
from tilewave.pipeline.job_plan import ImageFacts, Options, plan_job

CNN = ModelDescriptor("cnn", 2, ("halo", "blend"), halo=10)
CONTEXT = ModelDescriptor("ctx", 2, ("context",), halo=0, block=8, context_format="k/v")
UNKNOWN_REACH = ModelDescriptor("user", 4, ("blend", "halo"), halo=32, halo_measured=False)
GREY_ONLY = ModelDescriptor("grey", 2, ("halo",), halo=4, channels=(1,))
GREY_CONTEXT = ModelDescriptor("grey", 2, ("context",), block=8, context_format="k/v", channels=(1,))
FACTS = ImageFacts(height=1000, width=700, channels=3)


def plan(output="out.zarr", facts=FACTS, stages=(("cnn", 2),), descriptors=(CNN,), **options):
    return plan_job(output, Options(**options), facts, [Stage(m, s) for m, s in stages],
                    list(descriptors))


def test_one_halo_stage():
    p = plan(tile=256)
    (stage,) = p.stages
    assert (stage.mode, stage.output, stage.dependent) == ("halo", "out.zarr", False)
    assert (stage.grid.rows, stage.grid.cols, stage.grid.halo, stage.grid.overlap) == (4, 3, 10, 0)
    assert p.export is None and p.scale == 2 and p.intermediate_stores == []


def test_blend_defaults_to_an_eighth_of_the_tile_and_depends_on_neighbours():
    stage = plan(tile=128, mode="blend").stages[0]
    assert stage.grid.overlap == 16 and stage.dependent
    assert not plan(tile=128, mode="blend", overlap=0).stages[0].dependent


def test_context_tiles_depend_on_their_neighbours():
    stage = plan(stages=(("ctx", 2),), descriptors=(CONTEXT,), tile=64).stages[0]
    assert stage.mode == "context" and stage.dependent


def test_a_tile_larger_than_the_image_shrinks_to_it():
    stage = plan(facts=ImageFacts(height=50, width=30, channels=3), stages=(("ctx", 2),), descriptors=(CONTEXT,),
                 tile=512).stages[0]
    assert stage.grid.tile == 56  # the longest side, rounded up to whole blocks


def test_stages_grow_the_image_and_write_beside_the_output():
    p = plan(stages=(("cnn", 2), ("cnn", 2), ("cnn", 2)), descriptors=(CNN,) * 3, tile=256)
    assert p.scale == 8
    assert [s.output for s in p.stages] == ["out.zarr.stage1.zarr", "out.zarr.stage2.zarr",
                                           "out.zarr"]
    assert [(s.grid.height, s.grid.width) for s in p.stages] == [(1000, 700), (2000, 1400),
                                                                (4000, 2800)]
    assert p.intermediate_stores == ["out.zarr.stage1.zarr", "out.zarr.stage2.zarr"]


def test_a_tiff_output_is_a_store_then_an_export():
    p = plan(output="slide.tif", tiff_format="ome", compression="zstd", quality=80)
    assert p.stages[-1].output == "slide.tif.zarr"
    assert (p.export.store, p.export.file, p.export.kind, p.export.compression,
            p.export.quality) == ("slide.tif.zarr", "slide.tif", "ome", "zstd", 80)


@pytest.mark.parametrize("options, words", [
    ({"mode": "context"}, "runs in mode halo or blend, not 'context'"),
    ({"tile": 0}, "--tile must be a positive"),
    ({"ramp": "square"}, "--ramp must be one of"),
    ({"mode": "halo", "overlap": 8}, "--overlap applies to --mode blend only"),
    ({"executor": "dask"}, "executor must be one of 'auto', 'ray', 'local'"),
    ({"executor": "local", "address": "auto"}, "drop --address"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"tiff_format": "ome"}, "apply to a .tif/.tiff output"),
    ({"adaptive": True, "halo": 1}, "--adaptive needs --halo of at least 2"),
])
def test_inconsistent_settings_are_refused(options, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        plan(**options)


def test_model_specific_refusals():
    with pytest.raises(SettingsError, match="multiple of 8, not 20"):
        plan(stages=(("ctx", 2),), descriptors=(CONTEXT,), tile=20)
    with pytest.raises(SettingsError, match="sets its own halo"):
        plan(stages=(("ctx", 2),), descriptors=(CONTEXT,), tile=64, halo=3)
    with pytest.raises(SettingsError, match="--adaptive routes easy tiles to bicubic"):
        plan(stages=(("ctx", 2),), descriptors=(CONTEXT,), tile=64, adaptive=True)
    with pytest.raises(SettingsError, match="--mode halo needs --halo N"):
        plan(stages=(("user", 4),), descriptors=(UNKNOWN_REACH,), mode="halo")
    assert plan(stages=(("user", 4),), descriptors=(UNKNOWN_REACH,), mode="halo",
                halo=12).stages[0].grid.halo == 12
    # A grey model runs an RGB (or a 7-band) input band by band, in halo or blend mode.
    assert plan(stages=(("grey", 2),), descriptors=(GREY_ONLY,)).stages[0].mode == "halo"
    with pytest.raises(SettingsError, match="takes 1 channels but the input has 3, and it runs "
                                            "band by band only in halo or blend mode"):
        plan(stages=(("grey", 2),), descriptors=(GREY_CONTEXT,))


def test_a_cascade_whose_last_stage_cannot_run_is_refused_before_the_first():
    with pytest.raises(SettingsError, match="model 'ctx' works on blocks of 8"):
        plan(stages=(("cnn", 2), ("ctx", 2)), descriptors=(CNN, CONTEXT), tile=100)


def test_a_tiff_output_on_object_storage_is_refused():
    with pytest.raises(SettingsError, match="TIFF output is written to a local file"):
        plan(output="s3://bucket/slide.tif")


@pytest.mark.subprocess
def test_planning_imports_neither_torch_nor_ray():
    code = ("import sys, tilewave.pipeline.job_plan, tilewave.pipeline.job; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
