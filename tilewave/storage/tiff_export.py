"""Export an OME-Zarr pyramid to a tiled, pyramidal BigTIFF, with bounded memory.

Three flavours, one writer:

``slide``
    The whole-slide layout that slide readers recognise by its image description (the
    Aperio SVS convention: ``Aperio Image Library ...|AppMag = 40|MPP = 0.25``): pyramid
    levels as top-level tiled IFDs, resolution tags in centimetres. OpenSlide reports
    its objective power and microns per pixel, Bio-Formats every level as a resolution.
    8-bit RGB only (OpenSlide's limit).
``ome``
    OME-TIFF: OME-XML with physical pixel sizes, channel names and the objective, and the
    pyramid in SubIFDs of the full-resolution page, as Bio-Formats and QuPath expect.
``geotiff``
    GeoTIFF: the input's GeoKeys verbatim, pixel scale and tie point for the upscaled
    grid, GDAL's nodata tag, and the pyramid as internal overviews (top-level IFDs of
    reduced-resolution subfile type), as GDAL, rasterio and QGIS read them.

Pixels travel from Zarr to tifffile as an iterator of tiles, read a band of a few chunks
at a time, and tifffile compresses them with ``buffersize`` bounding what it holds, so
memory does not depend on the image size. The file is written under a temporary name and
renamed once complete, so a failed export never leaves a file that looks finished.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from .. import __version__
from ..errors import InputError, OutputExistsError, SettingsError
from . import layout, location

Kind = Literal["slide", "ome", "geotiff"]
KINDS: tuple[Kind, ...] = ("slide", "ome", "geotiff")
COMPRESSIONS = ("jpeg", "deflate", "zstd", "none")
#: What tifffile holds compressed before writing (its default is much larger).
BUFFERSIZE = 16 * 2**20
#: Columns read from Zarr at once, in tiles: a band of this many tiles per read.
BAND_TILES = 8


@dataclass(kw_only=True, frozen=True)
class ExportReport:
    path: str
    kind: Kind
    compression: str
    levels: tuple[tuple[int, int], ...]
    dtype: str
    bytes: int


@dataclass(frozen=True)
class _Source:
    path: str
    levels: list[zarr.Array]
    metadata: dict[str, Any]
    name: str


def _open_source(path: str) -> _Source:
    from .inputs import open_input

    image = open_input(path, check=False)
    if image.format != "ome-zarr":
        raise InputError(f"{path!r} is a {image.format} image, not an OME-Zarr image; export "
                         "works on tilewave outputs (run `tilewave upscale` first)")
    group = zarr.open_group(path, mode="r")
    levels = [_level(path, group, p) for p in _dataset_paths(path, group)]
    if any(a.ndim != 3 for a in levels):
        raise InputError(f"{path!r}: export needs (c, y, x) levels; this image has "
                         f"{levels[0].ndim} dimensions")
    job = group.attrs.get("tilewave")
    if isinstance(job, dict) and "complete" in job and not job["complete"]:
        raise InputError(f"{path!r} is an unfinished job; finish it with --resume first")
    if location.isdir(layout.state_dir(path)):
        raise InputError(f"{path!r} is an unfinished job; finish it with "
                         "`tilewave upscale ... --resume` first")
    # open_input already reads what a tilewave output inherited (its tilewave.metadata).
    return _Source(path, levels, image.metadata,
                   path.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[-1])


def _dataset_paths(path: str, group: zarr.Group) -> list[str]:
    """The paths of the levels listed in the group's OME-Zarr 0.5 ``multiscales``."""
    ome = group.attrs.get("ome")
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    datasets = first.get("datasets") if isinstance(first, dict) else None
    if not isinstance(datasets, list):
        raise InputError(f"{path!r} has no OME-Zarr 0.5 multiscales datasets (ome.multiscales); "
                         "export works on tilewave outputs")
    paths = []
    for dataset in datasets:
        level = dataset.get("path") if isinstance(dataset, dict) else None
        if not isinstance(level, str):
            raise InputError(f"{path!r}: a multiscales dataset without a path ({dataset!r})")
        paths.append(level)
    return paths


