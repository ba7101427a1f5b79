"""Reading a file layer in pieces, for the Dask engine (:mod:`tiledelta.render.dask_engine`).

Two ways, both through the one reader (:func:`tiledelta.sources.gdal.read_raw`) and the
one code path to :class:`~tiledelta.sources.LayerData` (:func:`layer_data`), so boxes
and fingerprints are bit for bit those of a full read:

- :func:`read_piece`: a row range (``skip_features`` / ``max_features``) in the dataset's
  full-scan order, boiled down to what detection, planning and the snapshot use (feature
  ids, keys, boxes, fingerprints: no geometry, no attributes). The pieces of a layer, in
  range order, are the layer in full-scan order.
- :func:`read_fids`: exactly the features with the given GDAL feature ids, in the order
  given, with geometry and the style's attributes: what one render task draws.

PostGIS layers (:mod:`tiledelta.sources.postgis`) are read by key instead: detection in
key ranges (:func:`read_key_range`; the ranges, from :class:`~tiledelta.sources.postgis.
ReadSnapshot`, partition the rows in key order, so the pieces in range order are the
layer in the local read's order), render tasks by their features' keys (:func:`read_ids`,
``key = ANY(...) ORDER BY key``), all in one exported snapshot of the database.

Nothing here knows about Dask: these are the functions its tasks run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio

from tiledelta.errors import SourceError
from tiledelta.grid import Bounds
from tiledelta.sources import postgis
from tiledelta.sources.gdal import read_raw
from tiledelta.sources.types import LayerData, RawLayer, layer_data
from tiledelta.style import RASTER_TYPES, LayerSource


@dataclass
class LayerPiece:
    """One row range of a layer, without geometry or attributes."""

    fids: np.ndarray  # (n,) int64 GDAL feature ids, full-scan order
    keys: np.ndarray  # key values (object) or the feature ids (int64)
    bounds: np.ndarray  # (n, 4) float64 boxes, scheme CRS
    fingerprints: np.ndarray  # (n,) uint64
    null_keys: np.ndarray  # keys of the rows with no geometry
    keyed: bool


def check_source(src: LayerSource, key: str | None = None) -> str | None:
    """Why ``src`` cannot be read here, or None when it can (a worker's start check)."""
    if src.kind == "postgis":
        return postgis.check(src, key)
    return check_file_source(src)


def check_file_source(src: LayerSource) -> str | None:
    """Why ``src`` cannot be opened here, or None when it can (a worker's start check)."""
    if src.kind == "postgis":
        return f"layer {src.name!r}: a PostGIS layer is not a file"
    if src.kind in RASTER_TYPES:
        return _check_raster(src)
    if not src.path.startswith(("/vsi", "PG:")) and not Path(src.path).exists():
        return f"layer {src.name!r}: {src.path} does not exist"
    try:
        pyogrio.read_info(src.path, layer=src.layer)
    except Exception as exc:  # pyogrio raises several DataSource/DataLayer errors
        text = str(exc).strip().splitlines()
        return f"layer {src.name!r}: cannot open {src.path} ({text[0] if text else exc})"
    return None


def _check_raster(src: LayerSource) -> str | None:
    """Why a raster layer's file cannot be opened here (Mapnik on the worker reads it)."""
    if not src.path.startswith("/vsi") and not Path(src.path).exists():
        return f"layer {src.name!r}: {src.path} does not exist"
    try:
        import rasterio

        with rasterio.open(src.path):
            pass
    except Exception as exc:  # rasterio's RasterioIOError and GDAL's errors
        text = str(exc).strip().splitlines()
        return f"layer {src.name!r}: cannot open {src.path} ({text[0] if text else exc})"
    return None


def feature_count(src: LayerSource) -> int:
    """Rows in the layer (with or without geometry), counted by GDAL."""
    try:
        info = pyogrio.read_info(src.path, layer=src.layer, force_feature_count=True)
    except Exception as exc:
        raise SourceError(f"layer {src.name!r}: cannot open {src.path} ({exc})") from exc
    return int(info["features"])


def row_ranges(count: int, size: int) -> list[tuple[int, int]]:
    """``(skip, count)`` ranges of at most ``size`` rows covering ``count`` rows."""
    return [(s, min(size, count - s)) for s in range(0, count, size)]


def _positions(fids: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Where each of ``chosen`` is in ``fids`` (feature ids are unique in a layer)."""
    order = np.argsort(fids, kind="stable")
    return order[np.searchsorted(fids, chosen, sorter=order)]


def _by_fid(raw: RawLayer) -> tuple[RawLayer, np.ndarray]:
    if raw.fids is None:  # pragma: no cover - every file reader sets them
        raise SourceError(f"{raw.label}: the reader gave no feature ids")
    return dataclasses.replace(raw, ids=raw.fids), np.asarray(raw.fids, dtype=np.int64)


#: Rows a reading task reads at once (about 30 MB of transient memory for buildings).
READ_ROWS = 25_000


def read_piece(
    src: LayerSource,
    target_crs: str,
    key: str | None,
    skip: int,
    count: int,
    valid: Bounds | None = None,
) -> LayerPiece:
    """Rows ``skip`` … ``skip + count - 1`` of the full scan, boiled down (see module doc).
    ``valid`` is the scheme's extent, checked as in a full read.

    The rows are read :data:`READ_ROWS` at a time and only their boiled-down form is kept,
    so a reading task's memory follows that, not ``count``."""
    if count <= READ_ROWS:
        return _read_part(src, target_crs, key, skip, count, valid)
    parts = [
        _read_part(src, target_crs, key, start, min(READ_ROWS, skip + count - start), valid)
        for start in range(skip, skip + count, READ_ROWS)
    ]
    return LayerPiece(
        fids=_cat([p.fids for p in parts]),
        keys=_cat([p.keys for p in parts]),
        bounds=_cat([p.bounds for p in parts]),
        fingerprints=_cat([p.fingerprints for p in parts]),
        null_keys=_cat([p.null_keys for p in parts]),
        keyed=parts[0].keyed,
    )


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays joined; an empty one takes no part (its dtype may be the reader's default)."""
    full = [a for a in arrays if len(a)]
    return np.concatenate(full) if full else arrays[0]


def _read_part(
    src: LayerSource,
    target_crs: str,
    key: str | None,
    skip: int,
    count: int,
    valid: Bounds | None,
) -> LayerPiece:
    raw = read_raw(src, key, skip_features=skip, max_features=count)
    by_fid, fids = _by_fid(raw)
    data = layer_data(src, by_fid, target_crs, valid)
    kept = _positions(fids, np.asarray(data.keys, dtype=np.int64))
    nulls = _positions(fids, np.asarray(data.null_keys, dtype=np.int64))
    ids = np.asarray(raw.ids)
    return LayerPiece(
        fids=fids[kept],
        keys=ids[kept],
        bounds=data.bounds,
        fingerprints=data.fingerprints,
        null_keys=ids[nulls],
        keyed=raw.keyed,
    )


def read_fids(
    src: LayerSource,
    target_crs: str,
    key: str | None,
    fids: np.ndarray,
    valid: Bounds | None = None,
    first: int | None = None,
    slack: int = 0,
) -> LayerData:
    """The features with these feature ids, in this order, as a full read gives them.

    With ``first`` (at most the scan position of the first of them, and at most
    ``slack`` rows before it; ``fids`` in scan order) and the features filling at least
    :data:`DENSE_SHARE` of the rows they span, those rows are read by position
    (``skip_features``: several times faster than by id in a GeoPackage) and the rows
    with these ids kept; when that run does not hold exactly these ids in this order
    (an edited file, ids not in scan order), they are read by id."""
    if not len(fids):
        return empty_layer(src, key is not None)
    fids = np.asarray(fids, dtype=np.int64)
    if first is not None and len(fids) > 1:
        span = int(fids[-1] - fids[0]) + 1  # rows of the run, when ids follow scan order
        if span > 0 and len(fids) >= DENSE_SHARE * span:
            count = span + slack
            raw = read_raw(src, key, skip_features=max(int(first), 0), max_features=count)
            got = np.asarray(raw.fids if raw.fids is not None else [], dtype=np.int64)
            keep = np.flatnonzero(np.isin(got, fids))
            if np.array_equal(got[keep], fids):
                rows = raw if len(keep) == len(got) else _rows(raw, keep)
                del raw
                return layer_data(src, rows, target_crs, valid)
    raw = read_raw(src, key, fids=fids)
    return layer_data(src, raw, target_crs, valid)


#: A render task's features are read as one run of rows by position when they fill at
#: least this share of it (the rest of the run is read and dropped).
DENSE_SHARE = 0.5


def _rows(raw: RawLayer, idx: np.ndarray) -> RawLayer:
    """Rows ``idx`` of ``raw``, in that order."""
    take = idx.tolist()

    def pick(v: Any) -> Any:
        return v[idx] if isinstance(v, np.ndarray) else [v[i] for i in take]

    return dataclasses.replace(
        raw,
        wkb=raw.wkb[idx],
        fields={name: pick(v) for name, v in raw.fields.items()},
        ids=np.asarray(raw.ids)[idx],
        fids=None if raw.fids is None else np.asarray(raw.fids)[idx],
    )


def read_key_range(
    src: LayerSource,
    target_crs: str,
    key: str | None,
    key_range: postgis.KeyRange,
    snapshot: str | None,
    valid: Bounds | None = None,
) -> LayerPiece:
    """One key range of a PostGIS layer, boiled down as :func:`read_piece` (``fids`` are
    the rows' places in the piece: PostGIS rows have no feature ids)."""
    raw = postgis.read_raw(src, key, key_range=key_range, snapshot=snapshot)
    data = layer_data(src, raw, target_crs, valid)
    return LayerPiece(
        fids=np.arange(len(data), dtype=np.int64),
        keys=data.keys,
        bounds=data.bounds,
        fingerprints=data.fingerprints,
        null_keys=data.null_keys,
        keyed=raw.keyed,
    )


def read_ids(
    src: LayerSource,
    target_crs: str,
    key: str | None,
    ids: np.ndarray,
    snapshot: str | None = None,
    valid: Bounds | None = None,
    first: int | None = None,
    slack: int = 0,
) -> LayerData:
    """The features a render task draws: by GDAL feature id (files, in the order given;
    ``first``, ``slack``: see :func:`read_fids`), or by key (PostGIS, in key order,
    within ``snapshot``)."""
    if src.kind != "postgis":
        return read_fids(src, target_crs, key, ids, valid, first, slack)
    if not len(ids):
        return empty_layer(src, True)
    raw = postgis.read_raw(src, key, keys=list(ids), snapshot=snapshot)
    return layer_data(src, raw, target_crs, valid)


def empty_layer(src: LayerSource, keyed: bool) -> LayerData:
    """A layer with no feature (a task whose meta-tiles this layer does not reach)."""
    return LayerData(
        name=src.name,
        keys=np.zeros(0, dtype=object if keyed else np.int64),
        wkb=np.zeros(0, dtype=object),
        bounds=np.zeros((0, 4)),
        attrs={a: [] for a in src.attributes},
        fingerprints=np.zeros(0, dtype=np.uint64),
        keyed=keyed,
    )


def no_geometry(n: int) -> np.ndarray:
    """``n`` empty geometry slots (None) that take no memory: a read-only view of one None.
    Who fills some (the Dask engine's ``complete``) makes a writable array first."""
    return np.broadcast_to(np.array([None], dtype=object), (n,))


def merge_pieces(src: LayerSource, pieces: list[LayerPiece]) -> tuple[LayerData, np.ndarray]:
    """The layer for detection, planning and the snapshot (geometry left empty: None per
    feature, :func:`no_geometry`, filled where needed with :func:`read_fids`), and its
    feature ids."""
    merger = PieceMerger(src, sum(len(p.fids) for p in pieces))
    for piece in pieces:
        merger.add(piece)
    return merger.result()


class PieceMerger:
    """:func:`merge_pieces` one piece at a time, into arrays sized once for the layer's
    row count: the client never holds the pieces and their concatenation together. When
    the keys are the feature ids (no key field), one array serves as both."""

    def __init__(self, src: LayerSource, rows: int) -> None:
        self.src, self.n = src, 0
        self.fids = np.empty(rows, dtype=np.int64)
        self.bounds = np.empty((rows, 4), dtype=np.float64)
        self.fps = np.empty(rows, dtype=np.uint64)
        self.keys: list[np.ndarray] | None = []  # None while the keys are the fids
        self.nulls: list[np.ndarray] = []
        self.keyed: bool | None = None

    def add(self, piece: LayerPiece) -> None:
        """Append the next row range's features (pieces come in range order)."""
        k, m = self.n, len(piece.fids)
        if k + m > len(self.fids):  # more rows than counted: grow (copies, rare)
            grow = max(k + m, 2 * len(self.fids))
            self.fids = np.resize(self.fids, grow)
            self.bounds = np.resize(self.bounds, (grow, 4))
            self.fps = np.resize(self.fps, grow)
        self.fids[k : k + m] = piece.fids
        self.bounds[k : k + m] = piece.bounds.reshape(-1, 4)
        self.fps[k : k + m] = piece.fingerprints
        same = piece.keys.dtype == np.int64 and np.array_equal(piece.keys, piece.fids)
        if self.keys is None:
            if not same:  # the fids stood for the keys so far: no longer
                self.keys = [self.fids[:k].copy(), piece.keys]
        elif same and self.keyed is None:
            self.keys = None  # the first piece's keys are its fids
        else:
            self.keys.append(piece.keys)
        self.nulls.append(piece.null_keys)
        self.keyed = piece.keyed if self.keyed is None else self.keyed
        self.n = k + m

    def result(self) -> tuple[LayerData, np.ndarray]:
        """The merged layer and its feature ids (views of the merger's arrays)."""
        n = self.n
        if self.keyed is None:
            return empty_layer(self.src, False), np.zeros(0, dtype=np.int64)
        fids = self.fids[:n]
        keys = fids if self.keys is None else np.concatenate(self.keys)
        data = LayerData(
            name=self.src.name,
            keys=keys,
            wkb=no_geometry(n),
            bounds=self.bounds[:n],
            attrs={},
            fingerprints=self.fps[:n],
            keyed=self.keyed,
            null_keys=np.concatenate(self.nulls),
            fids=fids,
        )
        return data, fids
