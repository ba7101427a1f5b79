"""Esri cache configuration files: ``conf.xml`` (the tiling scheme and tile format of a
Compact Cache) and ``conf.cdi`` (its data extent), read and written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pyproj

from tiledelta.errors import CacheError, SchemeError
from tiledelta.grid.esri import (
    BUNDLE_PACKET,
    ESRI_NS,
    esri_tile_format,
    tile_format,
)
from tiledelta.grid.schemes import crs_from_spatial_reference
from tiledelta.grid.tiles import LOD, Bounds, TilingScheme, is_web_mercator, web_mercator


def _crs_for(wkid: int | None, latest: int | None, wkt: str | None) -> str:
    """A pyproj-usable CRS string, by the same rules as tileInfo and root.json."""
    sr: dict[str, Any] = {
        k: v for k, v in (("wkid", wkid), ("latestWkid", latest), ("wkt", wkt)) if v
    }
    try:
        return crs_from_spatial_reference(sr)[0]
    except SchemeError as exc:
        raise CacheError(f"spatial reference: {exc}") from None


def scheme_from_parts(
    *,
    name: str | None,
    wkid: int | None,
    latest_wkid: int | None,
    wkt: str | None,
    origin: tuple[float, float],
    size: tuple[int, int],
    dpi: int,
    lods: Iterable[LOD],
) -> TilingScheme:
    """Build a :class:`TilingScheme` from Esri tiling facts (shared by conf.xml and root.json)."""
    try:
        scheme = TilingScheme(
            name=name or "custom",
            crs=_crs_for(wkid, latest_wkid, wkt),
            wkid=wkid,
            latest_wkid=latest_wkid,
            origin_x=origin[0],
            origin_y=origin[1],
            tile_width=size[0],
            tile_height=size[1],
            dpi=dpi,
            lods=tuple(sorted(lods, key=lambda lod: lod.level)),
        )
    except SchemeError as exc:
        raise CacheError(f"invalid tiling scheme: {exc}") from exc
    if is_web_mercator(scheme):
        wm = web_mercator()
        scheme = scheme.model_copy(update={"extent": wm.extent, "name": name or wm.name})
    return scheme


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def scheme_to_conf_xml(scheme: TilingScheme, fmt: str = "png", quality: int = 75) -> str:
    """conf.xml text (Compact Cache V2) for ``scheme`` with tile format ``fmt``."""
    crs = pyproj.CRS.from_user_input(scheme.crs)
    wkt = crs.to_wkt("WKT1_ESRI") or crs.to_wkt()
    wkid = scheme.wkid if scheme.wkid is not None else crs.to_epsg()
    sr_type = "ProjectedCoordinateSystem" if crs.is_projected else "GeographicCoordinateSystem"
    ids = ""
    if wkid is not None:
        ids += f"\n      <WKID>{wkid}</WKID>"
    if scheme.latest_wkid is not None:
        ids += f"\n      <LatestWKID>{scheme.latest_wkid}</LatestWKID>"
    lods = "".join(
        f"""
      <LODInfo xsi:type="typens:LODInfo">
        <LevelID>{lod.level}</LevelID>
        <Scale>{_num(lod.scale)}</Scale>
        <Resolution>{_num(lod.resolution)}</Resolution>
      </LODInfo>"""
        for lod in sorted(scheme.lods, key=lambda lod: lod.level)
    )
    tf = tile_format(fmt)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<CacheInfo xsi:type="typens:CacheInfo" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:typens="{ESRI_NS}">
  <TileCacheInfo xsi:type="typens:TileCacheInfo">
    <SpatialReference xsi:type="typens:{sr_type}">
      <WKT>{escape(wkt)}</WKT>{ids}
    </SpatialReference>
    <TileOrigin xsi:type="typens:PointN">
      <X>{_num(scheme.origin_x)}</X>
      <Y>{_num(scheme.origin_y)}</Y>
    </TileOrigin>
    <TileCols>{scheme.tile_width}</TileCols>
    <TileRows>{scheme.tile_height}</TileRows>
    <DPI>{scheme.dpi}</DPI>
    <LODInfos xsi:type="typens:ArrayOfLODInfo">{lods}
    </LODInfos>
  </TileCacheInfo>
  <TileImageInfo xsi:type="typens:TileImageInfo">
    <CacheTileFormat>{tf.esri}</CacheTileFormat>
    <CompressionQuality>{int(quality)}</CompressionQuality>
    <Antialiasing>false</Antialiasing>
  </TileImageInfo>
  <CacheStorageInfo xsi:type="typens:CacheStorageInfo">
    <StorageFormat>esriMapCacheStorageModeCompactV2</StorageFormat>
    <PacketSize>{BUNDLE_PACKET}</PacketSize>
  </CacheStorageInfo>
</CacheInfo>
"""


