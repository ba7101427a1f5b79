"""The tile store interface shared by every cache kind, and atomic file writes.

A store maps tile addresses ``(level, row, col)`` (rows from the top, as in
ArcGIS) to encoded image bytes. Writes go through :meth:`TileStore.put_many`,
which each implementation makes atomic per file: a crash leaves every bundle
or tile file either entirely old or entirely new.

A store opened read-only (``open_store(..., readonly=True)``) never writes, is safe
from many threads, and refuses a tile file or bundle whose real path lies outside the
cache folder (a symlink pointing elsewhere): ``tiledelta serve`` reads through it.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tiledelta.errors import CacheError, os_error
from tiledelta.grid import Bounds, TilingScheme

log = logging.getLogger(__name__)

TileData = bytes
Addr = tuple[int, int, int]
#: Inclusive (row0, row1, col0, col1) of a level's stored tiles.
TileRange = tuple[int, int, int, int]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TMP_SUFFIX = ".tmp"
#: Largest tile a store holds or reads: a bundle index record has 3 bytes of size.
MAX_TILE_BYTES = (1 << 24) - 1
#: How many addresses :meth:`TileStore.stored_range` looks at, at most, by default.
RANGE_SCAN_LIMIT = 1_000_000


@dataclass(frozen=True)
class TileHit:
    """A stored tile: its bytes and the modification time of the file holding it."""

    data: bytes
    mtime: float


def sniff_extension(data: bytes) -> str:
    """``.png`` or ``.jpg`` from a tile's magic bytes; :class:`CacheError` otherwise."""
    if data.startswith(PNG_MAGIC):
        return ".png"
    if data.startswith(JPEG_MAGIC):
        return ".jpg"
    raise CacheError("tile data is neither PNG nor JPEG (cannot pick a file extension)")


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or unlink in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_temp(path: Path) -> tuple[int, str]:
    """Create a fresh temp file next to ``path`` (mode 0666 minus umask, unlike mkstemp)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            # O_BINARY: without it Windows opens the descriptor in text mode and turns
            # every LF byte of a tile into CR LF (tempfile.mkstemp adds it for the same reason)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    On any failure the temp file is removed and ``path`` is left as it was.
    With ``sync_dir`` false the caller fsyncs the folder itself (batching).
    """
    try:
        fd, tmp = open_temp(path)
    except OSError as exc:
        raise os_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise os_error(exc, path) from exc
        raise
    if sync_dir:
        fsync_dir(path.parent)


def confined(root: str, path: Path) -> str | None:
    """``path`` resolved (symlinks followed) when it lies inside the folder ``root`` (itself
    resolved), else None, with a warning."""
    real = os.path.realpath(path)
    try:
        if os.path.commonpath([root, real]) == root:
            return real
    except ValueError:  # different drives
        pass
    log.warning("refused %s: it resolves to %s, outside the cache %s", path, real, root)
    return None


def read_regular_file(real: str) -> TileHit | None:
    """A regular file's bytes and mtime, never following a symlink; None (never raising) when
    absent, not a regular file, empty, over :data:`MAX_TILE_BYTES` or unreadable."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # ELOOP (a symlink swapped in), EACCES, ...
        log.warning("cannot read tile %s: %s", real, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TILE_BYTES:
            return None
        data = fh.read(MAX_TILE_BYTES + 1)
    if not data or len(data) > MAX_TILE_BYTES:
        return None
    return TileHit(data, st.st_mtime)


def mismatch_error(path: Path, what: str) -> CacheError:
    """The one-line error for a cache path that already holds something else."""
    return CacheError(f"{path} already holds {what}; choose another --cache path or delete it")


class TileStore(abc.ABC):
    """A tile cache: read, write and list encoded tiles by (level, row, col)."""

    kind: str
    path: Path
    scheme: TilingScheme
    #: Opened read-only: never writes, safe from many threads, confined to its folder.
    readonly: bool = False

    @abc.abstractmethod
    def put_many(self, tiles: Iterable[tuple[int, int, int, bytes | None]]) -> int:
        """Store ``(level, row, col, data)`` tiles; ``data`` None deletes the tile.

        Returns how many tiles were written plus how many stored tiles were
        deleted. Atomic per bundle / tile file.
        """

    @abc.abstractmethod
    def get(self, level: int, row: int, col: int) -> bytes | None:
        """The stored bytes of a tile, or None when there is no such tile."""

    @abc.abstractmethod
    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        """Addresses of the stored tiles (of one level, or all)."""

    def get_many(self, addrs: Iterable[Addr]) -> dict[Addr, bytes]:
        """Stored tiles among ``addrs`` (missing ones are left out)."""
        out: dict[Addr, bytes] = {}
        for level, row, col in addrs:
            data = self.get(level, row, col)
            if data is not None:
                out[(level, row, col)] = data
        return out

    def verify(self, addrs: Iterable[Addr]) -> None:
        """Raise :class:`CacheError` when what the store holds for ``addrs`` (and, in a
        bundle, beside them) cannot be read back whole: a run checks before it writes."""
        self.get_many(addrs)

    def count(self) -> dict[int, int]:
        """Number of stored tiles per level (levels without tiles are left out)."""
        counts: dict[int, int] = {}
        for level, _row, _col in self.iter_tiles():
            counts[level] = counts.get(level, 0) + 1
        return counts

    def get_hit(self, level: int, row: int, col: int) -> TileHit | None:
        """The stored tile with the modification time of the file holding it (what HTTP
        validators need), or None when there is no such tile (or it is empty)."""
        data = self.get(level, row, col)
        if not data:
            return None
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as exc:
            raise CacheError(f"cannot read {self.path}: {exc.strerror}") from exc
        return TileHit(data, mtime)

    def stored_range(self, level: int) -> TileRange | None:
        """Inclusive (row0, row1, col0, col1) of the stored tiles of ``level``, or None when
        it has none. By default from the first :data:`RANGE_SCAN_LIMIT` addresses listed."""
        rows: list[int] = []
        cols: list[int] = []
        for _lv, row, col in itertools.islice(self.iter_tiles(level), RANGE_SCAN_LIMIT):
            rows.append(row)
            cols.append(col)
        if not rows:
            return None
        return min(rows), max(rows), min(cols), max(cols)

    def stored_extent(self) -> Bounds | None:
        """The data extent the cache records (a compact cache's ``conf.cdi``), or None."""
        return None

    def _check_writable(self) -> None:
        if self.readonly:
            raise CacheError(f"{self.path} was opened read-only")

    def set_metadata(  # noqa: B027 - optional hook, not abstract
        self, *, extent: Bounds | None, name: str, levels: list[int]
    ) -> None:
        """Record what the cache covers (data extent, name, levels), as the format keeps it.

        Seeds and updates call it last, from the same data, so an updated cache's
        metadata equals a fresh seed's.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release files and connections (the store is unusable afterwards)."""

    def __enter__(self) -> TileStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} ({self.scheme.name})>"
