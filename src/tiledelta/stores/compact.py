"""Esri Compact Cache V2: ``conf.xml``, ``conf.cdi`` and ``_alllayers/Lnn/RrrrrCcccc.bundle``.

A bundle holds up to 128×128 tiles: a 64-byte header, an index of 16384
8-byte records (``offset | size << 40``, row-major, size 0 = no tile), then
the tile bytes, each preceded by its 4-byte little-endian length. Bundles are
rewritten whole (temp file, fsync, rename), so readers never see a torn one; one
``put_many`` writes all its bundles' temp files, syncs them, then renames them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tiledelta.errors import CacheError, os_error
from tiledelta.grid import (
    BUNDLE_PACKET,
    Bounds,
    TilingScheme,
    bundle_name,
    conf_cdi_xml,
    conf_tile_format,
    read_conf_cdi,
    record_index,
    record_tile,
    scheme_from_conf_xml,
    scheme_to_conf_xml,
    tile_format,
)
from tiledelta.stores.base import (
    MAX_TILE_BYTES,
    TMP_SUFFIX,
    Addr,
    TileHit,
    TileStore,
    atomic_write,
    confined,
    fsync_dir,
    mismatch_error,
    open_temp,
)

log = logging.getLogger(__name__)

PACKET = BUNDLE_PACKET
RECORDS = PACKET * PACKET
HEADER = struct.Struct("<4I3Q6I")
HEADER_SIZE = HEADER.size  # 64
INDEX_SIZE = RECORDS * 8
DATA_START = HEADER_SIZE + INDEX_SIZE
MAX_TILE_SIZE = MAX_TILE_BYTES  # 3 bytes of size in an index record
OFFSET_MASK = (1 << 40) - 1
_BUNDLE_RE = re.compile(r"^R([0-9a-fA-F]{4,})C([0-9a-fA-F]{4,})\.bundle$")
_LEVEL_RE = re.compile(r"^L(\d{2,})$")
#: Bundles a ``put_many`` stages (open temp files) before it syncs and renames them.
SYNC_BATCH = 64


# --------------------------------------------------------------------- bundles


def parse_bundle_index(head: bytes, source: str = "bundle") -> np.ndarray:
    """The 16384 index records (uint64, row-major) from a bundle's first 131136 bytes.

    Lenient about the header: ArcGIS writes other values than the published
    spec in record count and legacy fields, so only the length is checked.
    """
    if len(head) < DATA_START:
        raise CacheError(f"{source}: truncated bundle ({len(head)} bytes, no full index)")
    return np.frombuffer(head, dtype="<u8", count=RECORDS, offset=HEADER_SIZE)


def read_record(fh: BinaryIO, index: np.ndarray, pos: int, source: str) -> bytes | None:
    """The tile bytes of index record ``pos`` (row-major position), read from ``fh``."""
    rec = int(index[pos])
    size = rec >> 40
    if size == 0:
        return None
    fh.seek(rec & OFFSET_MASK)
    data = fh.read(size)
    if len(data) != size:
        raise CacheError(f"{source}: tile record {pos} points past the end of the bundle")
    return data


def build_bundle(tiles: Mapping[int, bytes]) -> bytes:
    """A complete V2 bundle from {row-major position: tile bytes}; equal tiles stored once."""
    index = np.zeros(RECORDS, dtype="<u8")
    chunks: list[bytes] = []
    # tile bytes -> its record; a dict of bytes compares contents on equal hashes (and a
    # bytes object caches its hash, so shared copies cost nothing)
    seen: dict[bytes, int] = {}
    order = sorted(tiles)
    records: list[int] = []
    pos = DATA_START
    max_size = 0
    for i in order:
        data = tiles[i]
        rec = seen.get(data)
        if rec is None:
            size = len(data)
            if not 0 < size <= MAX_TILE_SIZE:
                raise CacheError(f"tile of {size} bytes cannot be stored in a bundle (1..16 MiB)")
            offset = pos + 4
            chunks.append(struct.pack("<I", size))
            chunks.append(data)
            pos = offset + size
            rec = seen[data] = offset | (size << 40)
            max_size = max(max_size, size)
        records.append(rec)
    if order:
        index[np.array(order, dtype=np.intp)] = np.array(records, dtype="<u8")
    if pos > OFFSET_MASK:
        raise CacheError("bundle would exceed the 1 TiB offset limit")
    header = HEADER.pack(
        3, RECORDS, max_size, 5, 0, pos, 40, 20 + INDEX_SIZE, 3, 16, RECORDS, 5, INDEX_SIZE
    )
    return b"".join([header, index.tobytes(), *chunks])


def read_bundle_tiles(fh: BinaryIO, source: str) -> dict[int, bytes]:
    """Every tile of an open bundle as {row-major position: bytes} (shared copies read once)."""
    fh.seek(0)
    whole = fh.read()  # one read: a bundle is rewritten whole anyway
    index = parse_bundle_index(whole[:DATA_START], source)
    out: dict[int, bytes] = {}
    by_rec: dict[int, bytes] = {}
    used = np.flatnonzero(index >> np.uint64(40))
    for pos, rec in zip(used.tolist(), index[used].tolist(), strict=True):
        data = by_rec.get(rec)
        if data is None:
            start, size = rec & OFFSET_MASK, rec >> 40
            data = whole[start : start + size]
            if len(data) != size:
                raise CacheError(f"{source}: tile record {pos} points past the end of the bundle")
            by_rec[rec] = data
        out[pos] = data
    return out


# ---------------------------------------------------------------------- store


class CompactCache(TileStore):
    """An Esri Compact Cache V2 folder (read-write, or read-only via :meth:`open_existing`).

    Writers are serialised within the process by a lock; across processes the
    caller must hold the project lock (two writers of one bundle would lose tiles,
    though neither could tear it). Read-only, a bundle whose real path lies outside
    the folder is treated as absent.
    """

    kind = "compact"

    def __init__(
        self,
        path: Path,
        scheme: TilingScheme,
        *,
        fmt: str = "png",
        quality: int = 75,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.scheme = scheme
        self.fmt = tile_format(fmt).name
        self.quality = quality
        self.readonly = readonly
        self._lock = threading.Lock()  # serialises writers
        self._cache_lock = threading.Lock()
        # bundle path -> ((st_dev, st_ino, st_mtime_ns, st_size), index)
        self._index_cache: dict[Path, tuple[tuple[int, int, int, int], np.ndarray]] = {}
        self._root = os.path.realpath(self.path)
        if not readonly:
            self._prepare(create)

    @classmethod
    def open_existing(cls, path: Path, scheme: TilingScheme | None = None) -> CompactCache:
        """Open a compact cache read-only; its format comes from conf.xml, and so does its
        scheme unless ``scheme`` is given (then conf.xml must describe the same grid)."""
        folder = path.parent if path.name.lower() == "conf.xml" else path
        conf = folder / "conf.xml"
        if not conf.is_file():
            raise CacheError(f"{folder} is not a compact cache (no conf.xml)")
        stored = scheme_from_conf_xml(conf, name=None)
        if scheme is not None and not stored.same_grid(scheme):
            raise CacheError(f"{folder} holds a compact cache of another tiling scheme")
        fmt, quality = conf_tile_format(conf)
        return cls(folder, scheme or stored, fmt=fmt, quality=quality, create=False, readonly=True)

    # -- layout

    @property
    def layers_dir(self) -> Path:
        return self.path / "_alllayers"

    def level_dir(self, level: int) -> Path:
        return self.layers_dir / f"L{level:02d}"

    def bundle_path(self, level: int, row: int, col: int) -> Path:
        """Path of the bundle file that holds tile (level, row, col)."""
        return self.level_dir(level) / bundle_name(row, col)

    def _prepare(self, create: bool) -> None:
        conf = self.path / "conf.xml"
        if self.path.exists() and not self.path.is_dir():
            raise mismatch_error(self.path, "a file, not a compact cache folder")
        if conf.is_file():
            existing = scheme_from_conf_xml(conf)
            if not existing.same_grid(self.scheme):
                raise mismatch_error(
                    self.path, f"a compact cache with a different tiling scheme ({existing.name})"
                )
            if conf_tile_format(conf)[0] != self.fmt or existing.levels != self.scheme.levels:
                atomic_write(conf, self._conf_xml().encode("utf-8"))
            self._clean_stale_temps()
            return
        if (self.path / "tiledelta.json").exists():
            raise mismatch_error(self.path, "an XYZ tile cache")
        if self.layers_dir.exists():
            raise CacheError(
                f"{self.path} has _alllayers but no conf.xml; "
                "choose another --cache path or delete it"
            )
        if not create:
            raise CacheError(f"{self.path} is not a compact cache (no conf.xml)")
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        if self.scheme.extent is not None:
            atomic_write(self.path / "conf.cdi", conf_cdi_xml(self.scheme.extent).encode())
        atomic_write(conf, self._conf_xml().encode("utf-8"))

    def _conf_xml(self) -> str:
        return scheme_to_conf_xml(self.scheme, self.fmt, self.quality)

    def _clean_stale_temps(self) -> None:
        """Remove temp files a crashed writer left behind (we hold the write side)."""
        for tmp in (*self.path.glob(f"*{TMP_SUFFIX}"), *self.layers_dir.glob(f"L*/*{TMP_SUFFIX}")):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def set_extent(self, bounds: Bounds | None) -> None:
        """Rewrite conf.cdi (the cache's data extent) atomically; None leaves it as is."""
        self._check_writable()
        if bounds is None:
            return
        atomic_write(self.path / "conf.cdi", conf_cdi_xml(bounds).encode())

    def set_metadata(self, *, extent: Bounds | None, name: str, levels: list[int]) -> None:
        """conf.cdi holds the data extent (the scheme's extent when there is no data)."""
        self.set_extent(extent or self.scheme.extent)

    def read_extent(self) -> Bounds | None:
        """The extent in conf.cdi, or None when there is no conf.cdi."""
        cdi = self.path / "conf.cdi"
        return read_conf_cdi(cdi) if cdi.is_file() else None

    def stored_extent(self) -> Bounds | None:
        """The extent in conf.cdi; None when there is none or it is unreadable (a warning)."""
        try:
            return self.read_extent()
        except CacheError as exc:
            log.warning("ignoring conf.cdi: %s", exc)
            return None

    # -- reading

    def _index(self, fh: BinaryIO, bundle: Path) -> np.ndarray:
        """The index of an open bundle, cached while the file is unchanged."""
        st = os.fstat(fh.fileno())
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._index_cache.get(bundle)
        if hit is not None and hit[0] == key:
            return hit[1]
        fh.seek(0)
        index = parse_bundle_index(fh.read(DATA_START), str(bundle))
        with self._cache_lock:
            if len(self._index_cache) >= 256:
                self._index_cache.pop(next(iter(self._index_cache)), None)
            self._index_cache[bundle] = (key, index)
        return index

    def _open_bundle(self, bundle: Path) -> BinaryIO | None:
        """The bundle file opened for reading; None when absent (or, read-only, outside)."""
        if self.readonly and confined(self._root, bundle) is None:
            return None
        try:
            return open(bundle, "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"cannot read bundle {bundle}: {exc.strerror}") from exc

    def get(self, level: int, row: int, col: int) -> bytes | None:
        hit = self.get_hit(level, row, col)
        return None if hit is None else hit.data

    def get_hit(self, level: int, row: int, col: int) -> TileHit | None:
        if row < 0 or col < 0:
            return None
        bundle = self.bundle_path(level, row, col)
        fh = self._open_bundle(bundle)
        if fh is None:
            return None
        with fh:
            index = self._index(fh, bundle)
            data = read_record(fh, index, record_index(row, col), str(bundle))
            return None if data is None else TileHit(data, os.fstat(fh.fileno()).st_mtime)

    def get_many(self, addrs: Iterable[Addr]) -> dict[Addr, bytes]:
        groups: dict[Path, list[Addr]] = {}
        for level, row, col in addrs:
            if row >= 0 and col >= 0:
                groups.setdefault(self.bundle_path(level, row, col), []).append((level, row, col))
        out: dict[Addr, bytes] = {}
        for bundle, members in groups.items():
            fh = self._open_bundle(bundle)
            if fh is None:
                continue
            with fh:
                index = self._index(fh, bundle)
                for addr in members:
                    pos = record_index(addr[1], addr[2])
                    data = read_record(fh, index, pos, str(bundle))
                    if data is not None:
                        out[addr] = data
        return out

    def verify(self, addrs: Iterable[Addr]) -> None:
        """Check every bundle holding one of ``addrs`` whole (a rewrite reads all its
        tiles): a full index, and every record inside the file."""
        bundles = {self.bundle_path(lv, r, c) for lv, r, c in addrs if r >= 0 and c >= 0}
        for bundle in sorted(bundles):
            fh = self._open_bundle(bundle)
            if fh is None:
                continue
            with fh:
                index = self._index(fh, bundle)
                size = os.fstat(fh.fileno()).st_size
            lengths = index >> np.uint64(40)
            used = lengths > 0
            ends = (index & np.uint64(OFFSET_MASK)) + lengths
            starts = index & np.uint64(OFFSET_MASK)
            bad = used & ((ends > size) | (starts < DATA_START))
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise CacheError(
                    f"{bundle}: tile record {pos} points outside the bundle "
                    f"({int(bad.sum())} bad records); delete the bundle or re-seed",
                )

    def _bundles(self, level: int | None) -> Iterator[tuple[int, int, int, Path]]:
        """(level, row0, col0, path) of every bundle file, sorted."""
        if not self.layers_dir.is_dir():
            return
        levels: list[tuple[int, Path]] = []
        for d in self.layers_dir.iterdir():
            m = _LEVEL_RE.match(d.name)
            if m and d.is_dir() and (level is None or int(m.group(1)) == level):
                levels.append((int(m.group(1)), d))
        for lvl, d in sorted(levels):
            found = []
            for f in d.iterdir():
                m = _BUNDLE_RE.match(f.name)
                if m:
                    found.append((int(m.group(1), 16), int(m.group(2), 16), f))
            for row0, col0, f in sorted(found):
                yield lvl, row0, col0, f

    def _bundle_positions(self, bundle: Path) -> np.ndarray:
        fh = self._open_bundle(bundle)
        if fh is None:  # removed meanwhile
            return np.empty(0, dtype=np.intp)
        with fh:
            index = self._index(fh, bundle)
        return np.flatnonzero(index >> np.uint64(40))

    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        for lvl, row0, col0, bundle in self._bundles(level):
            for pos in self._bundle_positions(bundle).tolist():
                yield (lvl, *record_tile(row0, col0, pos))

    def count(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for lvl, _r, _c, bundle in self._bundles(None):
            n = len(self._bundle_positions(bundle))
            if n:
                counts[lvl] = counts.get(lvl, 0) + n
        return counts

    # -- writing

    def put_many(self, tiles: Iterable[tuple[int, int, int, bytes | None]]) -> int:
        self._check_writable()
        # Grouped by (level, bundle row, bundle column): a path per bundle, not per tile.
        groups: dict[tuple[int, int, int], dict[int, bytes | None]] = {}
        levels: set[int] = set()
        for level, row, col, data in tiles:
            if level not in levels:
                self.scheme.lod(level)  # SchemeError for a level outside the scheme
                levels.add(level)
            if row < 0 or col < 0:
                raise CacheError(f"tile {level}/{row}/{col} has a negative row or column")
            if data is not None and not 0 < len(data) <= MAX_TILE_SIZE:
                raise CacheError(f"tile {level}/{row}/{col}: {len(data)} bytes cannot be stored")
            key = (level, row // PACKET, col // PACKET)
            groups.setdefault(key, {})[record_index(row, col)] = data
        changed = 0
        items = [
            (self.bundle_path(lv, r * PACKET, c * PACKET), updates)
            for (lv, r, c), updates in groups.items()
        ]
        with self._lock:
            for i in range(0, len(items), SYNC_BATCH):
                changed += self._rewrite_bundles(items[i : i + SYNC_BATCH])
        return changed

    def _rewrite_bundles(self, items: list[tuple[Path, dict[int, bytes | None]]]) -> int:
        """Rewrite bundles whole, atomically each: every new bundle goes to a temp file
        beside it, the temp files are fsynced, then renamed over the bundles, then each
        folder is fsynced once. A crash leaves each bundle old or new, never torn (a kill
        between two renames: some old, some new, which an update's journal re-plans)."""
        staged: list[tuple[int, str, Path]] = []  # (open fd or -1, temp, bundle)
        gone: list[Path] = []
        changed = 0
        dirs: set[Path] = set()
        at = items[0][0] if items else self.path  # what an error names
        try:
            for bundle, updates in items:
                at = bundle
                n, data = self._updated_bundle(bundle, updates)
                changed += n
                if data is None:
                    continue
                dirs.add(bundle.parent)
                if not data:
                    gone.append(bundle)
                    continue
                bundle.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = open_temp(bundle)
                staged.append((fd, tmp, bundle))
                with memoryview(data) as view:
                    done = 0
                    while done < len(view):
                        done += os.write(fd, view[done:])
            # Syncs after every write: the disk takes them together, not one by one.
            for k, (fd, tmp, bundle) in enumerate(staged):
                at = bundle
                os.fsync(fd)
                os.close(fd)
                staged[k] = (-1, tmp, bundle)
            while staged:
                _fd, tmp, bundle = staged[0]
                at = bundle
                self._index_cache.pop(bundle, None)
                os.replace(tmp, bundle)
                staged.pop(0)
            for bundle in gone:
                at = bundle
                self._index_cache.pop(bundle, None)
                bundle.unlink()
        except BaseException as exc:
            for fd, tmp, _bundle in staged:
                with contextlib.suppress(OSError):
                    if fd >= 0:
                        os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise os_error(exc, at) from exc
            raise
        for d in sorted(dirs):
            fsync_dir(d)
        return changed

    def _updated_bundle(
        self, bundle: Path, updates: dict[int, bytes | None]
    ) -> tuple[int, bytes | None]:
        """(tiles changed, the bundle's new bytes): ``b""`` when it is left empty (to be
        removed), None when there is nothing to write (no bundle, none to add)."""
        fh = self._open_bundle(bundle)
        current: dict[int, bytes] = {}
        if fh is not None:
            with fh:
                current = read_bundle_tiles(fh, str(bundle))
        changed = 0
        for pos, data in updates.items():
            if data is None:
                changed += current.pop(pos, None) is not None
            else:
                current[pos] = data
                changed += 1
        if fh is None and not current:
            return changed, None
        return changed, build_bundle(current) if current else b""
