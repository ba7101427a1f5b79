"""Reading, writing and choosing tiling schemes.

Converts between :class:`~tiledelta.grid.TilingScheme` and the JSON shapes
ArcGIS uses for them: the ``tileInfo`` object of a MapServer ``?f=json``
document, and a tile package's ``root.json``. Compact Cache ``conf.xml`` is
handled by :mod:`tiledelta.grid.conf_xml`; :func:`load_scheme` reads all of them.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from tiledelta.errors import SchemeError
from tiledelta.grid.esri import (
    BUNDLE_PACKET,
    ESRI_FORMATS,
    WEB_MERCATOR_WKIDS,
    esri_units,
    inches_per_unit,
)
from tiledelta.grid.tiles import LOD, Bounds, TilingScheme

# --------------------------------------------------------------------------- CRS


def crs_from_spatial_reference(sr: dict[str, Any]) -> tuple[str, int | None, int | None]:
    """``(crs, wkid, latest_wkid)`` for an Esri ``spatialReference`` object.

    ``crs`` is a string pyproj accepts: ``"EPSG:n"``, ``"ESRI:n"`` or the WKT
    given in the object. Esri's Web Mercator ids (102100, 102113) map to
    ``"EPSG:3857"``.
    """
    if not isinstance(sr, dict):
        raise SchemeError("spatialReference must be a JSON object with a wkid or wkt")
    wkid = _opt_int(sr.get("wkid"), "spatialReference.wkid")
    latest = _opt_int(sr.get("latestWkid"), "spatialReference.latestWkid")
    wkt = sr.get("wkt") or sr.get("wkt2")
    if wkid is None and latest is not None:
        wkid = latest
    if wkid in WEB_MERCATOR_WKIDS:
        return "EPSG:3857", wkid, latest if latest is not None else 3857
    for code in (latest, wkid):
        if code is None:
            continue
        for authority in ("EPSG", "ESRI"):
            name = f"{authority}:{code}"
            if _crs_ok(name):
                return name, wkid, latest
    if isinstance(wkt, str) and wkt.strip():
        if not _crs_ok(wkt):
            raise SchemeError("spatialReference.wkt is not a coordinate system pyproj can read")
        return wkt, wkid, latest
    if wkid is None:
        raise SchemeError("spatialReference has neither a wkid nor a wkt")
    raise SchemeError(
        f"unknown spatial reference wkid {wkid}: give the CRS as WKT "
        "(spatialReference.wkt) or use a wkid known to EPSG/ESRI"
    )


@lru_cache(maxsize=64)
def _crs_ok(text: str) -> bool:
    try:
        CRS.from_user_input(text)
    except CRSError:
        return False
    return True


@lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise SchemeError(f"tiling scheme CRS is not readable by pyproj: {exc}") from None


@lru_cache(maxsize=64)
def _meters_per_unit(crs_text: str) -> float:
    crs = _crs(crs_text)
    if crs.is_geographic:
        # Esri's convention for degree-based caches: one degree of the equator.
        return crs.ellipsoid.semi_major_metre * math.pi / 180 if crs.ellipsoid else 111319.49079
    axes = crs.axis_info
    if not axes or not axes[0].unit_conversion_factor:
        raise SchemeError(f"cannot tell the axis unit of the CRS {crs.name}")
    return float(axes[0].unit_conversion_factor)


def scheme_meters_per_unit(scheme: TilingScheme) -> float:
    """Metres per map unit of ``scheme`` (1, 0.3048 for ft, 1200/3937 for US survey ft)."""
    return _meters_per_unit(scheme.crs)


@lru_cache(maxsize=64)
def _inches_per_unit(crs_text: str) -> float:
    return inches_per_unit(_meters_per_unit(crs_text))


def scheme_inches_per_unit(scheme: TilingScheme) -> float:
    """Inches per map unit as ArcGIS counts them (39.37 per metre, 12 per foot).

    ArcGIS relates scale and resolution by ``scale = resolution * dpi *
    inches_per_unit``; its Web Mercator scales follow from 39.37 in/m, not
    1/0.0254 (which is 2 ppm larger).
    """
    return _inches_per_unit(scheme.crs)


def _spatial_reference(scheme: TilingScheme) -> dict[str, Any]:
    wkid, latest = scheme.wkid, scheme.latest_wkid
    if wkid is None:
        m = re.fullmatch(r"\s*(?:EPSG|ESRI):(\d+)\s*", scheme.crs, re.IGNORECASE)
        if m:
            wkid = int(m.group(1))
    if wkid is None:
        return {"wkt": _crs(scheme.crs).to_wkt(version="WKT1_ESRI")}
    sr: dict[str, Any] = {"wkid": wkid}
    if latest is not None:
        sr["latestWkid"] = latest
    return sr


# --------------------------------------------------------------------- tileInfo


def scheme_from_tile_info(
    info: dict[str, Any], *, name: str = "custom", extent: Bounds | None = None
) -> TilingScheme:
    """Build a scheme from an ArcGIS ``tileInfo`` object.

    ``info`` may also be a whole MapServer ``?f=json`` document or a tile
    package ``root.json`` (both hold ``tileInfo``); then ``fullExtent``
    becomes the scheme extent unless ``extent`` is given.
    """
    if not isinstance(info, dict):
        raise SchemeError("tiling scheme JSON must be an object")
    doc: dict[str, Any] | None = None
    if "tileInfo" in info:
        doc, info = info, info["tileInfo"]
        if not isinstance(info, dict):
            raise SchemeError("tileInfo must be a JSON object (is the service cached?)")
    missing = [k for k in ("rows", "cols", "origin", "lods") if k not in info]
    if missing:
        raise SchemeError(f"tileInfo lacks {', '.join(missing)}")
    sr = info.get("spatialReference") or (doc or {}).get("spatialReference")
    if not sr:
        raise SchemeError("tileInfo has no spatialReference")
    crs, wkid, latest = crs_from_spatial_reference(sr)
    origin = info["origin"]
    if not isinstance(origin, dict) or "x" not in origin or "y" not in origin:
        raise SchemeError("tileInfo.origin must be an object with x and y")
    dpi = _num(info.get("dpi", 96), "tileInfo.dpi")
    lods = _lods(info["lods"], crs, dpi)
    if extent is None and doc is not None and isinstance(doc.get("fullExtent"), dict):
        extent = _extent_in(doc["fullExtent"], crs, wkid)
    try:
        return TilingScheme(
            name=name,
            crs=crs,
            wkid=wkid,
            latest_wkid=latest,
            origin_x=_num(origin["x"], "tileInfo.origin.x"),
            origin_y=_num(origin["y"], "tileInfo.origin.y"),
            tile_width=int(_num(info["cols"], "tileInfo.cols")),
            tile_height=int(_num(info["rows"], "tileInfo.rows")),
            dpi=round(dpi),
            lods=lods,
            extent=extent,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SchemeError(f"invalid tiling scheme: {where}: {first['msg']}") from None


def _lods(raw: Any, crs: str, dpi: float) -> tuple[LOD, ...]:
    if not isinstance(raw, list) or not raw:
        raise SchemeError("tileInfo.lods must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "level" not in item:
            raise SchemeError(f"tileInfo.lods[{i}] must be an object with a level")
        level = int(_num(item["level"], f"tileInfo.lods[{i}].level"))
        res = item.get("resolution")
        scale = item.get("scale")
        if res is None and scale is None:
            raise SchemeError(f"tileInfo.lods[{i}] has neither resolution nor scale")
        if res is None:
            res = _num(scale, f"tileInfo.lods[{i}].scale") / (dpi * _inches_per_unit(crs))
        if scale is None:
            scale = _num(res, f"tileInfo.lods[{i}].resolution") * dpi * _inches_per_unit(crs)
        out.append(
            LOD(
                level=level,
                scale=_num(scale, f"tileInfo.lods[{i}].scale"),
                resolution=_num(res, f"tileInfo.lods[{i}].resolution"),
            )
        )
    return tuple(sorted(out, key=lambda lod: lod.level))


def _extent_in(env: dict[str, Any], crs: str, wkid: int | None) -> Bounds | None:
    """An Esri envelope as Bounds in ``crs``, reprojecting if it names another CRS."""
    try:
        box = Bounds(*(_num(env[k], f"fullExtent.{k}") for k in ("xmin", "ymin", "xmax", "ymax")))
    except (KeyError, SchemeError):  # absent or "NaN" (an empty service): no extent
        return None
    if not all(math.isfinite(v) for v in box) or box.xmin >= box.xmax or box.ymin >= box.ymax:
        return None
    sr = env.get("spatialReference")
    if not sr:
        return box
    env_crs, env_wkid, _ = crs_from_spatial_reference(sr)
    if env_crs == crs or (wkid is not None and env_wkid == wkid) or _crs(env_crs) == _crs(crs):
        return box
    tr = Transformer.from_crs(_crs(env_crs), _crs(crs), always_xy=True)
    return Bounds(*tr.transform_bounds(*box, densify_pts=21))


def scheme_to_tile_info(scheme: TilingScheme) -> dict[str, Any]:
    """The ArcGIS ``tileInfo`` object for ``scheme`` (inverse of :func:`scheme_from_tile_info`)."""
    return {
        "rows": scheme.tile_height,
        "cols": scheme.tile_width,
        "dpi": scheme.dpi,
        "origin": {"x": scheme.origin_x, "y": scheme.origin_y},
        "spatialReference": _spatial_reference(scheme),
        "lods": [
            {"level": lod.level, "resolution": lod.resolution, "scale": lod.scale}
            for lod in scheme.lods
        ],
    }


def scheme_to_root_json(
    scheme: TilingScheme,
    *,
    name: str,
    fmt: str = "PNG",
    quality: int = 75,
    extent: Bounds | None = None,
    min_level: int | None = None,
    max_level: int | None = None,
    antialiasing: bool = True,
) -> dict[str, Any]:
    """A tile package (.tpkx) ``root.json`` for ``scheme`` (Esri tile-package-spec 1.0).

    ``extent`` defaults to the scheme extent; ``min_level``/``max_level`` to
    the scheme's first and last level. ``quality`` is written only for JPEG
    and MIXED (PNG formats get 0, as the spec asks).
    """
    fmt_u = fmt.upper()
    if fmt_u not in ESRI_FORMATS:
        raise SchemeError(f"tile format {fmt!r} is not one of {', '.join(ESRI_FORMATS)}")
    if not 0 <= quality <= 100:
        raise SchemeError(f"compression quality {quality} must be between 0 and 100")
    lo = scheme.levels[0] if min_level is None else min_level
    hi = scheme.levels[-1] if max_level is None else max_level
    if lo > hi:
        raise SchemeError(f"min level {lo} is above max level {hi}")
    min_scale, max_scale = scheme.lod(lo).scale, scheme.lod(hi).scale
    box = extent or scheme.extent
    if box is None:
        raise SchemeError(
            f"scheme {scheme.name} has no extent: give the extent of the tiles for root.json"
        )
    sr = _spatial_reference(scheme)
    envelope = {
        "xmin": box.xmin,
        "ymin": box.ymin,
        "xmax": box.xmax,
        "ymax": box.ymax,
        "spatialReference": sr,
    }
    return {
        "name": name,
        "version": 1.0,
        "serviceDescription": "",
        "tileBundlesPath": "./tile",
        "spatialReference": sr,
        "units": esri_units(scheme_meters_per_unit(scheme), _crs(scheme.crs).is_geographic),
        "minLOD": lo,
        "maxLOD": hi,
        "minScale": min_scale,
        "maxScale": max_scale,
        "resampling": False,
        "initialExtent": dict(envelope),
        "fullExtent": dict(envelope),
        "tileInfo": scheme_to_tile_info(scheme),
        "storageInfo": {
            "storageFormat": "esriMapCacheStorageModeCompactV2",
            "packetSize": BUNDLE_PACKET,
        },
        "tileImageInfo": {
            "format": fmt_u,
            "compressionQuality": quality if fmt_u in ("JPEG", "MIXED") else 0,
            "antialiasing": antialiasing,
        },
    }


# ---------------------------------------------------------------- select_levels

_LEVEL_PART = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def select_levels(scheme: TilingScheme, spec: str | None) -> list[int]:
    """Level ids chosen by ``spec`` ("0-19", "5", "0-3,7,9-10"); all levels when None."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return scheme.levels
    chosen: set[int] = set()
    for part in spec.split(","):
        m = _LEVEL_PART.fullmatch(part)
        if not m:
            raise SchemeError(f"bad level list {spec!r}: use e.g. 0-19, 5 or 0-3,7,9-10")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo > hi:
            raise SchemeError(f"bad level range {part.strip()!r} in {spec!r}: write it low-high")
        chosen.update(range(lo, hi + 1))
    outside = sorted(chosen - set(scheme.levels))
    if outside:
        word = "level" if len(outside) == 1 else "levels"
        verb = "is" if len(outside) == 1 else "are"
        raise SchemeError(
            f"{word} {_ranges(outside)} {verb} outside the scheme {scheme.name} "
            f"(levels {_ranges(scheme.levels)})"
        )
    return sorted(chosen)


def _ranges(values: list[int]) -> str:
    """Compress sorted ints: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


# ------------------------------------------------------------------------ utils


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SchemeError(f"{what} must be a number, not {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SchemeError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(out):
        raise SchemeError(f"{what} must be finite, not {value!r}")
    return out


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    num = _num(value, what)
    if num != int(num):
        raise SchemeError(f"{what} must be an integer, not {value!r}")
    return int(num)
