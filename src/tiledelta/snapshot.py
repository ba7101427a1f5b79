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


def build_signature(project: Project, levels: list[int]) -> dict:
    """What, besides the data, decides every tile's bytes."""
    s = project.settings
    scheme = project.scheme
    return {
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


# --- diff ----------------------------------------------------------------------------------


@dataclass
class LayerChange:
    """Changes of one layer: counts, and the boxes whose tiles they dirty."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    old_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    new_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    #: indices, in the current layer data, of the added and modified features
    new_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def boxes(self) -> np.ndarray:
        """Where the changes were and are: the boxes whose tiles they dirty."""
        return np.concatenate([self.old_boxes.reshape(-1, 4), self.new_boxes.reshape(-1, 4)])

    @property
    def changed(self) -> bool:
        return bool(self.added or self.modified or self.deleted)

    def as_dict(self) -> dict:
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted}


def diff_layer(old: LayerSnapshot | None, new: LayerData, keyed: bool) -> LayerChange:
    """Added / modified / deleted features between a snapshot and current data.

    With a key field, features are matched by key (an edit is "modified");
    without one, by fingerprint as a multiset (an edit is delete + add).
    """
    if old is None:
        return LayerChange(
            added=len(new), new_boxes=new.bounds, new_idx=np.arange(len(new), dtype=np.int64)
        )
    if keyed:
        return _diff_keyed(old, new)
    return _diff_multiset(old, new)


def _diff_keyed(old: LayerSnapshot, new: LayerData) -> LayerChange:
    okeys = np.asarray(old.keys)
    nkeys = np.asarray(new.keys)
    if okeys.dtype.kind != nkeys.dtype.kind or nkeys.dtype == object:
        okeys, nkeys = okeys.astype(str), nkeys.astype(str)
    if len(np.unique(nkeys)) != len(nkeys):
        # Duplicate keys cannot be matched one to one: fall back to fingerprints.
        return _diff_multiset(old, new)
    common, oi, ni = np.intersect1d(okeys, nkeys, assume_unique=True, return_indices=True)
    mod = old.fingerprints[oi] != new.fingerprints[ni]
    del_mask = np.ones(len(okeys), bool)
    del_mask[oi] = False
    add_mask = np.ones(len(nkeys), bool)
    add_mask[ni] = False
    old_boxes = np.concatenate([old.bounds[del_mask], old.bounds[oi[mod]]])
    new_boxes = np.concatenate([new.bounds[add_mask], new.bounds[ni[mod]]])
    return LayerChange(
        added=int(add_mask.sum()),
        modified=int(mod.sum()),
        deleted=int(del_mask.sum()),
        old_boxes=old_boxes,
        new_boxes=new_boxes,
        new_idx=np.concatenate([np.flatnonzero(add_mask), ni[mod]]).astype(np.int64),
    )


def _diff_multiset(old: LayerSnapshot, new: LayerData) -> LayerChange:
    ou, oc = np.unique(old.fingerprints, return_counts=True)
    nu, nc = np.unique(new.fingerprints, return_counts=True)
    allfp = np.union1d(ou, nu)
    ocount = np.zeros(len(allfp), np.int64)
    ncount = np.zeros(len(allfp), np.int64)
    ocount[np.searchsorted(allfp, ou)] = oc
    ncount[np.searchsorted(allfp, nu)] = nc
    changed = allfp[ocount != ncount]
    gone = np.isin(old.fingerprints, changed)
    came = np.isin(new.fingerprints, changed)
    deleted = int(np.clip(ocount - ncount, 0, None).sum())
    added = int(np.clip(ncount - ocount, 0, None).sum())
    old_boxes, new_boxes = old.bounds[gone], new.bounds[came]
    return LayerChange(
        added=added,
        deleted=deleted,
        old_boxes=old_boxes,
        new_boxes=new_boxes,
        new_idx=np.flatnonzero(came).astype(np.int64),
    )


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
