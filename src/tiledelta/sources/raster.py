"""Raster layers (Mapnik ``gdal`` and ``raster`` datasources), fingerprinted block by block.

Mapnik reads a raster layer's file itself (its datasource stays in the style), so what
tiledelta needs is not the pixels but *where they changed*. A raster layer becomes a
:class:`RasterLayerData` whose "features" are pixel blocks: for every file (a single
GeoTIFF/COG, or each source file of a VRT mosaic) and every overview level, one row per
block (the file's internal tiling, or fixed :data:`BLOCK` × :data:`BLOCK` windows), with

- its key ``file|o<overview>|<row>|<col>``, so blocks are matched across builds;
- its box in the scheme CRS: the block's pixel window grown by the resampling reach of the
  layer's ``RasterSymbolizer`` scaling (:data:`REACH`, in source pixels), its edges
  densified and reprojected;
- a 64-bit fingerprint of its bytes (every band), salted with the digest of the file's
  header (georeferencing, size, band count, data types, nodata, colour tables, block
  layout) and of the layer's datasource parameters, so a changed georeference, nodata or
  colour table changes every block's fingerprint and dirties the whole file's extent.

The pipeline then treats blocks like features: the diff finds changed, added and removed
blocks, the plan the meta-tiles their old and new boxes reach, and the exact filter
(``plan/exact.py``) keeps a meta-tile when the ordered fingerprints of the blocks it reaches
differ. Reading is block by block (memory does not grow with the raster).

rasterio is imported here only, lazily: vector-only projects never load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely

from tiledelta.errors import SourceError
from tiledelta.grid import Bounds
from tiledelta.sources.types import LayerData
from tiledelta.style import LayerSource

log = logging.getLogger(__name__)

#: Block size (pixels) for files that are not internally tiled (strips).
BLOCK = 512
#: GDAL's block cache while fingerprinting (MB): blocks are read once each.
GDAL_CACHE_MB = 64
#: Points per block edge when reprojecting a block's outline (its edges curve).
DENSIFY = 8
#: Source pixels a block's change can reach through Mapnik's resampling, per scaling
#: method: the filter's radius plus one pixel of Mapnik's own read-window padding
#: (measured in docs/rasters.md, "Reach").
REACH = {
    "near": 1,
    "bilinear": 2,
    "hanning": 2,
    "hamming": 2,
    "hermite": 2,
    "quadric": 3,
    "bicubic": 3,
    "spline16": 3,
    "kaiser": 3,
    "catrom": 3,
    "gaussian": 3,
    "mitchell": 3,
    "spline36": 4,
    "bessel": 5,
    "lanczos": 5,
    "sinc": 5,
    "blackman": 5,
}


@dataclass(frozen=True)
class RasterFile:
    """What the snapshot records of one physical raster file."""

    path: str  # relative to the folder of the layer's file (the VRT's, or the file's own)
    size: int
    mtime_ns: int
    meta: dict[str, Any]  # georeferencing, size, bands, nodata, colour tables, blocks
    digest: str  # of ``meta`` and the layer's datasource settings
    first: int  # index of its first block row in the layer data
    count: int  # its number of block rows


@dataclass
class RasterLayerData(LayerData):
    """A raster layer as blocks (see the module docstring); ``files`` for the snapshot."""

    files: tuple[RasterFile, ...] = field(default=())


#: Output pixels a changed source pixel reaches when Mapnik downsamples (measured up to 2.6
#: with lanczos, docs/rasters.md): the meta-tile's buffer must cover it.
OUT_REACH = 4


def check_raster_buffer(src: LayerSource, map_buffer: int) -> None:
    """:class:`SourceError` when a raster layer's buffer is below :data:`OUT_REACH`."""
    buf = map_buffer if src.buffer_size is None else src.buffer_size
    if buf < OUT_REACH:
        raise SourceError(
            f"{src.path}: raster layer {src.name!r} has a buffer of {buf} pixels; raster "
            f"layers need at least {OUT_REACH} (Mapnik's resampling reaches that far): "
            f'set buffer-size="{OUT_REACH}" on the <Layer> or [render] buffer'
        )


def reach(src: LayerSource) -> int:
    """Source pixels the layer's widest scaling method reaches (near without a symbolizer)."""
    return max((REACH.get(s, max(REACH.values())) for s in src.raster_scaling), default=1)


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as exc:  # pragma: no cover - rasterio is a core dependency
        raise SourceError(
            "raster layers need rasterio: pip install rasterio (it bundles GDAL)"
        ) from exc
    return rasterio


