"""Read-only access to Compact Tile Packages (.tpkx): a zip of root.json + V2 bundles.

ArcGIS stores the bundles uncompressed, so tiles are read straight from the
zip file at their absolute offset; a deflated bundle is inflated once and
kept in memory instead.

Some ArcGIS-written packages (Esri's own sample Usa.tpkx, levels 0 and 1)
hold PNG tiles whose first 4 signature bytes were overwritten by the length
prefix; :func:`repair_png` puts the signature back so such tiles decode.
"""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tiledelta.errors import CacheError, SchemeError
from tiledelta.grid import (
    TilingScheme,
    bundle_name,
    bundle_origin,
    is_web_mercator,
    record_index,
    record_tile,
    scheme_from_tile_info,
    web_mercator,
)
from tiledelta.grid.esri import esri_tile_format
from tiledelta.stores.base import Addr, TileStore
from tiledelta.stores.compact import DATA_START, parse_bundle_index, read_record

_MEMBER_RE = re.compile(r"^L(\d{2,})/R([0-9a-fA-F]{4,})C([0-9a-fA-F]{4,})\.bundle$")
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_PNG_TAIL = b"\r\n\x1a\n\x00\x00\x00\rIHDR"  # a PNG stream missing its first 4 bytes


def repair_png(data: bytes) -> bytes:
    """Restore the 4-byte PNG signature when a tile lost it (else return ``data`` as is)."""
    if data.startswith(_PNG_TAIL):
        return b"\x89PNG" + data
    return data


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of an open file."""

    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self._fh, self._start, self._size, self._pos = fh, start, size, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n < 0 else min(n, self._size - self._pos)
        if n <= 0:
            return b""
        self._fh.seek(self._start + self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data


def scheme_from_root_json(root: dict[str, Any], name: str | None = None) -> TilingScheme:
    """The tiling scheme of a tile package's root.json (the grid only: no data extent)."""
    info = root.get("tileInfo")
    if not isinstance(info, dict):
        raise CacheError("root.json has no tileInfo")
    try:
        scheme = scheme_from_tile_info(
            {
                **info,
                "spatialReference": info.get("spatialReference") or root.get("spatialReference"),
            },
            name=name if name is not None else str(root.get("name") or "custom"),
        )
    except SchemeError as exc:
        raise CacheError(f"root.json: {exc}") from None
    if is_web_mercator(scheme):
        scheme = scheme.model_copy(update={"extent": web_mercator().extent})
    return scheme


class TpkxReader(TileStore):
    """A .tpkx tile package opened read-only (``put_many`` raises :class:`CacheError`)."""

    kind = "tpkx"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise CacheError(f"cannot open tile package {self.path}: {exc.strerror}") from exc
        try:
            self._zip = zipfile.ZipFile(self._fh)
            self.root: dict[str, Any] = json.loads(self._zip.read("root.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
            self._fh.close()
            raise CacheError(f"{self.path} is not a tile package (.tpkx): {exc}") from exc
        self.scheme = scheme_from_root_json(self.root)
        image = self.root.get("tileImageInfo") or {}
        self.fmt = esri_tile_format(str(image.get("format", "MIXED")))
        base = str(self.root.get("tileBundlesPath", "./tile")).removeprefix("./").strip("/")
        self._prefix = f"{base}/" if base else ""
        self._members: dict[tuple[int, int, int], zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if not info.filename.startswith(self._prefix):
                continue
            m = _MEMBER_RE.match(info.filename[len(self._prefix) :])
            if m:
                key = (int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16))
                self._members[key] = info
        self._indexes: dict[tuple[int, int, int], np.ndarray] = {}
        self._inflated: dict[tuple[int, int, int], bytes] = {}
        self._lock = threading.Lock()

    def _stream(self, key: tuple[int, int, int]) -> BinaryIO:
        """A seekable stream over one bundle member."""
        info = self._members[key]
        if info.compress_type == zipfile.ZIP_STORED:
            self._fh.seek(info.header_offset)
            sig, name_len, extra_len = _LOCAL_HEADER.unpack(self._fh.read(_LOCAL_HEADER.size))
            if sig != b"PK\x03\x04":
                raise CacheError(f"{self.path}: bad zip entry {info.filename}")
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            return _Window(self._fh, start, info.file_size)  # type: ignore[return-value]
        data = self._inflated.get(key)
        if data is None:
            data = self._zip.read(info)
            self._inflated = {key: data}  # keep only the latest inflated bundle
        return io.BytesIO(data)

    def _index(self, key: tuple[int, int, int], stream: BinaryIO) -> np.ndarray:
        index = self._indexes.get(key)
        if index is None:
            stream.seek(0)
            index = parse_bundle_index(stream.read(DATA_START), f"{self.path}:{key}")
            self._indexes[key] = index
        return index

    @staticmethod
    def _key(level: int, row: int, col: int) -> tuple[int, int, int]:
        return (level, *bundle_origin(row, col))

    def get(self, level: int, row: int, col: int) -> bytes | None:
        key = self._key(level, row, col)
        if row < 0 or col < 0 or key not in self._members:
            return None
        with self._lock:
            stream = self._stream(key)
            index = self._index(key, stream)
            src = f"{self.path}:{bundle_name(row, col)}"
            data = read_record(stream, index, record_index(row, col), src)
        return None if data is None else repair_png(data)

    def get_many(self, addrs: Iterable[Addr]) -> dict[Addr, bytes]:
        return super().get_many(sorted(addrs))

    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        for key in sorted(self._members):
            if level is not None and key[0] != level:
                continue
            with self._lock:
                index = self._index(key, self._stream(key))
            for pos in np.flatnonzero(index >> np.uint64(40)).tolist():
                yield (key[0], *record_tile(key[1], key[2], pos))

    def put_many(self, tiles: Iterable[tuple[int, int, int, bytes | None]]) -> int:
        raise CacheError(f"{self.path} is a tile package; it is read-only")

    def close(self) -> None:
        self._zip.close()
        self._fh.close()


def open_tpkx(path: Path | str) -> TpkxReader:
    """Open a Compact Tile Package (.tpkx) for reading."""
    return TpkxReader(Path(path))