def _level(path: str, group: zarr.Group, level: str) -> zarr.Array:
    node = group[level]
    if not isinstance(node, zarr.Array):
        raise InputError(f"{path!r}: multiscales level {level!r} is a group, not an array")
    return node


def default_kind(dest: str, source_meta: dict[str, Any], dtype: np.dtype, channels: int) -> Kind:
    """GeoTIFF for georeferenced images, OME-TIFF for ``*.ome.tif(f)`` or anything that is
    not 8-bit RGB, else an OpenSlide slide TIFF."""
    if "crs" in source_meta:
        return "geotiff"
    if dest.lower().endswith((".ome.tif", ".ome.tiff")):
        return "ome"
    return "slide" if dtype == np.uint8 and channels == 3 else "ome"


def export_settings(dest: str, kind: str | None, compression: str | None, quality: int, tile: int,
                    dtype: np.dtype, channels: int, meta: dict[str, Any]) -> tuple[Kind, str]:
    """The TIFF kind and compression for an image of ``dtype``, ``channels`` and ``meta``,
    defaults filled in, or a one-line refusal. Needs no pixels, so ``upscale`` to a .tif
    checks it before the job starts."""
    kind = kind or default_kind(dest, meta, np.dtype(dtype), channels)
    compression = compression or ("jpeg" if kind == "slide" else "deflate")
    if kind not in KINDS:
        raise SettingsError(f"--format must be one of {', '.join(KINDS)}, not {kind!r}")
    if compression not in COMPRESSIONS:
        raise SettingsError(f"--compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if not 1 <= quality <= 100:
        raise SettingsError(f"--quality must be between 1 and 100, got {quality}")
    if tile < 16 or tile % 16:
        raise SettingsError(f"--tile must be a multiple of 16 (TIFF's rule), got {tile}")
    _check(kind, compression, np.dtype(dtype), channels, meta)
    return kind, compression


def _check(kind: Kind, compression: str, dtype: np.dtype, channels: int, meta: dict[str, Any]) -> None:
    if kind == "slide" and (dtype != np.uint8 or channels != 3):
        raise SettingsError(f"a slide TIFF holds 8-bit RGB (OpenSlide's limit), this image is "
                            f"{channels}-channel {dtype}; use --format ome or geotiff")
    if kind == "geotiff" and "crs" not in meta:
        raise SettingsError("this image has no georeferencing (its input was not a GeoTIFF); "
                            "use --format slide or ome")
    if compression == "jpeg" and (dtype != np.uint8 or channels not in (1, 3)):
        raise SettingsError(f"JPEG holds 8-bit grey or RGB, this image is {channels}-channel "
                            f"{dtype}; use --compression deflate or zstd")


def _tiles(level: zarr.Array, tile: int, bar: Any, plane: int | None = None) -> Iterator[np.ndarray]:
    """The level's tiles in TIFF order, ``(tile, tile, c)`` (one channel, ``plane``, where
    given), edge tiles zero-padded."""
    _, h, w = level.shape
    channels = slice(None) if plane is None else slice(plane, plane + 1)
    c = level.shape[0] if plane is None else 1
    band = tile * BAND_TILES
    for y in range(0, h, tile):
        for x0 in range(0, w, band):
            block = np.asarray(level[channels, y : y + tile, x0 : x0 + band])
            for x in range(0, block.shape[2], tile):
                part = block[:, :, x : x + tile]
                out = np.zeros((tile, tile, c), dtype=level.dtype)
                out[: part.shape[1], : part.shape[2]] = part.transpose(1, 2, 0)
                bar.update(1)
                yield out


def _photometric(channels: int) -> dict[str, Any]:
    if channels == 1:
        return {"photometric": "minisblack"}
    if channels == 3:
        return {"photometric": "rgb"}
    if channels == 4:
        return {"photometric": "rgb", "extrasamples": ["unassalpha"]}
    return {"photometric": "minisblack", "planarconfig": "contig"}


#: OME-XML unit symbols of the linear units a projected CRS may have (``linear_unit``).
_OME_UNITS = {"meter": "m", "metre": "m", "foot": "ft"}


def _ome_xml(meta: dict[str, Any], name: str, height: int, width: int, channels: int,
             dtype: np.dtype, extras: Sequence[tuple[str, tuple[int, ...]]] = (),
             planar: bool = False) -> str:
    """OME-XML for one interleaved image: size, pixel size, channel names, objective.

    Written here rather than by tifffile because tifffile's writer has no Instrument, which
    is where Bio-Formats and QuPath look for the magnification. Every character is ASCII:
    the TIFF tag is, and Bio-Formats reads ``&#181;`` (a reference to "µ") as a broken
    document and the file as a plain TIFF. A slide's pixel size is in micrometres, OME's
    default unit, so no unit is written for it.
    """
    from uuid import uuid4
    from xml.etree import ElementTree as ET

    ns = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    root = ET.Element("OME", {"xmlns": ns, "xmlns:xsi": xsi,
                              "xsi:schemaLocation": f"{ns} {ns}/ome.xsd",
                              "UUID": f"urn:uuid:{uuid4()}", "Creator": f"tilewave {__version__}"})
    if "objective_power" in meta:
        instrument = ET.SubElement(root, "Instrument", ID="Instrument:0")
        ET.SubElement(instrument, "Objective", ID="Objective:0:0",
                      NominalMagnification=f"{float(meta['objective_power']):g}")
    image = ET.SubElement(root, "Image", ID="Image:0", Name=name)
    if "objective_power" in meta:
        ET.SubElement(image, "InstrumentRef", ID="Instrument:0")
        ET.SubElement(image, "ObjectiveSettings", ID="Objective:0:0")
    pixels = {"ID": "Pixels:0", "DimensionOrder": "XYCZT", "Type": str(dtype),
              "SizeX": str(width), "SizeY": str(height), "SizeC": str(channels), "SizeZ": "1",
              "SizeT": "1", "Interleaved": "false" if planar else "true", "BigEndian": "false"}
    if "mpp" in meta:
        pixels.update(PhysicalSizeY=f"{meta['mpp'][0]:.10g}", PhysicalSizeX=f"{meta['mpp'][1]:.10g}")
    elif "pixel_size" in meta and meta.get("linear_unit") in _OME_UNITS:
        unit = _OME_UNITS[meta["linear_unit"]]
        pixels.update(PhysicalSizeY=f"{meta['pixel_size'][0]:.10g}", PhysicalSizeYUnit=unit,
                      PhysicalSizeX=f"{meta['pixel_size'][1]:.10g}", PhysicalSizeXUnit=unit)
    node = ET.SubElement(image, "Pixels", pixels)
    names = meta.get("channel_names") or []
    if planar:
        # One IFD a channel, each with its own name (and its pyramid in its SubIFDs).
        for k in range(channels):
            ET.SubElement(node, "Channel", {"ID": f"Channel:0:{k}", "SamplesPerPixel": "1",
                                            **({"Name": str(names[k])} if k < len(names) else {})})
        for k in range(channels):
            ET.SubElement(node, "TiffData", FirstC=str(k), IFD=str(k), PlaneCount="1")
    else:
        channel = {"ID": "Channel:0:0", "SamplesPerPixel": str(channels)}
        if channels == 1 and names:
            channel["Name"] = str(names[0])
        ET.SubElement(node, "Channel", channel)
        ET.SubElement(node, "TiffData", IFD="0", PlaneCount="1")
    first_extra = channels if planar else 1
    # Associated images: one more image each, in the top-level IFDs after the pyramid's
    # (whose levels are SubIFDs of IFD 0), named as Bio-Formats names a slide's.
    for k, (extra, shape) in enumerate(extras, start=1):
        ifd = first_extra + k - 1
        image = ET.SubElement(root, "Image", ID=f"Image:{k}", Name=f"{extra} image")
        node = ET.SubElement(image, "Pixels", {
            "ID": f"Pixels:{k}", "DimensionOrder": "XYCZT", "Type": "uint8", "SizeX": str(shape[1]),
            "SizeY": str(shape[0]), "SizeC": "3", "SizeZ": "1", "SizeT": "1",
            "Interleaved": "true", "BigEndian": "false"})
        ET.SubElement(node, "Channel", {"ID": f"Channel:{k}:0", "SamplesPerPixel": "3"})
        ET.SubElement(node, "TiffData", IFD=str(ifd), PlaneCount="1")
    # Non-ASCII in a name becomes a character reference, which Bio-Formats would
    # misread; names are the only free text here.
    body = ET.tostring(root, encoding="us-ascii", xml_declaration=False).decode("ascii")
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


#: The first line of every slide IFD's description, by which readers know the layout.
_APERIO = f"Aperio Image Library tilewave {__version__}"


def _slide_description(meta: dict[str, Any], name: str, width: int, height: int, tile: int,
                       compression: str, quality: int, base: tuple[int, int] | None = None) -> str:
    """An Aperio-style description: a first line naming the writer, then the geometry and
    ``key = value`` fields separated by ``|``. Level 0 carries the fields; a reduced level
    says which level-0 size it was reduced from, as scanners write it."""
    head = f"{_APERIO}\r\n"
    if base is not None:
        # "\n" alone after the first IFD, as scanners write it: OpenSlide 3 splits at
        # "\r" and "\n" both and reads the name of an associated image on line 2.
        return f"{_APERIO}\n{base[0]}x{base[1]} -> {width}x{height} - "
    codec = {"jpeg": f"JPEG/RGB Q={quality}", "none": "uncompressed"}.get(compression, compression)
    fields = [f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) {codec}"]
    if "objective_power" in meta:
        fields.append(f"AppMag = {float(meta['objective_power']):g}")
    if "mpp" in meta:
        fields.append(f"MPP = {float(meta['mpp'][1]):.6g}")
    fields.append(f"Filename = {name}")
    return head + "|".join(fields)


def _label(name: str, width: int = 480, height: int = 240) -> np.ndarray:
    """A label image naming the slide, for inputs that had none: Bio-Formats reads an
    Aperio file's last IFDs as its label and macro unless both are named."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((16, 16), f"tilewave {__version__}", fill="black")
    draw.text((16, 48), name[-60:], fill="black")
    return np.asarray(image)


def _slide_extras(src: _Source) -> dict[str, np.ndarray]:
    """What a slide TIFF carries besides its levels: the input's label and macro (or a
    label naming it and the smallest level as the overview), and a thumbnail from the
    smallest level, halved so that readers never take it for a level."""
    from .associated import load_associated
    from .pyramid import downsample_window

    kept = load_associated(src.path)
    level = np.asarray(src.levels[-1][:])
    _, h, w = level.shape
    smallest = np.moveaxis(level, 0, -1)
    halved = np.moveaxis(downsample_window(level, -(-h // 2), -(-w // 2)), 0, -1)
    return {"thumbnail": np.ascontiguousarray(halved),
            "label": kept.get("label", _label(src.name)),
            "macro": kept.get("macro", smallest)}


def _geotiff_tags(meta: dict[str, Any]) -> list[tuple[int, str, int, Any, bool]]:
    py, px = meta["pixel_size"]
    ox, oy = meta["origin"]
    keys = meta.get("geokeys") or {}
    tags: list[tuple[int, str, int, Any, bool]] = [
        (33550, "d", 3, (float(px), float(py), 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, float(ox), float(oy), 0.0), True),
    ]
    if "GeoKeyDirectoryTag" in keys:
        directory = [int(v) for v in keys["GeoKeyDirectoryTag"]]
        tags.append((34735, "H", len(directory), directory, True))
    if "GeoDoubleParamsTag" in keys:
        doubles = [float(v) for v in keys["GeoDoubleParamsTag"]]
        tags.append((34736, "d", len(doubles), doubles, True))
    if "GeoAsciiParamsTag" in keys:
        tags.append((34737, "s", 0, str(keys["GeoAsciiParamsTag"]), True))
    if "nodata" in meta:
        tags.append((42113, "s", 0, f"{meta['nodata']:g}", True))
    names = meta.get("channel_names") or []
    if names:  # GDAL's band descriptions, which QGIS and rasterio show
        from xml.sax.saxutils import escape

        items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">'
                        f"{escape(str(n))}</Item>" for i, n in enumerate(names))
        tags.append((42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True))
    return tags


def _write_extra(tw: Any, name: str, pixels: np.ndarray, reduced_from: tuple[int, int] | None | bool) -> None:
    """Write an associated image as a stripped top-level IFD. For a slide
    (``reduced_from`` a size or None) with the Aperio description readers recognise it
    by: the thumbnail second, as ``W0xH0 -> WxH``; the label and macro last, named."""
    h, w = pixels.shape[:2]
    page: dict[str, Any] = {"photometric": "rgb", "metadata": None, "rowsperstrip": 64}
    if reduced_from is not False:
        head = f"{_APERIO}\n"
        if name == "thumbnail":
            assert isinstance(reduced_from, tuple)
            page["description"] = head + f"{reduced_from[0]}x{reduced_from[1]} -> {w}x{h} - "
        else:
            page["description"] = head + f"{name} {w}x{h}"
            page["subfiletype"] = 1 if name == "label" else 9
    # Labels carry text and barcodes: lossless; the others as scanners store them.
    page["compression"] = "lzw" if name == "label" else "jpeg"
    tw.write(pixels, **page)


def written_by_tilewave(path: str) -> bool:
    """Whether the file at ``path`` is a TIFF this module wrote: the first page's
    description names tilewave in each kind (slide, OME, GeoTIFF). Only such a file is
    ever replaced by ``overwrite``."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return "tilewave" in (getattr(tf.pages[0], "description", None) or "")
    except Exception:  # not a TIFF at all, or a damaged one: not ours to replace
        return False