def _open(path: str, label: str, **kw: Any) -> Any:
    rio = _rasterio()
    try:
        return rio.open(path, **kw)
    except Exception as exc:  # rasterio's RasterioIOError and GDAL's CPLE_* errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{label}: cannot read the raster ({reason}); check the file") from None


def _layer_crs(src: LayerSource, file_crs: Any, label: str) -> pyproj.CRS:
    """The CRS Mapnik draws the layer in: the ``<Layer srs>``, as Mapnik does."""
    if src.srs:
        try:
            return pyproj.CRS.from_user_input(src.srs)
        except pyproj.exceptions.CRSError:
            raise SourceError(
                f"{label}: layer {src.name!r} has srs {src.srs!r}, which PROJ cannot find; "
                'give an EPSG code such as srs="epsg:26910"'
            ) from None
    # Mapnik's default layer srs is EPSG:4326: accept that only when the file says so.
    wgs84 = pyproj.CRS.from_epsg(4326)
    if file_crs is None:
        raise SourceError(
            f"{label}: the raster has no CRS and layer {src.name!r} no srs; add "
            'srs="epsg:NNNN" to the <Layer>'
        )
    try:
        crs = pyproj.CRS.from_user_input(file_crs.to_wkt())
    except pyproj.exceptions.CRSError:
        raise SourceError(
            f'{label}: its CRS cannot be found by PROJ; add srs="epsg:NNNN" to the <Layer>'
        ) from None
    if not crs.equals(wgs84, ignore_axis_order=True):
        epsg = crs.to_epsg()
        raise SourceError(
            f"{label}: the raster is in {f'EPSG:{epsg}' if epsg else crs.name} but layer "
            f"{src.name!r} has no srs (Mapnik would draw it as EPSG:4326); add "
            f'srs="epsg:{epsg or "NNNN"}" to the <Layer>'
        )
    return wgs84


def _check_nodata(value: Any, dtype: str, label: str, where: str) -> None:
    """:class:`SourceError` when a nodata value cannot be a pixel of ``dtype``."""
    if value is None:
        return
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SourceError(
                f"{label}: {where} {value!r} is not a number; give a number the "
                f"{dtype} pixels can hold"
            ) from None
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
            raise SourceError(
                f"{label}: {where} {value!r} cannot be a {dtype} pixel (whole numbers "
                f"{info.min}..{info.max}); fix the nodata value"
            )


def _colormaps(ds: Any) -> list[Any]:
    out: list[Any] = []
    for b in range(1, ds.count + 1):
        try:
            cmap = ds.colormap(b)
            out.append(sorted([k, list(v)] for k, v in cmap.items()))
        except ValueError:  # no colour table on this band
            out.append(None)
    return out


def _header(ds: Any) -> dict[str, Any]:
    """The file's georeferencing, size, bands, nodata, colour tables and block layout."""
    return {
        "width": ds.width,
        "height": ds.height,
        "count": ds.count,
        "dtypes": list(ds.dtypes),
        "transform": list(ds.transform)[:6],
        "crs": ds.crs.to_wkt() if ds.crs else None,
        "nodata": [
            None if v is None or (isinstance(v, float) and math.isnan(v)) else v
            for v in ds.nodatavals
        ],
        "nodata_nan": [isinstance(v, float) and math.isnan(v) for v in ds.nodatavals],
        "colormaps": _colormaps(ds),
        "colorinterp": [c.name for c in ds.colorinterp],
        "scales": list(ds.scales),
        "offsets": list(ds.offsets),
        "masks": [str(m) for m in ds.mask_flag_enums],
        "blocks": list(ds.block_shapes[0]) if ds.count else [0, 0],
        "tiled": _tiled(ds),
        "overviews": ds.overviews(1) if ds.count else [],
    }


def _tiled(ds: Any) -> bool:
    """Internally tiled (blocks narrower than the raster), not strips."""
    if not ds.count:
        return False
    bh, bw = ds.block_shapes[0]
    return bool(bw < ds.width and bh > 1)


