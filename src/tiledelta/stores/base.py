"""The tile store interface shared by every cache kind, and atomic file writes.

A store maps tile addresses ``(level, row, col)`` (rows from the top, as in
ArcGIS) to encoded image bytes. Writes go through :meth:`TileStore.put_many`,
which each implementation makes atomic per file: a crash leaves every bundle
or tile file either entirely old or entirely new.
"""

from __future__ import annotations

import abc
import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from tiledelta.errors import CacheError
from tiledelta.grid import TilingScheme

TileData = bytes
Addr = tuple[int, int, int]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TMP_SUFFIX = ".tmp"


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
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    On any failure the temp file is removed and ``path`` is left as it was.
    With ``sync_dir`` false the caller fsyncs the folder itself (batching).
    """
    fd, tmp = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def mismatch_error(path: Path, what: str) -> CacheError:
    """The one-line error for a cache path that already holds something else."""
    return CacheError(f"{path} already holds {what}; choose another --cache path or delete it")


class TileStore(abc.ABC):
    """A tile cache: read, write and list encoded tiles by (level, row, col)."""

    kind: str
    path: Path
    scheme: TilingScheme

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

    def count(self) -> dict[int, int]:
        """Number of stored tiles per level (levels without tiles are left out)."""
        counts: dict[int, int] = {}
        for level, _row, _col in self.iter_tiles():
            counts[level] = counts.get(level, 0) + 1
        return counts

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
