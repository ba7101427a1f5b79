"""What every reader gives (:class:`RawLayer`) and what the pipeline uses (:class:`LayerData`).

:func:`layer_data` is the one code path from a reader's rows to the layer as the renderer
sees it: empty geometries dropped, reprojected to the scheme CRS, boxed and fingerprinted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import pyproj
import shapely

from tiledelta.errors import SourceError
from tiledelta.grid import Bounds
from tiledelta.style import LayerSource


@dataclass
class LayerData:
    """One layer's features, as the renderer sees them, in scheme CRS."""

    name: str
    keys: np.ndarray  # key field values, or feature ids
    wkb: np.ndarray  # object array of WKB bytes (scheme CRS)
    bounds: np.ndarray  # (n, 4) float64 xmin, ymin, xmax, ymax
    attrs: dict[str, list]  # attribute name -> python values, only those the style uses
    fingerprints: np.ndarray  # (n,) uint64 hash of geometry + used attributes
    keyed: bool = False  # keys identify features across edits (key field, primary key)

    def __len__(self) -> int:
        return len(self.wkb)


@dataclass
class RawLayer:
    """What a reader returns, in source order and source CRS, before :func:`read_layer`
    drops empty geometries, reprojects, boxes and fingerprints."""

    wkb: np.ndarray  # object array of WKB bytes (None for no geometry)
    fields: dict[str, Any]  # attribute name -> values (array or list), the attributes wanted
    ids: np.ndarray  # key values (the key field, a primary key, or feature ids)
    crs: str | None  # the data's CRS (None: use the layer's srs)
    label: str  # what to call the data in messages (never holds a password)
    keyed: bool = False  # ids identify features across edits (not row numbers)


def require_fields(src: LayerSource, fields: list[str], key: str | None, shown: str) -> None:
    """:class:`SourceError` unless ``fields`` has every attribute the style uses and ``key``."""
    missing = [a for a in src.attributes if a not in fields]
    if missing:
        raise SourceError(
            f"layer {src.name!r}: the style uses field(s) {', '.join(missing)} that "
            f"{shown} does not have (fields: {', '.join(fields) or 'none'})"
        )
    if key and key not in fields:
        raise SourceError(
            f"layer {src.name!r}: key field {key!r} is not in {shown} "
            f"(fields: {', '.join(fields) or 'none'}); fix [layers.{src.name}] key"
        )


def _transformer(src_crs: str | None, src: LayerSource, target: pyproj.CRS, label: str):
    # As Mapnik: the <Layer srs> decides where features are; the data's own CRS (a .prj,
    # a GeoPackage's srs) is used only when the layer declares none.
    crs_text = src.srs or src_crs
    if not crs_text:
        raise SourceError(
            f"layer {src.name!r}: {label} has no coordinate system; add a .prj or set "
            'srs="epsg:NNNN" on the <Layer>'
        )
    try:
        crs = pyproj.CRS.from_user_input(crs_text)
    except pyproj.exceptions.CRSError as exc:
        raise SourceError(f"layer {src.name!r}: unknown CRS {crs_text!r} ({exc})") from exc
    if crs.equals(target, ignore_axis_order=True):
        return None
    return pyproj.Transformer.from_crs(crs, target, always_xy=True)


def _value(v):
    if v is None:
        return None
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes | memoryview):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, Decimal):  # PostgreSQL numeric
        return float(v)
    if isinstance(v, UUID):
        return str(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def layer_data(src: LayerSource, raw: RawLayer, target_crs: str) -> LayerData:
    """Drop empty geometries, reproject, box and fingerprint: the same for every reader."""
    geoms = raw.wkb
    keep = np.array([g is not None and len(g) > 0 for g in geoms], dtype=bool)
    shp = shapely.from_wkb(geoms[keep]) if keep.any() else np.array([], dtype=object)
    nonempty = ~shapely.is_empty(shp) if len(shp) else np.array([], dtype=bool)
    idx = np.flatnonzero(keep)[nonempty]
    shp = shp[nonempty]
    src_wkb = geoms[idx]

    target = pyproj.CRS.from_user_input(target_crs)
    tr = _transformer(raw.crs, src, target, raw.label)
    if tr is not None and len(shp):
        shp = shapely.transform(shp, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        wkb = np.asarray(shapely.to_wkb(shp), dtype=object)
    else:
        wkb = src_wkb
    bounds = shapely.bounds(shp) if len(shp) else np.zeros((0, 4))

    attrs = {
        a: [_value(v) for v in np.asarray(col, dtype=object)[idx]] for a, col in raw.fields.items()
    }
    keys = np.asarray(raw.ids)[idx]
    # The geometry as drawn (in the scheme CRS): a changed .prj or layer srs moves every
    # feature, so it changes every fingerprint.
    fps = fingerprints(wkb, attrs)
    return LayerData(
        name=src.name,
        keys=keys,
        wkb=wkb,
        bounds=bounds,
        attrs=attrs,
        fingerprints=fps,
        keyed=raw.keyed,
    )


def fingerprints(wkb: np.ndarray, attrs: dict[str, list]) -> np.ndarray:
    """64-bit hash per feature of its geometry and the given attribute values."""
    names = sorted(attrs)
    cols = [attrs[n] for n in names]
    out = np.empty(len(wkb), dtype=np.uint64)
    blake = hashlib.blake2b
    for i, g in enumerate(wkb):
        h = blake(g, digest_size=8)
        for c in cols:
            h.update(repr(c[i]).encode())
            h.update(b"\x1f")
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def data_extent(layers: dict[str, LayerData]) -> Bounds | None:
    """The box around every feature of every layer, or None when there are none."""
    return boxes_extent([d.bounds for d in layers.values()])


def boxes_extent(boxes: list[np.ndarray]) -> Bounds | None:
    """The box around (n, 4) arrays of boxes, or None when they hold none."""
    boxes = [np.asarray(b).reshape(-1, 4) for b in boxes if len(b)]
    if not boxes:
        return None
    b = np.concatenate(boxes)
    return Bounds(
        float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())
    )
