"""MBTiles 1.3 (SQLite) tile store, Web Mercator only.

Rows are stored TMS-style (``tile_row = 2**z - 1 - row``, :func:`_flip`). Each
``put_many`` is one SQLite transaction in WAL mode, so it lands entirely or not at all.
Read-only, the file is read through ``mode=ro`` connections, one per thread, reopened
when the file is replaced by another (another inode).

A writer checkpoints the WAL into the file when it closes (``wal_checkpoint(TRUNCATE)``).
``seed`` never renames a new file over a live one: the old file's ``-wal``/``-shm`` would
stay beside the new file and SQLite would apply the old WAL to it (a corrupt file, wrong
tiles). :func:`replace_mbtiles` copies the new file into the live one through SQLite's
backup API instead, in one transaction: readers (``tiledelta serve``) see the old tiles
or the new ones, and the sidecars stay the file's own.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiledelta.errors import CacheError, DiskFull, TileDeltaError
from tiledelta.grid import Bounds, TilingScheme, tile_format
from tiledelta.stores.base import Addr, TileHit, TileRange, TileStore, mismatch_error

WORLD_BOUNDS = "-180.0,-85.0511287798066,180.0,85.0511287798066"
MAX_LAT = 85.0511287798066
SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (name TEXT, value TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS metadata_name ON metadata (name);
CREATE TABLE IF NOT EXISTS tiles (
    zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS tile_index ON tiles (zoom_level, tile_column, tile_row);
"""


def sqlite_error(exc: sqlite3.OperationalError, path: Path) -> TileDeltaError:
    """One line for SQLite failing to write ``path``: a full disk, a folder or file one may
    not write, another process holding it."""
    text = str(exc)
    if "full" in text or "too big" in text:
        return DiskFull(
            f"{path}: no space to write ({text}); free some space, or move the "
            "cache to a larger disk"
        )
    if "readonly" in text or "unable to open" in text or "permission" in text.lower():
        return CacheError(
            f"{path}: cannot write there ({text}); make the file and its folder "
            "writable, or choose another cache path"
        )
    if "locked" in text or "busy" in text:
        return CacheError(
            f"{path}: another process holds the file locked ({text}); try again when it is done"
        )
    if "disk I/O error" in text:  # SQLite's word for a failed write: EFBIG, EIO, ...
        return DiskFull(
            f"{path}: a write failed ({text}): the disk may be full or a file-size limit "
            "reached; free some space, or move the cache to a larger disk"
        )
    return CacheError(f"{path}: SQLite cannot write it ({text})")


def _flip(level: int, row: int) -> int:
    """A row from the top to MBTiles' TMS row from the bottom, and back."""
    return (1 << level) - 1 - row


