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
import threading
import time
import weakref
from collections.abc import Iterator
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


def connect(
    project: Project, target: str = "local", *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """The state database of ``target``, created when absent; its errors are one line
    (:class:`StateError`, :class:`StateBusy` after :data:`BUSY_TIMEOUT` seconds)."""
    make_state_dir(project)
    path = state_db(project, target)
    try:
        con = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT,
            factory=_StateConnection,
            check_same_thread=check_same_thread,
        )
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


#: Bytes per read or write of a stored array (``sqlite3`` blob I/O): a whole blob at once
#: is held by SQLite, by Python's ``bytes`` and by the array together.
BLOB_PIECE = 1 << 24


def _pack(a: np.ndarray) -> bytes:
    """The ``.npy`` bytes stored for ``a``, made whole in memory (:class:`_Npy` writes the
    same bytes in pieces): an object array is stored as int64 when it holds integers
    only, else as fixed-width text."""
    buf = io.BytesIO()
    if a.dtype == object:
        a = a.astype(np.int64) if all(isinstance(v, int | np.integer) for v in a) else a.astype(str)
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


#: Rows of an object array turned into text at a time while finding the stored width.
TEXT_ROWS = 1 << 14


def _text_dtype(a: np.ndarray) -> np.dtype:
    """The dtype ``a.astype(str)`` gives, found a piece at a time (the widest piece's)."""
    widest = np.dtype("<U1")
    for i in range(0, len(a), TEXT_ROWS):
        got = a[i : i + TEXT_ROWS].astype(str).dtype
        if got.itemsize > widest.itemsize:
            widest = got
    return widest


