"""Areas: the dirty area of an update written for other tools (GeoJSON, Esri JSON
FeatureSet), and the area a run is limited to, read from ``--extent`` or ``--aoi``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import shapely

from tiledelta.errors import ConfigError, UsageError
from tiledelta.project import Project


def dirty_area(boxes_by_layer: dict[str, np.ndarray]):
    """The union of all dirty boxes as one shapely (multi)polygon, or None."""
    boxes = [np.asarray(b).reshape(-1, 4) for b in boxes_by_layer.values() if len(b)]
    if not boxes:
        return None
    b = np.concatenate(boxes)
    # Degenerate boxes (points, straight lines) still need an area.
    eps = 1e-6 * max(1.0, float(np.abs(b).max()))
    polys = shapely.box(b[:, 0] - eps, b[:, 1] - eps, b[:, 2] + eps, b[:, 3] + eps)
    return shapely.union_all(polys)


def esri_feature_set(geom, wkid: int | None, wkt: str | None = None) -> dict:
    """An Esri JSON polygon FeatureSet (one feature per polygon part)."""
    sr = {"wkid": wkid} if wkid else {"wkt": wkt}
    parts = list(getattr(geom, "geoms", [geom])) if geom is not None else []
    features = []
    for i, poly in enumerate(parts):
        rings = [
            list(map(list, poly.exterior.coords))[::-1]
            if poly.exterior.is_ccw
            else list(map(list, poly.exterior.coords))
        ]
        for hole in poly.interiors:
            coords = list(map(list, hole.coords))
            rings.append(coords if hole.is_ccw else coords[::-1])
        features.append(
            {
                "geometry": {"rings": rings, "spatialReference": sr},
                "attributes": {"OBJECTID": i + 1},
            }
        )
    return {
        "geometryType": "esriGeometryPolygon",
        "spatialReference": sr,
        "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID", "alias": "OBJECTID"}],
        "features": features,
    }


def write_aoi(project: Project, boxes_by_layer: dict[str, np.ndarray], out: Path) -> list[Path]:
    """Write ``out`` (GeoJSON in the scheme CRS) and ``out``.esri.json; return the paths."""
    geom = dirty_area(boxes_by_layer)
    out = Path(out)
    scheme = project.scheme
    gj = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": scheme.crs}},
        "features": []
        if geom is None
        else [
            {
                "type": "Feature",
                "properties": {"kind": "dirty area"},
                "geometry": json.loads(shapely.to_geojson(geom)),
            }
        ],
    }
    esri = out.with_name(out.stem + ".esri.json")
    out.write_text(json.dumps(gj), encoding="utf-8")
    esri.write_text(json.dumps(esri_feature_set(geom, scheme.wkid, scheme.crs)), encoding="utf-8")
    return [out, esri]


def _reprojected(geom: shapely.Geometry, src: str, dst: str) -> shapely.Geometry:
    """``geom`` from CRS ``src`` to ``dst`` (always x, y order), densified so that its
    edges follow the projection."""
    s, d = pyproj.CRS.from_user_input(src), pyproj.CRS.from_user_input(dst)
    if s.equals(d):
        return geom
    tr = pyproj.Transformer.from_crs(s, d, always_xy=True)
    # Densify in the source units so long straight edges bend as the projection does.
    span = max(geom.bounds[2] - geom.bounds[0], geom.bounds[3] - geom.bounds[1]) or 1.0
    dense = shapely.segmentize(geom, span / 64)
    out = shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(np.asarray(out.bounds, dtype=float)).all():
        raise ConfigError(f"the area cannot be reprojected from {src} to {dst}")
    return out


def extent_area(values: str, crs: str, scheme_crs: str) -> shapely.Geometry:
    """``--extent xmin,ymin,xmax,ymax`` (in ``crs``) as a polygon in the scheme CRS."""
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in values.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(
            f"--extent {values!r}: give four numbers xmin,ymin,xmax,ymax (in {crs})"
        ) from None
    if not (np.isfinite([xmin, ymin, xmax, ymax]).all() and xmin < xmax and ymin < ymax):
        raise UsageError(f"--extent {values!r}: needs xmin < xmax and ymin < ymax (in {crs})")
    try:
        return _reprojected(shapely.box(xmin, ymin, xmax, ymax), crs, scheme_crs)
    except pyproj.exceptions.CRSError:
        raise UsageError(f"--extent-crs {crs!r} is not a CRS PROJ knows") from None


def read_aoi(path: Path, scheme_crs: str) -> shapely.Geometry:
    """The polygons of ``path`` (GeoJSON, or an Esri JSON FeatureSet as ArcGIS writes it)
    as one geometry in the scheme CRS; read by GDAL (its GeoJSON and ESRIJSON drivers),
    which take the CRS from the file (RFC 7946 GeoJSON: WGS 84)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--aoi {path}: no such file", hint="give a GeoJSON or Esri JSON file")
    try:
        meta, _fids, wkb, _fields = pyogrio.raw.read(path, read_geometry=True, columns=[])
    except Exception as exc:  # GDAL's errors for a file it cannot read
        msg = str(exc).splitlines()[0].split("; ")[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--aoi {path}: not a GeoJSON or Esri JSON FeatureSet GDAL can read ({msg})"
        ) from None
    geoms = [g for g in shapely.from_wkb([b for b in wkb if b is not None]) if not g.is_empty]
    polys = [g for g in geoms if shapely.get_dimensions(g) == 2]
    if not polys:
        raise ConfigError(f"--aoi {path}: holds no polygon", hint="draw the area as polygons")
    crs = meta.get("crs") or "EPSG:4326"
    area = shapely.union_all(shapely.make_valid(np.asarray(polys, dtype=object)))
    try:
        return _reprojected(area, crs, scheme_crs)
    except pyproj.exceptions.CRSError:
        raise ConfigError(f"--aoi {path}: its CRS {crs!r} is unknown to PROJ") from None
