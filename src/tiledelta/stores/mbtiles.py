"""MBTiles 1.3 (SQLite) tile store, Web Mercator only.

Rows are stored TMS-style (``tile_row = 2**z - 1 - row``). Each ``put_many``
is one SQLite transaction in WAL mode, so it lands entirely or not at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from tiledelta.errors import CacheError
from tiledelta.grid import TilingScheme, tile_format
from tiledelta.stores.base import Addr, TileStore, mismatch_error

WORLD_BOUNDS = "-180.0,-85.0511287798066,180.0,85.0511287798066"
SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (name TEXT, value TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS metadata_name ON metadata (name);
CREATE TABLE IF NOT EXISTS tiles (
    zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS tile_index ON tiles (zoom_level, tile_column, tile_row);
"""


def _flip(level: int, row: int) -> int:
    return (1 << level) - 1 - row


class MBTilesStore(TileStore):
    """An MBTiles file. One connection, shared by threads under a lock."""

    kind = "mbtiles"

    def __init__(
        self, path: Path, scheme: TilingScheme, *, fmt: str = "png", create: bool = True
    ) -> None:
        self.path = Path(path)
        self.scheme = scheme
        self.fmt = tile_format(fmt).name
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise mismatch_error(self.path, "a folder, not an MBTiles file")
        existed = self.path.exists()
        if not existed and not create:
            raise CacheError(f"{self.path} does not exist (no MBTiles cache there)")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            what = f"something that is not an MBTiles file ({exc})"
            raise mismatch_error(self.path, what) from exc
        meta = self.metadata()
        stored = meta.get("tiledelta_scheme")
        if stored is not None:
            try:
                old = TilingScheme.model_validate_json(stored)
            except ValidationError as exc:
                self.close()
                raise CacheError(f"{self.path}: unreadable tiledelta_scheme metadata") from exc
            if not old.same_grid(scheme):
                self.close()
                raise mismatch_error(
                    self.path, f"an MBTiles cache with a different tiling scheme ({old.name})"
                )
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
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def metadata(self) -> dict[str, str]:
        """The metadata table as a dict."""
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM metadata").fetchall())

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
        with self._lock:
            hit = self._db.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (level, col, _flip(level, row)),
            ).fetchone()
        return None if hit is None else bytes(hit[0])

    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        sql = "SELECT zoom_level, tile_column, tile_row FROM tiles"
        args: tuple[int, ...] = ()
        if level is not None:
            sql += " WHERE zoom_level=?"
            args = (level,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY zoom_level, tile_row DESC, tile_column", args)
            found = rows.fetchall()
        for z, col, tms_row in found:
            yield z, _flip(z, tms_row), col

    def count(self) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT zoom_level, COUNT(*) FROM tiles GROUP BY zoom_level"
            ).fetchall()
        return {int(z): int(n) for z, n in rows}

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()
