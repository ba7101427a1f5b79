"""Read each style layer's features, in a stable order.

Files are read with GDAL (pyogrio) in the dataset's own full-scan order (file order
for shapefiles, row order for GeoPackage/SQLite), never an index order, so that what
Mapnik draws does not depend on where unrelated features are stored
(docs: findings.md §2). PostGIS tables are read with psycopg, ordered by their key
(:mod:`tiledelta.postgis`). Both readers give a :class:`RawLayer`, which one code path
turns into :class:`LayerData`. Geometries are returned in the tiling scheme's CRS,
with their bounding boxes and a fingerprint of what the renderer sees.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyogrio

from tiledelta.errors import SourceError
from tiledelta.sources.types import RawLayer, require_fields
from tiledelta.style import LayerSource


def _open_kwargs(src: LayerSource) -> dict:
    kw: dict = {}
    if src.layer:
        kw["layer"] = src.layer
    return kw


def _check_exists(src: LayerSource) -> None:
    if src.path.startswith("PG:"):
        return
    if not Path(src.path).exists():
        raise SourceError(
            f"layer {src.name!r}: datasource {src.path} does not exist; fix the path in the style"
        )


def describe(path: str, layer: str | None = None) -> dict:
    """Geometry type, fields, CRS and feature count of one dataset layer."""
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # pyogrio raises several DataSource/DataLayer errors
        raise SourceError(f"{path}: cannot open ({_short(exc)})") from exc
    return {
        "layer": info["layer_name"],
        "geometry_type": info["geometry_type"],
        "fields": list(info["fields"]),
        "crs": info["crs"],
        "features": info["features"],
        "bounds": info.get("total_bounds"),
    }


def list_layers(path: str) -> list[str]:
    """Names of the vector layers in a dataset."""
    try:
        return [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:
        raise SourceError(f"{path}: cannot open ({_short(exc)})") from exc


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_raw(src: LayerSource, key: str | None) -> RawLayer:
    """A file layer through GDAL (pyogrio), in the dataset's full-scan order."""
    _check_exists(src)
    kw = _open_kwargs(src)
    try:
        info = pyogrio.read_info(src.path, **kw)
    except Exception as exc:
        raise SourceError(
            f"layer {src.name!r}: cannot open {src.path}"
            + (f" layer {src.layer!r}" if src.layer else "")
            + f" ({_short(exc)})"
        ) from exc
    fields = list(info["fields"])
    wanted = list(src.attributes)
    require_fields(src, fields, key, Path(src.path).name)
    columns = sorted(set(wanted) | ({key} if key else set()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta, fids, geoms, values = pyogrio.raw.read(
                src.path, columns=columns, return_fids=True, **kw
            )
    except Exception as exc:
        raise SourceError(f"layer {src.name!r}: cannot read {src.path} ({_short(exc)})") from exc
    by_name = dict(zip(meta["fields"], values, strict=True))
    return RawLayer(
        wkb=np.asarray(geoms, dtype=object),
        fields={a: by_name[a] for a in wanted},
        ids=np.asarray(by_name[key], dtype=object) if key else np.asarray(fids),
        crs=meta.get("crs"),
        label=src.path,
        keyed=key is not None,
    )