def check_replaceable_file(path: str) -> None:
    """Refuse to ``overwrite`` a file tilewave did not write (``notes.tif``)."""
    if os.path.isfile(path) and not written_by_tilewave(path):
        raise OutputExistsError(f"{path!r} is a file tilewave did not write; it will not "
                                "replace it, so choose another path")


def _check_destination(source: str, dest: str, overwrite: bool) -> None:
    """The export's refusals about where it writes: never into the image it exports, never
    over a file without ``overwrite``, never over a folder or a file tilewave did not write."""
    dest_abs, source_abs = os.path.abspath(dest), location.absolute(source)
    if dest_abs == source_abs or dest_abs.startswith(source_abs.rstrip(os.sep) + os.sep):
        raise SettingsError(f"export file {dest!r} lies inside the image it exports; choose another path")
    if os.path.exists(dest) and not overwrite:
        raise OutputExistsError(f"{dest!r} exists; add --overwrite to replace it")
    if os.path.isdir(dest):
        raise OutputExistsError(f"{dest!r} is a folder; give a file name")
    check_replaceable_file(dest)


def _writer_args(kind: str, compression: str, quality: int, tile: int, channels: int,
                 dtype: np.dtype) -> tuple[dict[str, Any], bool]:
    """tifffile's keywords common to every page, and whether channels go in IFDs of their own."""
    codec = None if compression == "none" else compression
    args: dict[str, Any] = {"tile": (tile, tile), "compression": codec, "maxworkers": 2,
                            "buffersize": BUFFERSIZE, **_photometric(channels)}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    elif codec is not None:
        args["predictor"] = True  # horizontal differencing: smaller deflate/zstd files
    # OME-TIFF keeps every channel but RGB(A) in an IFD of its own, so each has its name.
    planar = kind == "ome" and channels > 1 and not (dtype == np.uint8 and channels in (3, 4))
    if planar:
        args.update(photometric="minisblack")
        args.pop("extrasamples", None)
        args.pop("planarconfig", None)
    return args, planar