class _Npy:
    """An array as :func:`_pack` stores it, byte for byte, written to a blob in pieces of
    about :data:`BLOB_PIECE`: the ``.npy`` header, then the array's own buffer (or, where
    ``_pack`` converts the whole array, each piece converted in turn). ``_pack``'s copy,
    its ``BytesIO`` and the ``bytes`` SQLite binds and copies again are never made.

    ``dtype`` is what to store ``a`` as (``np.asarray(a, dtype)``, the boxes' float64).
    An array to convert that is neither 1-D nor in C order is converted whole first, as
    before; an object array of more than one axis, a type ``np.save`` refuses or pickles
    and a header beyond ``.npy`` 1.0 are left to :func:`_pack` (whole)."""

    head: bytes  # the header (or, packed whole, every byte)
    size: int  # bytes stored in all
    array: np.ndarray | None  # what the pieces come from (None: packed whole)
    dtype: np.dtype | None  # what it is stored as
    convert: bool = False  # each piece converted to ``dtype``

    def __init__(self, a: np.ndarray, dtype: np.dtype | type | None = None) -> None:
        a = np.asarray(a)
        if dtype is not None:
            target = np.dtype(dtype)
        elif a.dtype != object:
            target = a.dtype
        elif a.ndim == 1:
            ints = all(isinstance(v, int | np.integer) for v in a)
            target = np.dtype(np.int64) if ints else _text_dtype(a)
        else:
            self._whole(a)
            return
        if target.hasobject or target.kind not in "biufcmMSUV":
            self._whole(a if dtype is None else np.asarray(a, dtype=dtype))  # raises as np.save
            return
        self.convert = target != a.dtype
        if self.convert and not (a.ndim == 1 or (a.ndim > 1 and a.flags.c_contiguous)):
            a, self.convert = a.astype(target), False  # its own layout: converted whole
        if self.convert:  # the C-order array astype would give
            d = {"shape": a.shape, "fortran_order": False}
            d["descr"] = np.lib.format.dtype_to_descr(target)
        else:
            d = np.lib.format.header_data_from_array_1_0(a)
        head = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(head, d)
        except ValueError:  # np.save would write another version
            self._whole(a)
            return
        self.head, self.array, self.dtype = head.getvalue(), a, target
        self.size = len(self.head) + int(np.prod(a.shape, dtype=np.int64)) * target.itemsize

    def _whole(self, a: np.ndarray) -> None:
        self.head, self.array, self.dtype = _pack(a), None, None
        self.size = len(self.head)

    def pieces(self) -> Iterator[np.ndarray]:
        """The bytes after the header, as ``uint8`` arrays of about :data:`BLOB_PIECE`."""
        a, dtype = self.array, self.dtype
        if a is None or dtype is None or not a.size:
            return
        if not self.convert and (a.flags.c_contiguous or a.flags.f_contiguous):
            # np.save writes the C order, or (fortran_order) the F order: a.T's C order
            raw = (a if a.flags.c_contiguous else a.T).reshape(-1).view(np.uint8)
            for i in range(0, len(raw), BLOB_PIECE):
                yield raw[i : i + BLOB_PIECE]
            return
        width = max(1, dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)))
        per = max(1, BLOB_PIECE // width)
        for i in range(0, len(a), per):
            yield a[i : i + per].astype(dtype, order="C").reshape(-1).view(np.uint8)

    def write(self, blob: sqlite3.Blob) -> None:
        """Write the stored bytes into ``blob`` (of :attr:`size` bytes) from its start."""
        blob.seek(0)
        blob.write(self.head)
        for piece in self.pieces():
            blob.write(piece.data)


def _unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


@dataclass(frozen=True)
class _Layout:
    """Where a ``_pack``-ed array's data starts in its blob, and its shape and type."""

    offset: int
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype


def _layout(blob: sqlite3.Blob) -> _Layout | None:
    """The ``.npy`` header of ``blob``, or None for a format read whole (not 1.0 or 2.0)."""
    blob.seek(0)
    head = io.BytesIO(blob.read(min(len(blob), 1 << 16)))
    version = np.lib.format.read_magic(head)
    if version not in ((1, 0), (2, 0)):
        return None
    read = np.lib.format.read_array_header_1_0
    if version == (2, 0):
        read = np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(head)
    return _Layout(head.tell(), tuple(shape), bool(fortran), np.dtype(dtype))


def _read_into(blob: sqlite3.Blob, column: str, start: int, raw: np.ndarray) -> None:
    """Fill the bytes ``raw`` from ``blob`` at ``start``, :data:`BLOB_PIECE` at a time."""
    blob.seek(start)
    pos = 0
    while pos < len(raw):
        piece = blob.read(min(BLOB_PIECE, len(raw) - pos))
        if not piece:
            raise ValueError(f"layers.{column}: the stored array is cut short")
        raw[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        pos += len(piece)


def _read_blob(con: sqlite3.Connection, column: str, rowid: int) -> np.ndarray:
    """The array ``_pack`` stored in ``layers.column``, read from the blob in pieces into
    the array's own buffer: fetching a whole blob holds SQLite's copy, Python's bytes and
    the array at once (at ten million features, 320 MB of boxes three times)."""
    with con.blobopen("layers", column, rowid, readonly=True) as blob:
        lay = _layout(blob)
        if lay is None:
            blob.seek(0)
            return _unpack(blob.read())
        flat = np.empty(int(np.prod(lay.shape, dtype=np.int64)), dtype=lay.dtype)
        _read_into(blob, column, lay.offset, flat.view(np.uint8))
    return flat.reshape(lay.shape, order="F" if lay.fortran else "C")


#: Rows between two wanted ones that :func:`_read_rows` reads through rather than seek
#: past: one read of a run of rows costs less than many reads of a few.
ROW_GAP = 2048


def _read_rows(
    con: sqlite3.Connection, column: str, rowid: int, idx: np.ndarray
) -> np.ndarray | None:
    """``array[idx]`` of the array stored in ``layers.column`` (rows of its first axis),
    reading only the stretches of the blob that hold them; None when the array is not
    stored row by row (Fortran order, another ``.npy`` version): read it whole."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    with con.blobopen("layers", column, rowid, readonly=True) as blob:
        lay = _layout(blob)
        if lay is None or not lay.shape or (lay.fortran and len(lay.shape) > 1):
            return None
        rows, tail = lay.shape[0], lay.shape[1:]
        out = np.empty((len(idx), *tail), dtype=lay.dtype)
        if not len(idx):
            return out
        if idx.min() < -rows or idx.max() >= rows:
            raise IndexError(f"layers.{column}: row index out of range for {rows} rows")
        idx = np.where(idx < 0, idx + rows, idx)
        width = lay.dtype.itemsize * int(np.prod(tail, dtype=np.int64))
        order = np.argsort(idx, kind="stable")
        want = idx[order]
        # Stretches of wanted rows: a new one where the gap is wide or the stretch long.
        per = max(1, BLOB_PIECE // max(width, 1))
        cut = np.flatnonzero(np.diff(want) > ROW_GAP) + 1
        bounds = [0, *cut.tolist(), len(want)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            while a < b:
                first = int(want[a])
                end = a + int(np.searchsorted(want[a:b], first + per, "left"))
                size = (int(want[end - 1]) - first + 1) * width  # at most BLOB_PIECE
                blob.seek(lay.offset + first * width)
                buf = blob.read(size)
                if len(buf) != size:
                    raise ValueError(f"layers.{column}: the stored array is cut short")
                got = np.frombuffer(buf, dtype=lay.dtype).reshape(-1, *tail)
                out[order[a:end]] = got[want[a:end] - first]
                a = end
    return out


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


def _insert_layer(con: sqlite3.Connection, name: str, d: LayerData) -> None:
    """One ``layers`` row for ``d`` (in the caller's transaction): blobs of zeros of the
    stored arrays' sizes, then each array written into its blob in pieces (:class:`_Npy`),
    so no array is held a second time, whole, as bytes."""
    stored = {
        "keys": _Npy(np.asarray(d.keys)),
        "fps": _Npy(d.fingerprints),
        "bounds": _Npy(np.asarray(d.bounds), np.float64),
    }
    cur = con.execute(
        "INSERT INTO layers VALUES (?, ?, zeroblob(?), zeroblob(?), zeroblob(?))",
        (name, len(d), *(npy.size for npy in stored.values())),
    )
    assert cur.lastrowid is not None
    try:
        for column, npy in stored.items():
            with con.blobopen("layers", column, cur.lastrowid) as blob:
                npy.write(blob)
    except sqlite3.Error as exc:
        raise state_error(exc, getattr(con, "state_path", Path("state.sqlite"))) from exc


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
        for name, d in layers.items():
            _insert_layer(con, name, d)
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


class _Reader:
    """The state database held in the read transaction a snapshot was loaded in, while
    some of its arrays are still unread: what is read later belongs to the same snapshot,
    whatever another process records meanwhile. Closed after the last of them is read,
    or when the snapshot is dropped."""

    def __init__(self, con: _StateConnection, unread: int) -> None:
        self.con, self.unread = con, unread
        self.lock = threading.Lock()
        self.close = weakref.finalize(self, con.close)
        if not unread:
            self.close()

    def array(self, column: str, rowid: int) -> np.ndarray:
        """The whole stored array (it is not read again: one unread array less)."""
        with self.lock:
            try:
                return _read_blob(self.con, column, rowid)
            except sqlite3.Error as exc:
                raise state_error(exc, self.con.state_path) from exc
            finally:
                self.unread -= 1
                if self.unread <= 0:
                    self.close()

    def rows(self, column: str, rowid: int, idx: np.ndarray) -> np.ndarray | None:
        """Rows ``idx`` of the stored array (see :func:`_read_rows`)."""
        with self.lock:
            try:
                return _read_rows(self.con, column, rowid, idx)
            except sqlite3.Error as exc:
                raise state_error(exc, self.con.state_path) from exc


@dataclass(frozen=True)
class _Stored:
    """An array of a snapshot not read yet: ``layers.column`` of row ``rowid``."""

    reader: _Reader
    column: str
    rowid: int


class LayerSnapshot:
    """One layer of the last build: per feature its key, fingerprint and box, in draw order.

    Loaded by :func:`load_snapshot`, only the fingerprints are read at once. The keys and
    boxes are read whole when first used, and :meth:`bounds_at` reads only the rows asked
    for, so a diff that needs the old places of the changed features never holds every
    old box (docs/dask.md)."""

    def __init__(
        self,
        keys: np.ndarray | _Stored,
        fingerprints: np.ndarray,
        bounds: np.ndarray | _Stored,
    ) -> None:
        self._keys, self.fingerprints, self._bounds = keys, fingerprints, bounds

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __repr__(self) -> str:
        return f"LayerSnapshot({len(self):,} features)"

    @property
    def keys(self) -> np.ndarray:
        """Key field values or feature ids (read from the state database on first use)."""
        if isinstance(self._keys, _Stored):
            self._keys = self._keys.reader.array(self._keys.column, self._keys.rowid)
        return self._keys

    @property
    def bounds(self) -> np.ndarray:
        """(n, 4) boxes (read from the state database on first use)."""
        if isinstance(self._bounds, _Stored):
            self._bounds = self._bounds.reader.array(self._bounds.column, self._bounds.rowid)
        return self._bounds

    def bounds_at(self, idx: np.ndarray) -> np.ndarray:
        """``bounds[idx]`` for integer positions ``idx``, without reading the other rows."""
        stored = self._bounds
        if isinstance(stored, _Stored):
            got = stored.reader.rows(stored.column, stored.rowid, idx)
            if got is not None:
                return got
        return self.bounds[np.asarray(idx, dtype=np.int64)]


@dataclass
class Snapshot:
    signature: dict
    layers: dict[str, LayerSnapshot] = field(default_factory=dict)


def load_snapshot(project: Project, target: str = "local") -> Snapshot | None:
    """The last build's snapshot, or None before the first build.

    The fingerprints are read now; each layer's keys and boxes when first used, in the
    same read transaction (held open until then: a WAL database lets writers go on
    meanwhile; in any other journal mode everything is read now)."""
    if project.state_dir.exists() and not project.state_dir.is_dir():
        make_state_dir(project)  # the one-line StateError: .tiledelta is a file
    if not state_db(project, target).exists():
        return None
    con = connect(project, target, check_same_thread=False)
    assert isinstance(con, _StateConnection)
    try:
        wal = str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        con.execute("BEGIN")  # one read transaction: one snapshot, whatever is read later
        row = con.execute("SELECT value FROM meta WHERE key='signature'").fetchone()
        if row is None:
            con.close()
            return None
        snap = Snapshot(signature=json.loads(row[0]))
        rows = con.execute("SELECT rowid, name FROM layers").fetchall()
        # Keys and boxes read later, in this transaction (the reader closes it after them).
        reader = _Reader(con, 2 * len(rows)) if wal and rows else None
        for rowid, name in rows:
            fps = _read_blob(con, "fps", rowid)
            keys: np.ndarray | _Stored
            bounds: np.ndarray | _Stored
            if reader is not None:
                keys, bounds = _Stored(reader, "keys", rowid), _Stored(reader, "bounds", rowid)
            else:
                keys, bounds = _read_blob(con, "keys", rowid), _read_blob(con, "bounds", rowid)
            snap.layers[name] = LayerSnapshot(keys, fps, bounds)
    except sqlite3.Error as exc:
        con.close()
        raise state_error(exc, con.state_path) from exc
    except BaseException:
        con.close()
        raise
    if reader is None:
        con.close()
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