def _windows(width: int, height: int, bshape: tuple[int, int], tiled: bool) -> Iterator:
    """(row, col, col_off, row_off, w, h) per block: internal tiles, else BLOCK squares."""
    bh, bw = bshape if tiled and bshape[0] > 1 and bshape[1] > 1 else (BLOCK, BLOCK)
    for r, y in enumerate(range(0, height, bh)):
        for c, x in enumerate(range(0, width, bw)):
            yield r, c, x, y, min(bw, width - x), min(bh, height - y)


def _hash_blocks(
    ds: Any, salt: bytes, label: str
) -> tuple[list[tuple[int, int, int, int, int, int]], list]:
    """Every block of ``ds`` read and hashed on its own (memory stays one block)."""
    rio = _rasterio()
    wins, fps = [], []
    bshape = tuple(ds.block_shapes[0])
    for r, c, x, y, w, h in _windows(ds.width, ds.height, bshape, _tiled(ds)):
        try:
            data = ds.read(window=rio.windows.Window(x, y, w, h))
        except Exception as exc:  # a truncated or damaged block: GDAL's CPLE_* errors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(
                f"{label}: cannot read the pixels at column {x}, row {y} ({reason}); the file "
                "looks damaged or incomplete"
            ) from None
        hsh = hashlib.blake2b(salt, digest_size=8)
        hsh.update(np.ascontiguousarray(data).tobytes())
        wins.append((r, c, x, y, w, h))
        fps.append(int.from_bytes(hsh.digest(), "little"))
    return wins, fps


def _outline_boxes(
    wins: list[tuple[int, int, int, int, int, int]],
    transform: Any,
    grow: float,
    tr: pyproj.Transformer | None,
) -> np.ndarray:
    """Boxes (n, 4) in the scheme CRS of block windows grown by ``grow`` pixels."""
    if not wins:
        return np.zeros((0, 4))
    w = np.asarray(wins, dtype=np.float64)
    x0, y0 = w[:, 2] - grow, w[:, 3] - grow
    x1, y1 = w[:, 2] + w[:, 4] + grow, w[:, 3] + w[:, 5] + grow
    t = np.linspace(0.0, 1.0, DENSIFY + 1)
    # the four edges of each block, densified: (n, 4 * (DENSIFY + 1)) pixel coordinates
    px = np.concatenate(
        [
            x0[:, None] + (x1 - x0)[:, None] * t,
            np.repeat(x1[:, None], len(t), 1),
            x0[:, None] + (x1 - x0)[:, None] * t,
            np.repeat(x0[:, None], len(t), 1),
        ],
        axis=1,
    )
    py = np.concatenate(
        [
            np.repeat(y0[:, None], len(t), 1),
            y0[:, None] + (y1 - y0)[:, None] * t,
            np.repeat(y1[:, None], len(t), 1),
            y0[:, None] + (y1 - y0)[:, None] * t,
        ],
        axis=1,
    )
    a, b, c, d, e, f = list(transform)[:6]
    mx, my = a * px + b * py + c, d * px + e * py + f
    if tr is not None:
        with np.errstate(all="ignore"):
            mx, my = tr.transform(mx, my)
        mx, my = np.asarray(mx), np.asarray(my)
    return np.column_stack([mx.min(1), my.min(1), mx.max(1), my.max(1)])


