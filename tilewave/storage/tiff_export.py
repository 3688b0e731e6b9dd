"""Export an OME-Zarr pyramid to a tiled, pyramidal BigTIFF, with bounded memory.

Three flavours, one writer:

``slide``
    Pyramid levels as top-level IFDs (reduced-resolution subfile type), resolution tags
    in centimetres: what OpenSlide reads as a generic tiled TIFF, with its pixel size.
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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from .. import __version__
from ..errors import InputError, OutputExistsError, SettingsError
from . import location

Kind = Literal["slide", "ome", "geotiff"]
KINDS: tuple[Kind, ...] = ("slide", "ome", "geotiff")
COMPRESSIONS = ("jpeg", "deflate", "zstd", "none")
#: What tifffile holds compressed before writing (its default is much larger).
BUFFERSIZE = 16 * 2**20
#: Columns read from Zarr at once, in tiles: a band of this many tiles per read.
BAND_TILES = 8


@dataclass(frozen=True)
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
    if location.isdir(location.join(path, ".tilewave")):
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


def _tiles(level: zarr.Array, tile: int, bar: Any) -> Iterator[np.ndarray]:
    """The level's tiles in TIFF order, ``(tile, tile, c)``, edge tiles zero-padded."""
    c, h, w = level.shape
    band = tile * BAND_TILES
    for y in range(0, h, tile):
        for x0 in range(0, w, band):
            block = np.asarray(level[:, y : y + tile, x0 : x0 + band])
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


def _ome_xml(meta: dict[str, Any], name: str, height: int, width: int, channels: int,
             dtype: np.dtype) -> str:
    """OME-XML for one interleaved image: size, pixel size, channel names, objective.

    Written here rather than by tifffile because tifffile's writer has no Instrument, which
    is where Bio-Formats and QuPath look for the magnification.
    """
    from uuid import uuid4
    from xml.etree import ElementTree as ET

    ns = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
    root = ET.Element("OME", {"xmlns": ns, "UUID": f"urn:uuid:{uuid4()}",
                              "Creator": f"tilewave {__version__}"})
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
              "SizeT": "1", "Interleaved": "true", "BigEndian": "false"}
    if "mpp" in meta:
        pixels.update(PhysicalSizeY=f"{meta['mpp'][0]:.10g}", PhysicalSizeYUnit="µm",
                      PhysicalSizeX=f"{meta['mpp'][1]:.10g}", PhysicalSizeXUnit="µm")
    node = ET.SubElement(image, "Pixels", pixels)
    channel = {"ID": "Channel:0:0", "SamplesPerPixel": str(channels)}
    names = meta.get("channel_names") or []
    if channels == 1 and names:
        channel["Name"] = str(names[0])
    ET.SubElement(node, "Channel", channel)
    ET.SubElement(node, "TiffData", IFD="0", PlaneCount="1")
    # TIFF descriptions are ASCII: "µm" travels as a character reference.
    body = ET.tostring(root, encoding="us-ascii", xml_declaration=False).decode("ascii")
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


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
    return tags


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
) -> ExportReport:
    """Write the OME-Zarr image ``source`` (every level of its pyramid) to ``dest``."""
    import tifffile
    from tqdm.auto import tqdm

    if location.is_url(dest):
        raise SettingsError(f"export writes a local file, not {dest!r}; export here, then "
                            "copy the file to object storage")
    if not location.exists(source):
        raise InputError(f"{source!r} does not exist; give a tilewave output (OME-Zarr)")
    src = _open_source(source)
    base = src.levels[0]
    channels, dtype = base.shape[0], np.dtype(base.dtype)
    kind, compression = export_settings(dest, kind, compression, quality, tile, dtype, channels,
                                        src.metadata)
    dest_abs, source_abs = os.path.abspath(dest), location.absolute(source)
    if dest_abs == source_abs or dest_abs.startswith(source_abs.rstrip(os.sep) + os.sep):
        raise SettingsError(f"export file {dest!r} lies inside the image it exports; choose another path")
    if os.path.exists(dest) and not overwrite:
        raise OutputExistsError(f"{dest!r} exists; add --overwrite to replace it")
    if os.path.isdir(dest):
        raise OutputExistsError(f"{dest!r} is a folder; give a file name")

    codec = None if compression == "none" else compression
    args: dict[str, Any] = {"tile": (tile, tile), "compression": codec, "maxworkers": 2,
                            "buffersize": BUFFERSIZE, **_photometric(channels)}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    elif codec is not None:
        args["predictor"] = True  # horizontal differencing: smaller deflate/zstd files
    total = sum(-(-a.shape[1] // tile) * -(-a.shape[2] // tile) for a in src.levels)
    partial = dest + ".partial"
    try:
        with tqdm(total=total, unit="tile", desc=f"export {kind}", disable=not progress,
                  dynamic_ncols=True) as bar, tifffile.TiffWriter(partial, bigtiff=True, ome=False) as tw:
            for i, level in enumerate(src.levels):
                c, h, w = level.shape
                page: dict[str, Any] = {"shape": (h, w, c) if c > 1 else (h, w),
                                        "dtype": dtype, **args}
                data: Iterator[np.ndarray] = (t if c > 1 else t[..., 0] for t in _tiles(level, tile, bar))
                factor = base.shape[2] / w
                if "mpp" in src.metadata and kind != "geotiff":
                    mpp_y, mpp_x = (v * factor for v in src.metadata["mpp"])
                    page.update(resolution=(1e4 / mpp_x, 1e4 / mpp_y), resolutionunit="CENTIMETER")
                if i:
                    page["subfiletype"] = 1
                    page["metadata"] = None
                elif kind == "ome":
                    page["metadata"] = None
                    page["description"] = _ome_xml(src.metadata, src.name, h, w, c, dtype)
                    page["subifds"] = len(src.levels) - 1
                else:
                    page["metadata"] = None
                    page["description"] = (f"tilewave {__version__}: {src.name}, level 0 of "
                                           f"{len(src.levels)}")
                    if kind == "geotiff":
                        page["extratags"] = _geotiff_tags(src.metadata)
                tw.write(data, **page)
        os.replace(partial, dest)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return ExportReport(dest, kind, compression, tuple((a.shape[1], a.shape[2]) for a in src.levels),
                        str(dtype), os.path.getsize(dest))