def _associated_extras(src: _Source, kind: str, channels: int,
                       dtype: np.dtype) -> dict[str, np.ndarray]:
    """The associated images the export writes: a slide's all, an RGB OME-TIFF's label and macro."""
    if kind == "slide":
        return _slide_extras(src)
    if kind == "ome" and channels == 3 and dtype == np.uint8:
        from .associated import load_associated

        return {k: v for k, v in load_associated(src.path).items() if k in ("label", "macro")}
    return {}


def _page_metadata(src: _Source, kind: str, i: int, plane: int | None,
                   shape: tuple[int, int, int], tile: int, compression: str, quality: int,
                   extras: dict[str, np.ndarray], planar: bool) -> dict[str, Any]:
    """What page ``i`` (a level, of a ``plane``) says about itself: its subfile type, and
    the description (Aperio, OME-XML or tilewave's) and tags its readers look for."""
    c, h, w = shape
    base = src.levels[0]
    page: dict[str, Any] = {"metadata": None}
    if i:
        # A slide's levels are full images (subfile type 0), as scanners write
        # them: Bio-Formats takes a reduced-resolution IFD of an Aperio file
        # for its label or macro image.
        page["subfiletype"] = 0 if kind == "slide" else 1
        if kind == "slide":
            page["description"] = _slide_description(
                src.metadata, src.name, w, h, tile, compression, quality,
                (base.shape[2], base.shape[1]))
    elif kind == "ome":
        if plane in (None, 0):
            page["description"] = _ome_xml(
                src.metadata, src.name, h, w, c, np.dtype(base.dtype),
                [(e, extras[e].shape) for e in ("label", "macro") if e in extras], planar)
        page["subifds"] = len(src.levels) - 1
    elif kind == "slide":
        page["description"] = _slide_description(src.metadata, src.name, w, h, tile,
                                                 compression, quality)
    else:
        page["description"] = (f"tilewave {__version__}: {src.name}, level 0 of "
                               f"{len(src.levels)}")
        if kind == "geotiff":
            page["extratags"] = _geotiff_tags(src.metadata)
    return page


