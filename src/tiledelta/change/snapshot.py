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
from typing import Any

import numpy as np

from tiledelta.change.raster import SCHEMA as RASTER_SCHEMA
from tiledelta.change.raster import record_raster_files
from tiledelta.change.unchanged import SCHEMA as INPUTS_SCHEMA
from tiledelta.change.unchanged import record_inputs, recorded_inputs
from tiledelta.errors import DiskFull, StateBusy, StateError, TileDeltaError
from tiledelta.grid import mapnik_scale_denominator
from tiledelta.project import Project
from tiledelta.sources import LayerData
from tiledelta.sources.types import LayerInputs
from tiledelta.style import visible_levels

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


#: Seconds to wait for another process's lock on the state database before saying so.
BUSY_TIMEOUT = 3.0


def state_error(exc: sqlite3.Error, path: Path) -> TileDeltaError:
    """One line for an SQLite error on the state database ``path``, saying what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateBusy(
            f"{path}: another process holds it locked ({text}); wait for it to finish and try again"
        )
    if "full" in text or "disk I/O error" in text:
        return DiskFull(
            f"{path}: a write failed ({text}): the disk may be full; free some space there"
        )
    if "readonly" in text or "unable to open" in text:
        return StateError(
            f"{path}: cannot write it ({text}); make {path.parent} and the file writable"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StateError(
            f"{path} is damaged ({text}); move it away and run 'tiledelta seed' to rebuild "
            "the cache and its snapshot"
        )
    return StateError(f"{path}: {text}")


class _StateConnection(sqlite3.Connection):
    """A connection to a state database whose errors are one-line :class:`StateError`s."""

    state_path: Path = Path("state.sqlite")

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.Error as exc:
            raise state_error(exc, self.state_path) from exc

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.Error as exc:
            raise state_error(exc, self.state_path) from exc

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.Error as exc:
            raise state_error(exc, self.state_path) from exc

    def commit(self) -> None:
        try:
            super().commit()
        except sqlite3.Error as exc:
            raise state_error(exc, self.state_path) from exc

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return super().__exit__(*exc_info)
        except sqlite3.Error as exc:
            raise state_error(exc, self.state_path) from exc


def make_state_dir(project: Project) -> Path:
    """``.tiledelta`` (created when absent); :class:`StateError` when it cannot be."""
    d = project.state_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StateError(
            f"{d} is a file, not a folder: tiledelta keeps its state there; move the file away"
        ) from None
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise StateError(f"{d}: cannot create it ({what}); make {d.parent} writable") from None
    return d


def connect(project: Project, target: str = "local") -> sqlite3.Connection:
    """The state database of ``target``, created when absent; its errors are one line
    (:class:`StateError`, :class:`StateBusy` after :data:`BUSY_TIMEOUT` seconds)."""
    make_state_dir(project)
    path = state_db(project, target)
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT, factory=_StateConnection)
    except sqlite3.Error as exc:
        raise state_error(exc, path) from exc
    assert isinstance(con, _StateConnection)
    con.state_path = path
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA + RASTER_SCHEMA + INPUTS_SCHEMA)
    except BaseException:
        con.close()
        raise
    return con


def _pack(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    if a.dtype == object:
        a = a.astype(np.int64) if all(isinstance(v, int | np.integer) for v in a) else a.astype(str)
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


def _read_blob(con: sqlite3.Connection, column: str, rowid: int) -> np.ndarray:
    """The array ``_pack`` stored in ``layers.column``, read from the blob in pieces into
    the array's own buffer: fetching a whole blob holds SQLite's copy, Python's bytes and
    the array at once (at ten million features, 320 MB of boxes three times)."""
    with con.blobopen("layers", column, rowid, readonly=True) as blob:
        head = io.BytesIO(blob.read(min(len(blob), 1 << 16)))
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0)):
            blob.seek(0)
            return _unpack(blob.read())
        read = np.lib.format.read_array_header_1_0
        if version == (2, 0):
            read = np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(head)
        flat = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
        raw = flat.view(np.uint8)
        blob.seek(head.tell())
        pos = 0
        while pos < len(raw):
            piece = blob.read(min(1 << 24, len(raw) - pos))
            if not piece:
                raise ValueError(f"layers.{column}: the stored array is cut short")
            raw[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)
    return flat.reshape(shape, order="F" if fortran else "C")


#: Bumped when what a snapshot records changes meaning (2: fingerprints of the geometry as
#: drawn, in the scheme CRS); a snapshot of another format means a full rebuild.
SNAPSHOT_FORMAT = 2


def build_signature(project: Project, levels: list[int]) -> dict:
    """What, besides the data, decides every tile's bytes."""
    s = project.settings
    scheme = project.scheme
    render: dict[str, object] = {
        "metatile": s.metatile,
        "buffer": s.buffer,
        "format": s.fmt,
        "quality": s.quality,
        "blank_tiles": project.config.cache.blank_tiles,
    }
    # PNG tiles (png8 and JPEG are Mapnik's encoders alone); "mapnik" wrote the bytes of
    # the versions before the setting, whose signatures lack it: they stay current
    if s.fmt in ("png", "mixed") and s.png_compression != "mapnik":
        render["png_compression"] = s.png_compression
    return {
        "format": SNAPSHOT_FORMAT,
        "style": project.style.digest,
        "scheme": scheme.model_dump_json(exclude={"name"}),
        "render": render,
        "extent": list(project.extent) if project.extent else None,
        "keys": {lyr.name: project.key_field(lyr.name) for lyr in project.style.layers},
        "levels": levels,
        "layer_styles": layer_styles(project, levels),
    }


