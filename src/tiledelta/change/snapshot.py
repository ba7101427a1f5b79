"""Snapshots: what the last successful build saw, and what changed since.

For every style layer the snapshot keeps, per feature, its key (key field
value or feature id), a 64-bit fingerprint of its geometry and the attributes
the style uses, and its bounding box in scheme units — no copy of the data.
It lives in ``.tiledelta/state.sqlite`` with the run history.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiledelta.project import Project
from tiledelta.sources import LayerData

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    name TEXT PRIMARY KEY, count INTEGER NOT NULL,
    keys BLOB NOT NULL, fps BLOB NOT NULL, bounds BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started REAL NOT NULL,
    finished REAL, status TEXT NOT NULL, summary TEXT
);
"""


def state_db(project: Project, target: str = "local") -> Path:
    """The state database of one target: the local cache, or e.g. "arcgis"."""
    name = "state.sqlite" if target == "local" else f"state-{target}.sqlite"
    return project.state_dir / name


def connect(project: Project, target: str = "local") -> sqlite3.Connection:
    project.state_dir.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(state_db(project, target), timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(SCHEMA)
    return con


def _pack(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    if a.dtype == object:
        a = a.astype(np.int64) if all(isinstance(v, int | np.integer) for v in a) else a.astype(str)
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


#: Bumped when what a snapshot records changes meaning (2: fingerprints of the geometry as
#: drawn, in the scheme CRS); a snapshot of another format means a full rebuild.
SNAPSHOT_FORMAT = 2


def build_signature(project: Project, levels: list[int]) -> dict:
    """What, besides the data, decides every tile's bytes."""
    s = project.settings
    scheme = project.scheme
    return {
        "format": SNAPSHOT_FORMAT,
        "style": project.style.digest,
        "scheme": scheme.model_dump_json(exclude={"name"}),
        "render": {
            "metatile": s.metatile,
            "buffer": s.buffer,
            "format": s.fmt,
            "quality": s.quality,
            "blank_tiles": project.config.cache.blank_tiles,
        },
        "extent": list(project.extent) if project.extent else None,
        "keys": {lyr.name: project.key_field(lyr.name) for lyr in project.style.layers},
        "levels": levels,
    }


def record_build(
    project: Project,
    layers: dict[str, LayerData],
    levels: list[int],
    *,
    kind: str,
    summary: dict | None = None,
    clear_journal: bool = False,
    changed_tiles: list[tuple[int, int, int]] | None = None,
    target: str = "local",
) -> int:
    """Advance the snapshot to ``layers`` in one transaction; return the run id."""
    sig = build_signature(project, levels)
    sig["keyed"] = {name: d.keyed for name, d in layers.items()}
    with closing(connect(project, target)) as con, con:
        con.execute("DELETE FROM layers")
        con.executemany(
            "INSERT INTO layers VALUES (?, ?, ?, ?, ?)",
            [
                (
                    name,
                    len(d),
                    _pack(np.asarray(d.keys)),
                    _pack(d.fingerprints),
                    _pack(np.asarray(d.bounds, dtype=np.float64)),
                )
                for name, d in layers.items()
            ],
        )
        con.execute("INSERT OR REPLACE INTO meta VALUES ('signature', ?)", (json.dumps(sig),))
        if clear_journal:
            con.execute("DELETE FROM meta WHERE key='journal'")
        if changed_tiles is None:
            con.execute("DELETE FROM meta WHERE key='last_update_tiles'")
        else:
            save_update_tiles(con, np.asarray(changed_tiles, dtype=np.int64))
        cur = con.execute(
            "INSERT INTO runs (kind, started, finished, status, summary) VALUES (?, ?, ?, ?, ?)",
            (kind, time.time(), time.time(), "ok", json.dumps(summary or {})),
        )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)


@dataclass
class LayerSnapshot:
    keys: np.ndarray
    fingerprints: np.ndarray
    bounds: np.ndarray


@dataclass
class Snapshot:
    signature: dict
    layers: dict[str, LayerSnapshot] = field(default_factory=dict)


def load_snapshot(project: Project, target: str = "local") -> Snapshot | None:
    """The last build's snapshot, or None before the first build."""
    if not state_db(project, target).exists():
        return None
    with closing(connect(project, target)) as con:
        row = con.execute("SELECT value FROM meta WHERE key='signature'").fetchone()
        if row is None:
            return None
        snap = Snapshot(signature=json.loads(row[0]))
        for name, _n, keys, fps, bounds in con.execute("SELECT * FROM layers"):
            snap.layers[name] = LayerSnapshot(_unpack(keys), _unpack(fps), _unpack(bounds))
    return snap


def measured_speed(project: Project) -> float | None:
    """Meta-tiles per second over the recent runs that rendered some, or None."""
    if not state_db(project).exists():
        return None
    with closing(connect(project)) as con:
        rows = con.execute(
            "SELECT summary FROM runs WHERE status='ok' ORDER BY id DESC LIMIT 10"
        ).fetchall()
    n = secs = 0.0
    for (text,) in rows:
        s = json.loads(text or "{}")
        mt = s.get("metatiles_rendered", 0)
        t = s.get("stages", {}).get("render_write") or s.get("seconds", 0)
        if mt and t:
            n, secs = n + mt, secs + t
    return n / secs if secs else None


def save_update_tiles(con: sqlite3.Connection, addrs: np.ndarray) -> None:
    """Remember the (level, row, col) tiles the last update wrote or removed."""
    con.execute(
        "INSERT OR REPLACE INTO meta VALUES ('last_update_tiles', ?)",
        (json.dumps(np.asarray(addrs, dtype=np.int64).reshape(-1, 3).tolist()),),
    )


def last_update_tiles(project: Project) -> np.ndarray | None:
    """Tiles the last update wrote or removed; None when the last build was a seed."""
    if not state_db(project).exists():
        return None
    with closing(connect(project)) as con:
        row = con.execute("SELECT value FROM meta WHERE key='last_update_tiles'").fetchone()
    return None if row is None else np.asarray(json.loads(row[0]), dtype=np.int64).reshape(-1, 3)
