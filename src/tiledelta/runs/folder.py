"""What each run leaves behind in ``.tiledelta/runs/<id>/`` for reports and the viewer.

- ``summary.json``: the run's JSON summary (as ``--json`` prints it).
- ``changes.geojson`` (updates): WGS 84 features — the current geometry of every added
  or modified feature (``"change": "new"``) and the box where every deleted or modified
  feature was (``"change": "old"``; the snapshot keeps boxes, not geometries).
- ``tiles.json`` (updates): the tiles written or removed, per level.
- ``before.sqlite`` (updates): the bytes those tiles had before (NULL: no tile), for
  the viewer's before/after swipe; kept up to :data:`BEFORE_LIMIT` bytes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pyproj
import shapely

from tiledelta.change import Changes
from tiledelta.project import Project
from tiledelta.sources import LayerData


def runs_dir(project: Project, target: str = "local") -> Path:
    """Where a target's run folders are: ``runs/`` for the local cache, ``runs-<target>/``."""
    return project.state_dir / ("runs" if target == "local" else f"runs-{target}")


def run_dir(project: Project, run_id: int, target: str = "local") -> Path:
    return runs_dir(project, target) / f"{run_id:06d}"


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


def changes_geojson(project: Project, changes: Changes, layers: dict[str, LayerData]) -> dict:
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
    changes: Changes | None = None,
    layers: dict[str, LayerData] | None = None,
    tiles: list | None = None,
    target: str = "local",
) -> Path:
    """Write the run's folder; return it."""
    folder = run_dir(project, run_id, target)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({**summary, "run": run_id}, indent=2))
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


BEFORE_LIMIT = 256 * 2**20
BEFORE_FILE = "before.sqlite"


class BeforeTiles:
    """Collects the tiles an update replaces, into a SQLite file moved into the run folder.

    The pending file is scratch until the run ends (a run that dies leaves it to be
    discarded by the next), so it is written in one transaction without a rollback
    journal or syncs; :meth:`move_to` commits, fsyncs the file once and renames it.
    """

    def __init__(self, project: Project) -> None:
        project.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = project.state_dir / ("pending-" + BEFORE_FILE)
        self.path.unlink(missing_ok=True)
        self._con = sqlite3.connect(self.path)
        self._con.execute("PRAGMA journal_mode=OFF")
        self._con.execute("PRAGMA synchronous=OFF")
        self._con.execute(
            "CREATE TABLE tiles (level INTEGER, row INTEGER, col INTEGER, data BLOB, "
            "PRIMARY KEY (level, row, col))"
        )
        self._con.commit()
        self.bytes = 0
        self.complete = True

    def __call__(self, items: list) -> None:
        size = sum(len(d) for _a, d in items if d)
        if self.bytes + size > BEFORE_LIMIT:
            self.complete = False
            return
        self.bytes += size
        # one open transaction for the run (committed by move_to): no commit per call
        self._con.executemany(
            "INSERT OR IGNORE INTO tiles VALUES (?, ?, ?, ?)",
            [(lv, r, c, d) for (lv, r, c), d in items],
        )

    def move_to(self, folder: Path) -> None:
        self._con.commit()
        self._con.close()
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.path.replace(folder / BEFORE_FILE)

    def discard(self) -> None:
        self._con.close()
        self.path.unlink(missing_ok=True)


def before_tile(folder: Path, level: int, row: int, col: int) -> tuple[bool, bytes | None]:
    """(known, bytes) of a tile before the run: known=False when the run did not touch it."""
    path = folder / BEFORE_FILE
    if not path.is_file():
        return False, None
    con = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        row_ = con.execute(
            "SELECT data FROM tiles WHERE level=? AND row=? AND col=?", (level, row, col)
        ).fetchone()
    finally:
        con.close()
    return (False, None) if row_ is None else (True, row_[0])
