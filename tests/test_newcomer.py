"""What a new user trips over, each fixed: a file tilewave did not write is never replaced,
argument errors are one line, the API's errors name its keywords, ``dir(tilewave)`` shows
the API, a truncated slide's message is plain, ``info`` lists a slide's label and macro,
install hints match how tilewave was installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import random_image, shared_file, zarr_input

import tilewave
from tilewave.cli import main
from tilewave.errors import InputError, OutputExistsError, SettingsError
from tilewave.install import pip_hint
from tilewave.options import in_python_terms
from tilewave.storage.associated import write_associated
from tilewave.storage.describe import describe
from tilewave.storage.inputs import open_input


@pytest.fixture
def small(tmp_path):
    return zarr_input(tmp_path / "in.zarr", random_image((3, 24, 24), "uint8"))


def test_overwrite_never_replaces_a_tif_tilewave_did_not_write(small, tmp_path, capsys):
    notes = tmp_path / "notes.tif"
    notes.write_text("my notes")
    code = main(["upscale", small, str(notes), "--overwrite", "--local", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"tilewave: error: {str(notes)!r} is a file tilewave did not "
                                 "write; it will not replace it, so choose another path"]
    assert main(["upscale", small, str(tmp_path / "o.zarr"), "--local", "--quiet"]) == 0
    assert main(["export", str(tmp_path / "o.zarr"), str(notes), "--overwrite", "--quiet"]) == 2
    assert notes.read_text() == "my notes" and not (tmp_path / "notes.tif.zarr").exists()
    # A TIFF tilewave wrote is replaced, by a job or by an export.
    ours = tmp_path / "ours.tif"
    assert main(["upscale", small, str(ours), "--local", "--quiet"]) == 0
    assert main(["upscale", small, str(ours), "--local", "--quiet", "--overwrite",
                 "--scale", "3"]) == 0
    assert open_input(str(ours)).shape == (3, 72, 72)
    assert main(["export", str(tmp_path / "o.zarr"), str(ours), "--overwrite", "--quiet"]) == 0
    assert open_input(str(ours)).shape == (3, 48, 48)


@pytest.mark.parametrize("args", [["upscale"], ["upscale", "a", "b", "--tile", "0"],
                                  ["upscale", "a", "b", "--mode", "tiles"], ["frobnicate"],
                                  ["export", "x.zarr"]])
def test_argument_errors_are_one_line_naming_the_help(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("tilewave") and err[0].endswith("--help)"), err


def test_api_errors_name_keywords_and_the_cli_names_flags(small, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    tilewave.upscale(small, out, executor="local", progress=False)
    with pytest.raises(OutputExistsError, match=r"pass overwrite=True to replace it or "
                                                r"resume=True to continue"):
        tilewave.upscale(small, out, executor="local", progress=False)
    with pytest.raises(SettingsError, match=r"^executor='local' runs tiles in this process; drop "
                                            r"address$"):
        tilewave.upscale(small, tmp_path / "p.zarr", executor="local", address="auto")
    assert main(["upscale", small, str(out), "--local", "--quiet"]) == 2
    assert "pass --overwrite to replace it or --resume" in capsys.readouterr().err
    # The command line's flags do not stay switched on for the API afterwards.
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        tilewave.upscale(small, out, executor="local", progress=False)
    with pytest.raises(TypeError, match=r"^upscale\(\) got an unknown option 'tiel'; did you "
                                        r"mean 'tile'\?$"):
        tilewave.upscale(small, tmp_path / "q.zarr", tiel=16)
    with pytest.raises(OutputExistsError, match="pass overwrite=True"):
        tilewave.ingest_image(small, out)


def test_flags_read_as_keywords():
    assert in_python_terms("--mode halo needs --halo N") == "mode='halo' needs halo N"
    assert in_python_terms("--workers 3 asks; --nodata -5 is; --no-durable; --quiet") == (
        "workers=3 asks; nodata=-5 is; durable=False; progress=False")
    assert in_python_terms("give --minutes or --steps") == "give minutes or steps"
    assert in_python_terms("--local, or --executor ray") == "executor='local', or executor='ray'"


def test_dir_of_the_package_lists_its_api():
    listed = dir(tilewave)
    assert {"upscale", "tune", "ingest_image", "Report", "__version__"} <= set(listed)
    assert not {"lazy_attributes", "lazy_dir", "TYPE_CHECKING", "annotations"} & set(listed)
    assert "open_input" in dir(tilewave.storage)


def test_a_truncated_slide_is_refused_in_plain_words(tmp_path):
    slide = shared_file("cmu_small_region.svs").read_bytes()
    cut_header = tmp_path / "header.svs"  # its IFDs follow the pixel data: all of them gone
    cut_header.write_bytes(slide[:1_000_000])
    with pytest.raises(InputError) as info:
        open_input(str(cut_header))
    assert "damaged or truncated (invalid offset to first page" in str(info.value)
    cut_extras = tmp_path / "extras.svs"  # the first image whole, the thumbnail and the rest not
    cut_extras.write_bytes(slide[:1_500_000])
    with pytest.raises(InputError, match=r"is truncated after its first image \(invalid page "
                                         r"offset \d+\); copy the complete file again$") as info:
        open_input(str(cut_extras))
    for message in (str(info.value),):
        assert "<tifffile" not in message and "\n" not in message


def test_info_lists_a_slides_associated_images(tmp_path):
    facts = describe(str(shared_file("cmu_small_region.svs")))
    assert facts["associated"] == "thumbnail 574 x 768, label 387 x 463, macro 1280 x 431"


def test_info_lists_the_associated_images_an_output_keeps(small, tmp_path):
    out = tmp_path / "o.zarr"
    tilewave.upscale(small, out, executor="local", progress=False)
    assert "associated" not in describe(str(out))
    write_associated(str(out), {"label": np.zeros((30, 20, 3), np.uint8)})
    assert describe(str(out))["associated"] == "label 20 x 30"
    assert zarr.open_group(str(out), mode="r")["associated/label"].shape == (30, 20, 3)


@pytest.mark.subprocess
def test_install_hints_follow_how_tilewave_was_installed(tmp_path):
    # This checkout is installed in editable mode: the hint is pip's -e of the checkout.
    root = os.path.dirname(os.path.dirname(os.path.abspath(tilewave.__file__)))
    assert pip_hint("s3") in (f"pip install -e '{root}[s3]'", "pip install -e '.[s3]'")
    # The same module inside an installed package (site-packages) names the index's extra.
    site = tmp_path / "site-packages" / "tilewave"
    site.mkdir(parents=True)
    shutil.copy(os.path.join(root, "tilewave", "install.py"), site / "install.py")
    code = "import install; print(install.pip_hint('s3'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "pip install 'tilewave[s3]'"
