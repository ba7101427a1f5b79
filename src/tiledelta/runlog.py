"""What each run leaves behind in ``.tiledelta/runs/<id>/`` for reports and the viewer.

- ``summary.json``: the run's JSON summary (as ``--json`` prints it).
- ``changes.geojson`` (updates): WGS 84 features — the current geometry of every added
  or modified feature (``"change": "new"``) and the box where every deleted or modified
  feature was (``"change": "old"``; the snapshot keeps boxes, not geometries).
- ``tiles.json`` (updates): the tiles written or removed, per level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import shapely

from tiledelta.project import Project
from tiledelta.sources import LayerData


def runs_dir(project: Project) -> Path:
    return project.state_dir / "runs"


def run_dir(project: Project, run_id: int) -> Path:
    return runs_dir(project) / f"{run_id:06d}"


def latest_run(project: Project) -> Path | None:
    """The newest run folder, or None."""
    folder = runs_dir(project)
    runs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return runs[-1] if runs else None


def _to_wgs84(crs: str):
    src = pyproj.CRS.from_user_input(crs)
    if src.equals(pyproj.CRS.from_epsg(4326)):
        return lambda g: g
    tr = pyproj.Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    return lambda g: shapely.transform(
        g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
    )


def changes_geojson(project: Project, changes, layers: dict[str, LayerData]) -> dict:
    """The changed features (new geometries, old boxes) in WGS 84."""
    to84 = _to_wgs84(project.scheme.crs)
    features = []
    for name, ch in changes.layers.items():
        data = layers.get(name)
        if data is not None and len(ch.new_idx):
            geoms = to84(shapely.from_wkb(data.wkb[ch.new_idx]))
            for g in geoms:
                features.append(
                    {
                        "type": "Feature",
                        "geometry": json.loads(shapely.to_geojson(g)),
                        "properties": {"layer": name, "change": "new"},
                    }
                )
        if len(ch.old_boxes):
            b = np.asarray(ch.old_boxes).reshape(-1, 4)
            for g in to84(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])):
                features.append(
                    {
                        "type": "Feature",
                        "geometry": json.loads(shapely.to_geojson(g)),
                        "properties": {"layer": name, "change": "old"},
                    }
                )
    return {"type": "FeatureCollection", "features": features}


def write_run(
    project: Project,
    run_id: int,
    summary: dict,
    *,
    changes=None,
    layers: dict[str, LayerData] | None = None,
    tiles: list | None = None,
) -> Path:
    """Write the run's folder; return it."""
    folder = run_dir(project, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"run": run_id, **summary}, indent=2))
    if changes is not None and layers is not None:
        (folder / "changes.geojson").write_text(
            json.dumps(changes_geojson(project, changes, layers))
        )
    if tiles is not None:
        per_level: dict[str, list] = {}
        for lv, r, c in tiles:
            per_level.setdefault(str(lv), []).append([int(r), int(c)])
        (folder / "tiles.json").write_text(json.dumps({"levels": per_level}))
    return folder