def _vrt_sources(path: str, label: str) -> tuple[list[tuple[str, str]], str]:
    """A VRT's source files with a digest of how each is placed, and a digest of the VRT
    without its sources (its grid, bands, nodata, colour tables)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SourceError(f"{label}: cannot read the VRT ({exc})") from None
    for el in root.iter():  # layout whitespace is not content
        el.text = el.text.strip() or None if el.text else None
        el.tail = None
    per_file: dict[str, hashlib._Hash] = {}
    order: list[str] = []
    base = Path(path).parent
    for band in root.iter("VRTRasterBand"):
        for el in list(band):
            fn = el.find("SourceFilename")
            if fn is None:
                continue
            name = (fn.text or "").strip()
            rel = fn.get("relativeToVRT", "0") == "1"
            full = str((base / name).resolve()) if rel or not os.path.isabs(name) else name
            if not name.startswith("/vsi") and not Path(full).is_file():
                raise SourceError(
                    f"{label}: VRT source {full} is missing; restore it or rebuild the VRT"
                )
            if full not in per_file:
                per_file[full] = hashlib.sha256()
                order.append(full)
            fn.text = name  # as written: the digest must not depend on where the folder is
            per_file[full].update(ET.tostring(el))
            band.remove(el)
    rest = hashlib.sha256(ET.tostring(root)).hexdigest()
    return [(f, per_file[f].hexdigest()) for f in order], rest


def _memo(state: Path | None, layer: str) -> dict[str, tuple[int, int, str, np.ndarray]]:
    """The last build's block fingerprints per file, when size and mtime may be trusted
    (the ``raster_files`` table the snapshot keeps, read-only)."""
    if state is None or not state.is_file():
        return {}
    try:
        con = sqlite3.connect(state.resolve().as_uri() + "?mode=ro", uri=True, timeout=3.0)
        try:
            rows = con.execute(
                "SELECT path, size, mtime_ns, digest, fps FROM raster_files WHERE layer=?",
                (layer,),
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # no such table yet, or a damaged file: hash everything
        return {}
    return {p: (s, m, d, np.frombuffer(f, dtype=np.uint64).copy()) for p, s, m, d, f in rows}


def read_raster_layer(
    src: LayerSource,
    target_crs: str,
    valid: Bounds | None = None,
    *,
    trust_mtime: bool = False,
    state: Path | None = None,
) -> RasterLayerData:
    """The blocks of a ``gdal``/``raster`` layer (see the module docstring).

    ``trust_mtime``: a file whose size, modification time and header are those the last
    build recorded (in ``state``, the snapshot's database) keeps its block fingerprints
    without being read. :class:`SourceError` (one line naming the file) for an unreadable
    raster, a missing VRT source, a CRS PROJ cannot find or a nodata value of the wrong type.
    """
    label = src.path
    if not Path(src.path).exists() and not src.path.startswith("/vsi"):
        raise SourceError(f"{label}: the raster of layer {src.name!r} does not exist")
    settings = json.dumps(
        {k: v for k, v in sorted(src.params.items()) if k != "file"} | {"srs": src.srs}
    ).encode()
    with _open(src.path, label) as ds:
        head = _header(ds)
        dtype = head["dtypes"][0] if head["dtypes"] else "uint8"
        for v in set(head["nodata"]) - {None}:
            _check_nodata(v, dtype, label, "the file's nodata value")
        if "nodata" in src.params:
            _check_nodata(src.params["nodata"], dtype, label, "the datasource's nodata")
        crs = _layer_crs(src, ds.crs, label)
        driver = ds.driver
    if src.kind == "raster":  # Mapnik's raster plugin: the extent comes from the XML
        transform = _raster_plugin_transform(src, head["width"], head["height"], label)
    else:
        transform = head["transform"]
    target = pyproj.CRS.from_user_input(target_crs)
    tr = None if crs.equals(target) else pyproj.Transformer.from_crs(crs, target, always_xy=True)
    grow = reach(src)
    files: list[tuple[str, str, list[float] | None]]  # path, salt, transform (None: its own)
    if driver == "VRT" and src.kind == "gdal":
        sources, vrt_digest = _vrt_sources(src.path, label)
        top = hashlib.sha256(settings + vrt_digest.encode() + _canon(head, transform)).hexdigest()
        files = [(f, top + d, None) for f, d in sources]
    else:
        files = [(src.path, hashlib.sha256(settings).hexdigest(), transform)]
    memo = _memo(state, src.name) if trust_mtime else {}
    keys: list[str] = []
    fps: list[int] = []
    boxes: list[np.ndarray] = []
    records: list[RasterFile] = []
    # Each block is read once: a small GDAL block cache keeps memory flat (GDAL's default,
    # 5 % of RAM, filled to 0.4 GB on a 20,000-px raster).
    with _rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for path, salt_text, own_transform in files:
            k, f, b, rec = _file_blocks(
                src, path, salt_text, own_transform, tr, grow, memo, len(keys)
            )
            keys += k
            fps += f
            boxes.append(b)
            records.append(rec)
    bounds = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    if len(bounds) and not np.isfinite(bounds).all():
        raise SourceError(
            f"{label}: part of the raster cannot be projected to {target_crs} (it reaches "
            "beyond where that CRS is defined); clip it first"
        )
    if valid is not None and len(bounds):
        vx0, vy0, vx1, vy1 = valid
        tol = 1e-6 * max(vx1 - vx0, vy1 - vy0)
        out = (
            (bounds[:, 2] < vx0 - tol)
            | (bounds[:, 0] > vx1 + tol)
            | (bounds[:, 3] < vy0 - tol)
            | (bounds[:, 1] > vy1 + tol)
        )
        if out.all():
            raise SourceError(
                f"{label}: the raster lies outside the tiling scheme's extent once projected "
                f"to {target_crs}; check the layer's srs"
            )
    return RasterLayerData(
        name=src.name,
        keys=np.asarray(keys, dtype=object),
        wkb=np.asarray(shapely.to_wkb(shapely.box(*bounds.T)), dtype=object)
        if len(bounds)
        else np.zeros(0, dtype=object),
        bounds=bounds,
        attrs={},
        fingerprints=np.asarray(fps, dtype=np.uint64),
        keyed=True,
        files=tuple(records),
    )


def _canon(head: dict[str, Any], transform: Any) -> bytes:
    return json.dumps({**head, "transform": list(transform)[:6]}, sort_keys=True).encode()


def _file_blocks(
    src: LayerSource,
    path: str,
    salt_text: str,
    transform: Any,
    tr: pyproj.Transformer | None,
    grow: int,
    memo: dict[str, tuple[int, int, str, np.ndarray]],
    first: int,
) -> tuple[list[str], list[int], np.ndarray, RasterFile]:
    """Keys, fingerprints and boxes of every block of one file, overviews included."""
    label = path if path == src.path else f"{src.path}: source {path}"
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{label}: cannot read the raster ({exc.strerror})") from None
    keys: list[str] = []
    boxes: list[np.ndarray] = []
    with _open(path, label) as ds:
        head = _header(ds)
        dtype = head["dtypes"][0] if head["dtypes"] else "uint8"
        for v in set(head["nodata"]) - {None}:
            _check_nodata(v, dtype, label, "the file's nodata value")
        own = transform if transform is not None else head["transform"]
        digest = hashlib.sha256(salt_text.encode() + _canon(head, own)).hexdigest()
        ovr_levels = list(head["overviews"])
    name = _relative(path, src.path)
    cached = memo.get(name)
    reuse = cached is not None and cached[:3] == (st.st_size, st.st_mtime_ns, digest)
    all_fps: list[int] = []
    for level in range(len(ovr_levels) + 1):
        with _open(path, label, **({"overview_level": level - 1} if level else {})) as ds:
            scale_x = head["width"] / ds.width
            scale_y = head["height"] / ds.height
            a, b, c, d, e, f = list(own)[:6]
            t = [a * scale_x, b * scale_y, c, d * scale_x, e * scale_y, f]
            salt = bytes.fromhex(digest) + level.to_bytes(2, "little")
            if reuse:
                wins = list(_windows(ds.width, ds.height, tuple(ds.block_shapes[0]), _tiled(ds)))
                lfps: list[int] = []
            else:
                wins, lfps = _hash_blocks(ds, salt, label)
        keys += [f"{name}|o{level}|{w[0]}|{w[1]}" for w in wins]
        all_fps += lfps
        boxes.append(_outline_boxes(wins, t, grow, tr))
    if reuse and cached is not None:
        if len(cached[3]) != len(keys):  # the layout moved under an unchanged header
            return _file_blocks(src, path, salt_text, transform, tr, grow, {}, first)
        all_fps = [int(x) for x in cached[3]]
        log.debug("%s: size and mtime unchanged, block fingerprints kept", label)
    rec = RasterFile(
        path=name,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        meta=head,
        digest=digest,
        first=first,
        count=len(keys),
    )
    return keys, all_fps, np.concatenate(boxes), rec


def _relative(path: str, layer_file: str) -> str:
    """``path`` relative to the layer's file's folder (so a moved project keeps its keys)."""
    try:
        return Path(os.path.relpath(path, Path(layer_file).parent)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def _raster_plugin_transform(src: LayerSource, width: int, height: int, label: str) -> list:
    """Mapnik's ``raster`` plugin takes the extent from its parameters, not the file."""
    p = src.params
    try:
        if p.get("extent"):
            x0, y0, x1, y1 = (float(v) for v in p["extent"].replace(",", " ").split())
        else:
            x0, y0, x1, y1 = (float(p[k]) for k in ("lox", "loy", "hix", "hiy"))
    except (KeyError, ValueError):
        raise SourceError(
            f"{label}: a 'raster' datasource needs 'extent' or lox/loy/hix/hiy numbers"
        ) from None
    return [(x1 - x0) / width, 0.0, x0, 0.0, -(y1 - y0) / height, y1]