class _ReadConnections:
    """``mode=ro`` connections to one SQLite file, one per thread; a thread's connection is
    reopened when the file at ``path`` is another file (another inode) than it opened."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self._uri = self.path.as_uri() + "?mode=ro"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise CacheError(f"cannot read {self.path}: {exc.strerror}") from exc
        key = (st.st_dev, st.st_ino)
        db = getattr(self._local, "db", None)
        if db is not None and self._local.key == key:
            return db
        if db is not None:
            self._forget(db)
        db = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        with self._lock:
            self._conns.append(db)
        self._local.db, self._local.key = db, key
        return db

    def _forget(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if db in self._conns:
                self._conns.remove(db)
        with contextlib.suppress(sqlite3.Error):
            db.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for db in conns:
            with contextlib.suppress(sqlite3.Error):
                db.close()


class MBTilesStore(TileStore):
    """An MBTiles file: one connection shared by threads under a lock, or, read-only
    (``readonly``), one ``mode=ro`` connection per thread that never writes."""

    kind = "mbtiles"

    def __init__(
        self,
        path: Path,
        scheme: TilingScheme,
        *,
        fmt: str = "png",
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.scheme = scheme
        self.fmt = tile_format(fmt).name
        self.readonly = readonly
        self._lock = threading.Lock()
        self._readers: _ReadConnections | None = None
        if self.path.is_dir():
            raise mismatch_error(self.path, "a folder, not an MBTiles file")
        existed = self.path.exists()
        if not existed and (not create or readonly):
            raise CacheError(f"{self.path} does not exist (no MBTiles cache there)")
        if readonly:
            self._readers = _ReadConnections(self.path)
            try:
                self._check_scheme(self.metadata())
            except CacheError:
                self.close()
                raise
            return
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            raise sqlite_error(exc, self.path) from exc
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            what = f"something that is not an MBTiles file ({exc})"
            raise mismatch_error(self.path, what) from exc
        meta = self.metadata()
        try:
            self._check_scheme(meta)
        except CacheError:
            self.close()
            raise
        wanted = {
            "name": meta.get("name") or self.path.stem,
            "format": tile_format(self.fmt).mbtiles,
            "bounds": meta.get("bounds") or WORLD_BOUNDS,
            "type": meta.get("type") or "baselayer",
            "version": meta.get("version") or "1.3",
            "description": meta.get("description") or "tiledelta tile cache",
            "tiledelta_scheme": scheme.model_dump_json(),
            "tiledelta_format": self.fmt,
        }
        if any(meta.get(k) != v for k, v in wanted.items()):
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)", wanted.items()
                )
                self._update_zoom_range(db)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise sqlite_error(exc, self.path) from exc

    def _check_scheme(self, meta: dict[str, str]) -> None:
        """:class:`CacheError` when the file records another tiling scheme."""
        stored = meta.get("tiledelta_scheme")
        if stored is None:
            return
        try:
            old = TilingScheme.model_validate_json(stored)
        except ValidationError as exc:
            raise CacheError(f"{self.path}: unreadable tiledelta_scheme metadata") from exc
        if not old.same_grid(self.scheme):
            what = f"an MBTiles cache with a different tiling scheme ({old.name})"
            if self.readonly:
                raise CacheError(f"{self.path} holds {what}")
            raise mismatch_error(self.path, what)

    def _rows(self, sql: str, args: tuple[int, ...] = ()) -> list[Any]:
        """All rows of one query, through the connection this mode reads with."""
        if self._readers is None:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        try:
            return self._readers.get().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path} is not a readable MBTiles file ({exc})") from exc

    def set_metadata(self, *, extent: Bounds | None, name: str, levels: list[int]) -> None:
        """MBTiles 1.3 ``name``, ``bounds`` and ``center`` (WGS 84) and the zoom range."""
        self._check_writable()
        rows = {"name": name}
        if levels:
            rows.update(minzoom=str(min(levels)), maxzoom=str(max(levels)))
        if extent is not None:
            west, south, east, north = _wgs84_bounds(extent)
            rows["bounds"] = f"{west!r},{south!r},{east!r},{north!r}"
            zoom = min(levels) if levels else 0
            rows["center"] = f"{(west + east) / 2!r},{(south + north) / 2!r},{zoom}"
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)", rows.items()
            )

    def metadata(self) -> dict[str, str]:
        """The metadata table as a dict."""
        return dict(self._rows("SELECT name, value FROM metadata"))

    @staticmethod
    def _update_zoom_range(db: sqlite3.Connection) -> None:
        lo, hi = db.execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
        if lo is None:
            db.execute("DELETE FROM metadata WHERE name IN ('minzoom', 'maxzoom')")
            return
        db.executemany(
            "INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)",
            [("minzoom", str(lo)), ("maxzoom", str(hi))],
        )

    def put_many(self, tiles: Iterable[tuple[int, int, int, bytes | None]]) -> int:
        self._check_writable()
        puts: dict[Addr, bytes] = {}
        dels: set[Addr] = set()
        for level, row, col, data in tiles:
            self.scheme.lod(level)
            if not (0 <= row < 1 << level and 0 <= col < 1 << level):
                raise CacheError(f"tile {level}/{row}/{col} is outside the Web Mercator grid")
            if data is None:
                dels.add((level, row, col))
                puts.pop((level, row, col), None)
            else:
                puts[(level, row, col)] = bytes(data)
                dels.discard((level, row, col))
        if not puts and not dels:
            return 0
        with self._transaction() as db:
            deleted = 0
            for z, row, col in dels:
                cur = db.execute(
                    "DELETE FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                    (z, col, _flip(z, row)),
                )
                deleted += cur.rowcount
            db.executemany(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) "
                "VALUES (?, ?, ?, ?)",
                ((z, col, _flip(z, row), sqlite3.Binary(d)) for (z, row, col), d in puts.items()),
            )
            self._update_zoom_range(db)
        return len(puts) + deleted

    def get(self, level: int, row: int, col: int) -> bytes | None:
        hit = self._rows(
            "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (level, col, _flip(level, row)),
        )
        return None if not hit or hit[0][0] is None else bytes(hit[0][0])

    def get_hit(self, level: int, row: int, col: int) -> TileHit | None:
        """The tile; its mtime is the file's or its WAL's, whichever changed last."""
        data = self.get(level, row, col)
        if not data:
            return None
        times = []
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                times.append(os.stat(p).st_mtime)
        return TileHit(data, max(times) if times else time.time())

    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        sql = "SELECT zoom_level, tile_column, tile_row FROM tiles"
        args: tuple[int, ...] = ()
        if level is not None:
            sql += " WHERE zoom_level=?"
            args = (level,)
        found = self._rows(sql + " ORDER BY zoom_level, tile_row DESC, tile_column", args)
        for z, col, tms_row in found:
            yield z, _flip(z, tms_row), col

    def stored_range(self, level: int) -> TileRange | None:
        ((lo_r, hi_r, lo_c, hi_c),) = self._rows(
            "SELECT MIN(tile_row), MAX(tile_row), MIN(tile_column), MAX(tile_column) "
            "FROM tiles WHERE zoom_level=?",
            (level,),
        )
        if lo_r is None:
            return None
        return _flip(level, hi_r), _flip(level, lo_r), lo_c, hi_c

    def count(self) -> dict[int, int]:
        rows = self._rows("SELECT zoom_level, COUNT(*) FROM tiles GROUP BY zoom_level")
        return {int(z): int(n) for z, n in rows}

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
            return
        with self._lock, contextlib.suppress(sqlite3.ProgrammingError):
            # Fold the WAL into the file (best effort: a reader's snapshot may hold it).
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _wgs84_bounds(extent: Bounds) -> tuple[float, float, float, float]:
    """Web Mercator metres to lon/lat degrees, rounded to 7 places (about a centimetre)."""
    r = 6378137.0
    lon = [math.degrees(x / r) for x in (extent.xmin, extent.xmax)]
    lat = [
        math.degrees(2 * math.atan(math.exp(y / r)) - math.pi / 2)
        for y in (extent.ymin, extent.ymax)
    ]
    west, east = (max(-180.0, min(180.0, v)) for v in lon)
    south, north = (max(-MAX_LAT, min(MAX_LAT, v)) for v in lat)
    return tuple(round(v, 7) for v in (west, south, east, north))  # type: ignore[return-value]


SIDECARS = ("-wal", "-shm", "-journal")
#: How long :func:`replace_mbtiles` waits for readers to let it write, in seconds.
REPLACE_TIMEOUT = 60.0


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _settle(path: Path) -> None:
    """Fold ``path``'s WAL into it and leave it in rollback-journal mode with no sidecar
    (no other connection may have it open)."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()


