"""What a TIFF family file says about its pixels: an SVS slide's pixel size and objective
power, an OME-TIFF's OME-XML, a GeoTIFF's geo-referencing, and the band names and nodata
value GDAL keeps in its own tags; the resolution tags of a plain TIFF."""

from __future__ import annotations

import math
import re
from typing import Any
from xml.etree import ElementTree


def _tiff_metadata(tf: Any, page: Any) -> tuple[dict[str, Any], str]:
    meta: dict[str, Any] = {}
    fmt = "tiff"
    desc = page.description or ""
    if tf.is_svs:
        fmt = "svs"
        mpp = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
        mag = re.search(r"AppMag\s*=\s*([0-9.]+)", desc)
        # A vendor's description may hold anything: numbers that do not read are left out.
        if mpp and _positive(mpp.group(1)):
            meta["mpp"] = [_positive(mpp.group(1))] * 2
        if mag and _positive(mag.group(1)):
            meta["objective_power"] = _positive(mag.group(1))
    elif tf.is_ome and tf.ome_metadata:
        fmt = "ome-tiff"
        meta.update(_ome_xml_metadata(tf.ome_metadata))
    geo = page.geotiff_tags
    if geo:
        fmt = "geotiff"
        meta.update(_geo_metadata(geo))
        keys = {name: page.tags[code].value for code, name in _GEOKEY_TAGS.items() if code in page.tags}
        if "GeoKeyDirectoryTag" in keys:
            meta["geokeys"] = {k: (v if isinstance(v, str) else [float(x) if k == "GeoDoubleParamsTag"
                                                                  else int(x) for x in v])
                               for k, v in keys.items()}
    names = _gdal_band_names(page, int(page.samplesperpixel))
    if names and "channel_names" not in meta:
        meta["channel_names"] = names
    # GDAL writes its nodata tag into plain TIFFs too.
    nodata = page.tags.get("GDAL_NODATA")
    if nodata is not None:
        try:
            meta["nodata"] = float(str(nodata.value).strip("\x00 "))
        except ValueError:
            pass
    if "mpp" not in meta and fmt == "tiff":
        unit = page.tags.get("ResolutionUnit")
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        per = {2: 25400.0, 3: 10000.0}.get(int(unit.value) if unit else 0)
        if per and xres and yres and xres.value[0] and yres.value[0]:
            mx = per * xres.value[1] / xres.value[0]
            my = per * yres.value[1] / yres.value[0]
            meta["mpp"] = [my, mx]
    return meta, fmt


def _positive(text: Any) -> float | None:
    """``text`` as a positive finite number, or None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _ome_xml_metadata(xml: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return meta
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return meta
    to_um = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
    sx, sy = _positive(pixels.get("PhysicalSizeX")), _positive(pixels.get("PhysicalSizeY"))
    if sx and sy:
        fx = to_um.get(pixels.get("PhysicalSizeXUnit", "µm"), 1.0)
        fy = to_um.get(pixels.get("PhysicalSizeYUnit", "µm"), 1.0)
        meta["mpp"] = [sy * fy, sx * fx]
    objective = next((el for el in root.iter() if el.tag.split("}")[-1] == "Objective"
                      and _positive(el.get("NominalMagnification"))), None)
    if objective is not None:
        meta["objective_power"] = _positive(objective.get("NominalMagnification"))
    names = [el.get("Name") for el in pixels if el.tag.endswith("Channel")]
    if names and all(names):
        meta["channel_names"] = names
    return meta


def _gdal_band_names(page: Any, bands: int) -> list[str] | None:
    """The band descriptions GDAL keeps in its metadata tag (``<Item name="DESCRIPTION"
    sample="0" role="description">Blue</Item>``), where every band has one."""
    tag = page.tags.get(42112)  # GDAL_METADATA
    if tag is None:
        return None
    try:
        root = ElementTree.fromstring(str(tag.value).strip("\x00 "))
    except ElementTree.ParseError:
        return None
    found = {int(item.get("sample", -1)): (item.text or "").strip() for item in root.iter("Item")
             if item.get("role") == "description" and (item.get("sample") or "").isdigit()}
    names = [found.get(i, "") for i in range(bands)]
    return names if bands > 0 and all(names) else None


_GEOKEY_TAGS = {34735: "GeoKeyDirectoryTag", 34736: "GeoDoubleParamsTag", 34737: "GeoAsciiParamsTag"}


def _geo_metadata(geo: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raster_type = geo.get("GTRasterTypeGeoKey")
    if raster_type is not None and int(raster_type) in (1, 2):
        meta["raster_type"] = int(raster_type)
    if geo.get("ProjLinearUnitsGeoKey") is not None and int(geo["ProjLinearUnitsGeoKey"]) == 9001:
        meta["linear_unit"] = "meter"
    for key in ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey"):
        code = geo.get(key)
        if code is not None and int(code) not in (0, 32767):
            meta["crs"] = f"EPSG:{int(code)}"
            break
    if "GTCitationGeoKey" in geo:
        meta["crs_name"] = str(geo["GTCitationGeoKey"])
    scale = geo.get("ModelPixelScale")
    tie = geo.get("ModelTiepoint")
    if scale is not None:
        meta["pixel_size"] = [float(scale[1]), float(scale[0])]
    if tie is not None and len(tie) >= 6:
        # Raster point (i, j) maps to model point (x, y); record the model origin.
        meta["origin"] = [float(tie[3] - tie[0] * (scale[0] if scale is not None else 0)),
                          float(tie[4] + tie[1] * (scale[1] if scale is not None else 0))]
    return meta
