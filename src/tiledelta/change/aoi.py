"""The dirty area of an update, written for other tools (GeoJSON, Esri JSON FeatureSet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely

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