def replace_mbtiles(new: Path, final: Path) -> None:
    """Make the SQLite file ``final`` hold what ``new`` holds, then remove ``new``.

    When ``final`` exists its content is replaced through SQLite's backup API in one write
    transaction, so connections open on it (``tiledelta serve``) keep working and see the
    old tiles or the new ones, never a mix; its ``-wal``/``-shm`` stay its own. Otherwise
    ``new`` is renamed to ``final`` after removing sidecars no file owns.
    """
    new, final = Path(new), Path(final)
    try:
        _settle(new)
        if not final.exists():
            for suffix in SIDECARS:  # left by a file that is gone: they would corrupt ``new``
                with contextlib.suppress(FileNotFoundError):
                    _sidecar(final, suffix).unlink()
            os.replace(new, final)
            return
        src = sqlite3.connect(new.absolute().as_uri() + "?mode=ro", uri=True)
        dst = sqlite3.connect(final, timeout=REPLACE_TIMEOUT, isolation_level=None)
        try:
            src.backup(dst)
            with contextlib.suppress(sqlite3.Error):
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()
            src.close()
    except sqlite3.OperationalError as exc:
        raise sqlite_error(exc, final) from exc
    except sqlite3.DatabaseError as exc:
        raise CacheError(f"cannot replace {final} with the new cache ({exc})") from exc
    for p in (new, *(_sidecar(new, s) for s in SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