def export_tiff(
    source: str,
    dest: str,
    *,
    kind: Kind | None = None,
    compression: str | None = None,
    quality: int = 90,
    tile: int = 512,
    overwrite: bool = False,
    progress: bool = True,
    label: str = "",
) -> ExportReport:
    """Write the OME-Zarr image ``source`` (every level of its pyramid) to ``dest`` (its
    progress bar named after ``label``)."""
    import tifffile
    from tqdm.auto import tqdm

    if not location.is_local(dest):
        raise SettingsError(f"export writes a local file, not {dest!r}; export here, then "
                            "copy the file to object storage")
    if not location.exists(source):
        raise InputError(f"{source!r} does not exist; give a tilewave output (OME-Zarr)")
    src = _open_source(source)
    base = src.levels[0]
    channels, dtype = base.shape[0], np.dtype(base.dtype)
    kind, compression = export_settings(dest, kind, compression, quality, tile, dtype, channels,
                                        src.metadata)
    _check_destination(source, dest, overwrite)
    args, planar = _writer_args(kind, compression, quality, tile, channels, dtype)
    planes: list[int | None] = list(range(channels)) if planar else [None]
    total = len(planes) * sum(-(-a.shape[1] // tile) * -(-a.shape[2] // tile) for a in src.levels)
    extras = _associated_extras(src, kind, channels, dtype)
    partial = dest + ".partial"
    try:
        with tqdm(total=total, unit="tile", desc=f"{label}export {kind}", disable=not progress,
                  dynamic_ncols=True) as bar, tifffile.TiffWriter(partial, bigtiff=True, ome=False) as tw:
            for plane, i in ((p, i) for p in planes for i in range(len(src.levels))):
                level = src.levels[i]
                c, h, w = level.shape
                n = c if plane is None else 1
                page: dict[str, Any] = {"shape": (h, w, n) if n > 1 else (h, w),
                                        "dtype": dtype, **args}
                data: Iterator[np.ndarray] = (t if n > 1 else t[..., 0]
                                              for t in _tiles(level, tile, bar, plane))
                factor = base.shape[2] / w
                if "mpp" in src.metadata and kind != "geotiff":
                    mpp_y, mpp_x = (v * factor for v in src.metadata["mpp"])
                    page.update(resolution=(1e4 / mpp_x, 1e4 / mpp_y), resolutionunit="CENTIMETER")
                page.update(_page_metadata(src, kind, i, plane, (c, h, w), tile, compression,
                                           quality, extras, planar))
                tw.write(data, **page)
                if kind == "slide" and i == 0:
                    _write_extra(tw, "thumbnail", extras["thumbnail"], (w, h))
            for name in ("label", "macro"):
                if name in extras:
                    _write_extra(tw, name, extras[name], None if kind == "slide" else False)
        os.replace(partial, dest)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return ExportReport(path=dest, kind=kind, compression=compression,
                        levels=tuple((a.shape[1], a.shape[2]) for a in src.levels),
                        dtype=str(dtype), bytes=os.path.getsize(dest))
