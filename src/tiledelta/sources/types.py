"""What every reader gives (:class:`RawLayer`) and what the pipeline uses (:class:`LayerData`).

:func:`layer_data` is the one code path from a reader's rows to the layer as the renderer
sees it: empty geometries dropped, reprojected to the scheme CRS, boxed and fingerprinted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import pyproj
import shapely

from tiledelta.errors import SourceError
from tiledelta.grid import Bounds
from tiledelta.style import LayerSource

log = logging.getLogger(__name__)


#: The hash of a dataset's files (``sources.files``): SHA-256, which CPUs with SHA
#: instructions (most x86-64 and ARMv8 since ~2017) compute faster than BLAKE2b.
HASH = "sha256"


@dataclass(frozen=True)
class FileState:
    """One file of a dataset when it was hashed."""

    path: str
    size: int
    mtime_ns: int
    digest: str
    ctime_ns: int = 0
    ino: int = 0

    def stat_key(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino)


@dataclass(frozen=True)
class LayerInputs:
    """What a layer was read from: its read signature and every file's state."""

    signature: str  # sha256 of how the layer is read (see read_signature)
    files: tuple[FileState, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "signature": self.signature,
                "hash": HASH,
                "files": [[f.path, f.size, f.mtime_ns, f.digest] for f in self.files],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LayerInputs | None:
        """The recorded inputs, or None when they were written another way."""
        try:
            d = json.loads(text)
            if d.get("hash") != HASH:
                return None
            files = tuple(FileState(str(p), int(s), int(m), str(h)) for p, s, m, h in d["files"])
            return cls(str(d["signature"]), files)
        except (ValueError, TypeError, KeyError):
            return None


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
    #: keys of the rows read with no geometry (left out above; see ``change.diff``)
    null_keys: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    #: GDAL feature ids of the rows (file readers; None otherwise): a build from before a
    #: key was set matched rows by them (``change.detect``)
    fids: np.ndarray | None = None
    #: what the layer was read from (file-backed layers; ``sources.files``): recorded with
    #: the snapshot, it lets the next detection skip the layer while its files are the same
    inputs: LayerInputs | None = None

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
    fids: np.ndarray | None = None  # GDAL feature ids of the rows (file readers)


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


def _transformer(
    src_crs: str | None, src: LayerSource, target: pyproj.CRS, label: str
) -> tuple[pyproj.Transformer | None, pyproj.CRS]:
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
        return None, crs
    return pyproj.Transformer.from_crs(crs, target, always_xy=True), crs


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


#: Longest text value (label, filter field) kept; longer ones are cut, with a warning.
MAX_TEXT_CHARS = 1000
#: Largest |x| / |y| of coordinates in degrees (longitudes may run past ±180, never past ±360).
MAX_LON, MAX_LAT = 360.0, 90.0


def _check_coordinates(src: LayerSource, raw: RawLayer, shp: np.ndarray, crs: pyproj.CRS) -> None:
    """:class:`SourceError` naming the layer, its file and its CRS when a coordinate of the
    data is NaN or infinite, or (a geographic ``crs``) not degrees: metres in a layer
    declared WGS 84."""
    if not len(shp):
        return
    if not np.isfinite(shapely.get_coordinates(shp)).all():
        xy, index = shapely.get_coordinates(shp, return_index=True)
        bad = ~np.isfinite(xy).all(axis=1)
        i = int(index[np.argmax(bad)])
        raise SourceError(
            f"layer {src.name!r}: {raw.label} has a NaN or infinite coordinate in the data "
            f"(feature {raw_key(raw, i)!r}, {int(bad.sum())} coordinate(s) in all; layer CRS "
            f"{_crs_name(crs)}); fix the data or the layer's CRS"
        )
    if crs.is_geographic:
        b = shapely.bounds(shp)  # exact: every coordinate is finite by now
        off = (np.abs(b[:, [0, 2]]) > MAX_LON).any(axis=1) | (np.abs(b[:, [1, 3]]) > MAX_LAT).any(
            axis=1
        )
        if off.any():
            i = int(np.argmax(off))
            x, y = b[i, 0], b[i, 1]
            raise SourceError(
                f"layer {src.name!r}: {raw.label} has coordinates such as ({x:.6g}, {y:.6g}) "
                f"(feature {raw_key(raw, i)!r}) that are not degrees, yet the layer's CRS is "
                f"{_crs_name(crs)}; fix the .prj or the layer's srs"
            )


def _crs_name(crs: pyproj.CRS) -> str:
    auth = crs.to_authority()
    return f"{crs.name} ({':'.join(auth)})" if auth else crs.name


def raw_key(raw: RawLayer, i: int) -> object:
    """The key (or feature id) of the ``i``-th row kept, for messages."""
    v = raw.ids[i] if i < len(raw.ids) else i
    return v.item() if isinstance(v, np.generic) else v


def _check_extent(
    src: LayerSource, raw: RawLayer, bounds: np.ndarray, valid: Bounds, crs_name: str
) -> None:
    """:class:`SourceError` when a feature's box lies outside the scheme's extent: it can
    be drawn in no tile, which means the data's CRS is wrong."""
    if not len(bounds):
        return
    out = (
        (bounds[:, 2] < valid.xmin)
        | (bounds[:, 0] > valid.xmax)
        | (bounds[:, 3] < valid.ymin)
        | (bounds[:, 1] > valid.ymax)
    )
    if out.any():
        i = int(np.argmax(out))
        raise SourceError(
            f"layer {src.name!r}: {int(out.sum())} feature(s) of {raw.label} (such as "
            f"{raw_key(raw, i)!r}) lie outside the tiling scheme's extent once projected from "
            f"{crs_name}; check the layer's CRS (.prj or srs)"
        )


def _cap_text(layer: str, attr: str, values: list, keys: np.ndarray) -> None:
    """Cut text values longer than :data:`MAX_TEXT_CHARS` in place, with one warning: a
    label of megabytes makes Mapnik's text layout run for ever or fail (``std::bad_alloc``),
    and no map shows more than a few words of one."""
    long = [i for i, v in enumerate(values) if isinstance(v, str) and len(v) > MAX_TEXT_CHARS]
    if not long:
        return
    longest = max(len(values[i]) for i in long)
    for i in long:
        values[i] = values[i][:MAX_TEXT_CHARS]
    log.warning(
        "layer %r: %d value(s) of field %r are longer than %d characters (up to %d, e.g. "
        "feature %r); drawn and compared cut to %d",
        layer,
        len(long),
        attr,
        MAX_TEXT_CHARS,
        longest,
        keys[long[0]].item() if isinstance(keys[long[0]], np.generic) else keys[long[0]],
        MAX_TEXT_CHARS,
    )


def layer_data(
    src: LayerSource, raw: RawLayer, target_crs: str, valid: Bounds | None = None
) -> LayerData:
    """Drop empty geometries, reproject, box and fingerprint: the same for every reader.

    :class:`SourceError` for a NaN or infinite coordinate (before or after reprojection),
    coordinates that cannot be degrees in a geographic CRS, and features outside ``valid``
    (the scheme's extent) once reprojected.
    """
    geoms = raw.wkb
    keep = np.array([g is not None and len(g) > 0 for g in geoms], dtype=bool)
    shp = shapely.from_wkb(geoms[keep]) if keep.any() else np.array([], dtype=object)
    nonempty = ~shapely.is_empty(shp) if len(shp) else np.array([], dtype=bool)
    idx = np.flatnonzero(keep)[nonempty]
    null_idx = np.setdiff1d(np.arange(len(geoms)), idx)
    shp = shp[nonempty]
    src_wkb = geoms[idx]
    kept = RawLayer(raw.wkb, raw.fields, np.asarray(raw.ids)[idx], raw.crs, raw.label)

    target = pyproj.CRS.from_user_input(target_crs)
    tr, crs = _transformer(raw.crs, src, target, raw.label)
    _check_coordinates(src, kept, shp, crs)
    if tr is not None and len(shp):
        with np.errstate(all="ignore"):
            shp = shapely.transform(
                shp, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
            )
    bounds = shapely.bounds(shp) if len(shp) else np.zeros((0, 4))
    if tr is not None and len(shp):
        # PROJ answers inf where it cannot project, which the boxes show.
        bad = ~np.isfinite(bounds).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise SourceError(
                f"layer {src.name!r}: {raw.label} has a NaN or infinite coordinate once "
                f"projected to {target.name} (feature {raw_key(kept, i)!r}, {int(bad.sum())} "
                f"feature(s) in all; layer CRS {_crs_name(crs)}); fix the data or the layer's CRS"
            )
        wkb = np.asarray(shapely.to_wkb(shp), dtype=object)
    else:
        wkb = src_wkb
    if valid is not None:
        _check_extent(src, kept, bounds, valid, _crs_name(crs))

    attrs = {
        a: [_value(v) for v in np.asarray(col, dtype=object)[idx]] for a, col in raw.fields.items()
    }
    keys = np.asarray(raw.ids)[idx]
    for a, values in attrs.items():
        _cap_text(src.name, a, values, keys)
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
        null_keys=np.asarray(raw.ids)[null_idx],
        fids=None if raw.fids is None else np.asarray(raw.fids)[idx],
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