def layer_styles(project: Project, levels: list[int]) -> dict[str, dict]:
    """Per layer of a style with per-layer digests (a Pro map): its digest, the levels it
    draws at and its buffer, so a symbology edit rebuilds that layer's levels only (and
    the levels and reach it had before). Empty for a Mapnik XML style."""
    style = project.style
    if not style.layer_digests:
        return {}
    scheme = project.scheme
    vis = visible_levels(
        style.xml_without_datasources, levels, lambda lv: mapnik_scale_denominator(scheme, lv)
    )
    default = project.settings.buffer
    return {
        lyr.name: {
            "digest": style.layer_digests.get(lyr.name, ""),
            "levels": vis.get(lyr.name, []),
            "buffer": default if lyr.buffer_size is None else lyr.buffer_size,
        }
        for lyr in style.layers
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
        record_raster_files(con, layers)  # raster layers: each file's header and blocks
        record_inputs(con, layers)  # file-backed layers: what proves them unchanged next time
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
    if project.state_dir.exists() and not project.state_dir.is_dir():
        make_state_dir(project)  # the one-line StateError: .tiledelta is a file
    if not state_db(project, target).exists():
        return None
    with closing(connect(project, target)) as con:
        row = con.execute("SELECT value FROM meta WHERE key='signature'").fetchone()
        if row is None:
            return None
        snap = Snapshot(signature=json.loads(row[0]))
        for rowid, name in con.execute("SELECT rowid, name FROM layers").fetchall():
            keys, fps, bounds = (_read_blob(con, c, rowid) for c in ("keys", "fps", "bounds"))
            snap.layers[name] = LayerSnapshot(keys, fps, bounds)
    return snap


def load_layer_inputs(project: Project, target: str = "local") -> dict[str, LayerInputs]:
    """The inputs the last build recorded per layer (``change/unchanged.py``)."""
    if not state_db(project, target).exists():
        return {}
    with closing(connect(project, target)) as con:
        return recorded_inputs(con)


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
        st = s.get("stages", {})
        # render_write, or (since stages are split) render + write, else the whole run
        t = st.get("render_write") or st.get("render", 0) + st.get("write", 0)
        t = t or s.get("seconds", 0)
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
