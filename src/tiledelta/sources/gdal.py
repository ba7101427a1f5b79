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

import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio

from tiledelta.errors import SourceError
from tiledelta.sources.types import RawLayer, require_fields
from tiledelta.style import LayerSource
from tiledelta.style.cim.expressions import sql_fields


def _open_kwargs(src: LayerSource) -> dict:
    kw: dict = {}
    if src.layer:
        kw["layer"] = src.layer
    return kw


_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|\S+)")


def shown(path: str) -> str:
    """A dataset path fit to print: a connection string (``PG:...``) without its password."""
    return _PASSWORD.sub(r"\1***", path) if path.startswith("PG:") else path


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


def _shapefile(src: LayerSource) -> Path | None:
    """The ``.shp`` a layer reads, when it reads one."""
    p = Path(src.path)
    if p.suffix.lower() == ".shp":
        return p
    if src.layer and p.is_dir():
        for cand in (p / f"{src.layer}.shp", p / f"{src.layer}.SHP"):
            if cand.is_file():
                return cand
    return None


def _sidecar(shp: Path, ext: str) -> Path | None:
    for cand in (shp.with_suffix(ext), shp.with_suffix(ext.upper())):
        if cand.is_file():
            return cand
    return None


def check_shapefile(name: str, shp: Path) -> None:
    """:class:`SourceError` unless ``shp`` holds every record its ``.shx`` lists and the
    length its header records: GDAL reads the records past a cut as features without a
    geometry, silently (a file caught mid-copy)."""
    shx = _sidecar(shp, ".shx")
    hint = "it may still be being copied: wait for the copy to finish and run again"
    try:
        shp_size = shp.stat().st_size
        with open(shp, "rb") as fh:
            head = fh.read(100)
        index = np.fromfile(shx, dtype=">i4") if shx is not None else None
    except OSError as exc:
        raise SourceError(f"layer {name!r}: cannot read {shp} ({exc.strerror})") from exc
    if len(head) < 100 or int.from_bytes(head[:4], "big") != 9994:
        raise SourceError(f"layer {name!r}: {shp} is not a shapefile (bad header); {hint}")
    declared = int.from_bytes(head[24:28], "big") * 2
    if declared != shp_size:
        raise SourceError(
            f"layer {name!r}: {shp} is incomplete or damaged: its header says "
            f"{declared:,} bytes, the file has {shp_size:,}; {hint}"
        )
    if index is None or shx is None:
        return
    if len(index) < 25 or int(index[6]) * 2 != len(index) * 4:
        raise SourceError(f"layer {name!r}: {shx} is incomplete or damaged; {hint}")
    records = index[25:].reshape(-1, 2).astype(np.int64) * 2
    end = int((records[:, 0] + 8 + records[:, 1]).max()) if len(records) else 0
    if end > shp_size:
        raise SourceError(
            f"layer {name!r}: {shp} ({shp_size:,} bytes) lacks records its index "
            f"{shx.name} lists (up to byte {end:,}); {hint}"
        )


def pro_map_fields(src: LayerSource, fields: list[str]) -> LayerSource:
    """A Pro map's layer with its field names as the data spells them (ArcGIS matches
    field names without regard to case), and every field for ``("*",)``."""
    if src.params.get("origin") != "arcgis-pro":
        return src
    if tuple(src.attributes) == ("*",):
        return replace(src, attributes=tuple(fields))
    by_lower = {f.lower(): f for f in fields}
    names = tuple(
        sorted({a if a in fields else by_lower.get(a.lower(), a) for a in src.attributes})
    )
    return replace(src, attributes=names)


def read_raw(src: LayerSource, key: str | None, **select: Any) -> RawLayer:
    """A file layer through GDAL (pyogrio), in the dataset's full-scan order.

    ``select`` is passed to ``pyogrio.raw.read`` to read part of the layer (the Dask
    engine's row ranges: ``skip_features``/``max_features``; or ``fids``, read in the
    order given).

    A layer that cannot be read completely is a :class:`SourceError`, never fewer
    features: a shapefile shorter than its index says, or a GDAL warning on read.
    """
    _check_exists(src)
    shp = _shapefile(src)
    if shp is not None:
        check_shapefile(src.name, shp)
    kw = _open_kwargs(src)
    try:
        info = pyogrio.read_info(src.path, **kw)
    except Exception as exc:
        raise SourceError(
            f"layer {src.name!r}: cannot open {shown(src.path)}"
            + (f" layer {src.layer!r}" if src.layer else "")
            + f" ({_short(exc)})"
        ) from exc
    fields = list(info["fields"])
    src = pro_map_fields(src, fields)
    wanted = list(src.attributes)
    require_fields(src, fields, key, Path(src.path).name)
    columns = sorted(set(wanted) | ({key} if key else set()))
    if src.where:
        kw["where"] = src.where
        # GDAL's OGR SQL filter sees the fields left out of ``columns`` as NULL (measured
        # with FileGDB and shapefiles): read the ones the clause names too.
        named = sql_fields(src.where)
        columns = sorted(set(columns) | (set(fields) if named is None else named & set(fields)))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            meta, fids, geoms, values = pyogrio.raw.read(
                src.path, columns=columns, return_fids=True, **kw, **select
            )
    except Exception as exc:
        if src.where:
            raise SourceError(
                f"layer {src.name!r}: the definition query {src.where!r} cannot be applied to "
                f'{shown(src.path)} ({_short(exc)}); fix it, or set [layers."{src.name}"] where'
            ) from exc
        raise SourceError(
            f"layer {src.name!r}: cannot read {shown(src.path)} ({_short(exc)})"
        ) from exc
    gdal_warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if gdal_warnings:
        raise SourceError(
            f"layer {src.name!r}: GDAL could not read {src.path} cleanly "
            f"({_short(Exception(gdal_warnings[0]))}); repair or re-export the data"
        )
    by_name = dict(zip(meta["fields"], values, strict=True))
    return RawLayer(
        wkb=np.asarray(geoms, dtype=object),
        fields={a: by_name[a] for a in wanted},
        ids=np.asarray(by_name[key], dtype=object) if key else np.asarray(fids),
        crs=meta.get("crs"),
        label=src.path,
        keyed=key is not None,
        fids=np.asarray(fids),
    )