def conf_cdi_xml(bounds: Bounds) -> str:
    """conf.cdi text: the cache's data extent as an Esri EnvelopeN."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<EnvelopeN xsi:type="typens:EnvelopeN" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:typens="{ESRI_NS}">
  <XMin>{_num(bounds.xmin)}</XMin>
  <YMin>{_num(bounds.ymin)}</YMin>
  <XMax>{_num(bounds.xmax)}</XMax>
  <YMax>{_num(bounds.ymax)}</YMax>
</EnvelopeN>
"""


def _xml_root(text_or_path: str | Path, what: str) -> tuple[ET.Element, str]:
    if isinstance(text_or_path, Path) or not text_or_path.lstrip().startswith("<"):
        src = str(text_or_path)
        try:
            text = Path(text_or_path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CacheError(f"cannot read {what} {src}: {exc.strerror}") from exc
    else:
        src, text = what, text_or_path
    try:
        return ET.fromstring(text.lstrip()), src
    except ET.ParseError as exc:
        raise CacheError(f"{src}: not valid XML ({exc})") from exc


def _text(elem: ET.Element, path: str, src: str, default: str | None = None) -> str:
    node = elem.find(path)
    if node is None or node.text is None or not node.text.strip():
        if default is not None:
            return default
        raise CacheError(f"{src}: missing {path.replace('{*}', '')}")
    return node.text.strip()


def _opt_int(elem: ET.Element, path: str) -> int | None:
    node = elem.find(path)
    if node is None or not (node.text or "").strip():
        return None
    return int(float(node.text.strip()))  # type: ignore[union-attr]


def conf_tile_format(text_or_path: str | Path) -> tuple[str, int]:
    """(tiledelta format name, compression quality) from conf.xml's TileImageInfo."""
    root, src = _xml_root(text_or_path, "conf.xml")
    esri = _text(root, "{*}TileImageInfo/{*}CacheTileFormat", src, "PNG").upper()
    quality = _text(root, "{*}TileImageInfo/{*}CompressionQuality", src, "75")
    return esri_tile_format(esri), int(float(quality))


def scheme_from_conf_xml(text_or_path: str | Path, name: str | None = None) -> TilingScheme:
    """The tiling scheme of a conf.xml (text, or a path to it).

    The CRS is ``EPSG:<LatestWKID or WKID>`` when pyproj knows it (102100 →
    EPSG:3857), else the WKT. The name defaults to "web-mercator" for that
    grid and "custom" otherwise.
    """
    root, src = _xml_root(text_or_path, "conf.xml")
    if root.tag.rsplit("}", 1)[-1] != "CacheInfo":
        raise CacheError(f"{src}: not an Esri cache configuration (no CacheInfo)")
    tci = root.find("{*}TileCacheInfo")
    if tci is None:
        raise CacheError(f"{src}: missing TileCacheInfo")
    sr = tci.find("{*}SpatialReference")
    wkid = latest = None
    wkt = None
    if sr is not None:
        wkid = _opt_int(sr, "{*}WKID")
        latest = _opt_int(sr, "{*}LatestWKID")
        wkt_node = sr.find("{*}WKT")
        wkt = wkt_node.text.strip() if wkt_node is not None and wkt_node.text else None
    lods = []
    for info in tci.findall("{*}LODInfos/{*}LODInfo"):
        try:
            lods.append(
                LOD(
                    level=int(_text(info, "{*}LevelID", src)),
                    scale=float(_text(info, "{*}Scale", src)),
                    resolution=float(_text(info, "{*}Resolution", src)),
                )
            )
        except ValueError as exc:
            raise CacheError(f"{src}: bad LODInfo ({exc})") from exc
    if not lods:
        raise CacheError(
            f"{src}: no levels (TileCacheInfo/LODInfos has no LODInfo); "
            "list the levels of detail in the file"
        )
    try:
        origin = (
            float(_text(tci, "{*}TileOrigin/{*}X", src)),
            float(_text(tci, "{*}TileOrigin/{*}Y", src)),
        )
        size = (
            int(_text(tci, "{*}TileCols", src, "256")),
            int(_text(tci, "{*}TileRows", src, "256")),
        )
        dpi = int(float(_text(tci, "{*}DPI", src, "96")))
    except ValueError as exc:
        raise CacheError(f"{src}: bad tiling value ({exc})") from exc
    return scheme_from_parts(
        name=name, wkid=wkid, latest_wkid=latest, wkt=wkt, origin=origin, size=size,
        dpi=dpi, lods=lods,
    )  # fmt: skip


def read_conf_cdi(text_or_path: str | Path) -> Bounds:
    """The extent in a conf.cdi (EnvelopeN)."""
    root, src = _xml_root(text_or_path, "conf.cdi")
    try:
        keys = ("XMin", "YMin", "XMax", "YMax")
        return Bounds(*(float(_text(root, f"{{*}}{k}", src)) for k in keys))
    except ValueError as exc:
        raise CacheError(f"{src}: bad envelope ({exc})") from exc
