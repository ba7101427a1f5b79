"""Plain ``{z}/{x}/{y}.png`` (or ``.jpg``) tile folders, Web Mercator only.

``x`` is the column and ``y`` the row from the top. Every tile file is written
to a temp file and renamed into place; a ``tiledelta.json`` marker at the root
records the scheme and format so a different scheme is refused later. Read-only, a tile
file is read only when its real path lies inside the folder and it is a regular file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from tiledelta.errors import CacheError
from tiledelta.grid import TilingScheme, tile_format
from tiledelta.stores.base import (
    TMP_SUFFIX,
    Addr,
    TileHit,
    TileStore,
    atomic_write,
    confined,
    fsync_dir,
    mismatch_error,
    read_regular_file,
    sniff_extension,
)

MARKER = "tiledelta.json"
EXTENSIONS = (".png", ".jpg")


class XYZStore(TileStore):
    """A folder of ``z/x/y.ext`` tile files. Read-only (``readonly``) the folder must hold a
    marker, whose format is taken as is (the marker is never rewritten)."""

    kind = "xyz"

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
        self.readonly = readonly
        self._root = os.path.realpath(self.path)
        self._set_format(fmt)
        marker = self.path / MARKER
        if self.path.exists() and not self.path.is_dir():
            raise mismatch_error(self.path, "a file, not an XYZ tile folder")
        if (self.path / "conf.xml").exists() or (self.path / "_alllayers").exists():
            raise mismatch_error(self.path, "an Esri compact cache")
        if marker.is_file():
            try:
                info = json.loads(marker.read_text(encoding="utf-8"))
                old = TilingScheme.model_validate(info["scheme"])
            except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
                raise CacheError(
                    f"{marker} is unreadable; choose another --cache path or delete it"
                ) from exc
            if info.get("kind") != "xyz":
                raise mismatch_error(self.path, f"a {info.get('kind')} cache")
            if not old.same_grid(scheme):
                raise mismatch_error(
                    self.path, f"an XYZ cache with a different tiling scheme ({old.name})"
                )
            if readonly and info.get("format"):
                self._set_format(info["format"])
            if readonly or info.get("format") == self.fmt:
                return
        elif not create or readonly:
            raise CacheError(f"{self.path} is not a tiledelta XYZ cache (no {MARKER})")
        self.path.mkdir(parents=True, exist_ok=True)
        payload = {"kind": "xyz", "format": self.fmt, "scheme": scheme.model_dump(mode="json")}
        atomic_write(marker, json.dumps(payload, indent=2).encode())

    def _set_format(self, fmt: str) -> None:
        self.fmt = tile_format(fmt).name
        self._ext = tile_format(fmt).ext

    def tile_path(self, level: int, row: int, col: int, ext: str = ".png") -> Path:
        """Path of a tile file (``ext`` .png or .jpg)."""
        return self.path / str(level) / str(col) / f"{row}{ext}"

    def _candidates(self, level: int, row: int, col: int) -> list[Path]:
        exts = [self._ext] if self._ext else []
        exts += [e for e in EXTENSIONS if e not in exts]
        return [self.tile_path(level, row, col, e) for e in exts]

    def get(self, level: int, row: int, col: int) -> bytes | None:
        hit = self.get_hit(level, row, col)
        return None if hit is None else hit.data

    def get_hit(self, level: int, row: int, col: int) -> TileHit | None:
        for p in self._candidates(level, row, col):
            if self.readonly:
                real = confined(self._root, p)
                if real is None:
                    return None
                hit = read_regular_file(real)
            else:
                hit = _read_file(p)
            if hit is not None:
                return hit
        return None

    def put_many(self, tiles: Iterable[tuple[int, int, int, bytes | None]]) -> int:
        self._check_writable()
        changed = 0
        dirs: set[Path] = set()
        todo: dict[Addr, bytes | None] = {}
        for level, row, col, data in tiles:
            self.scheme.lod(level)
            if not (0 <= row < 1 << level and 0 <= col < 1 << level):
                raise CacheError(f"tile {level}/{row}/{col} is outside the Web Mercator grid")
            todo[(level, row, col)] = data
        for (level, row, col), data in todo.items():
            if data is None:
                for p in self._candidates(level, row, col):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        changed += 1
                        dirs.add(p.parent)
                continue
            ext = self._ext or sniff_extension(data)
            target = self.tile_path(level, row, col, ext)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data, sync_dir=False)
            dirs.add(target.parent)
            changed += 1
            for other in self._candidates(level, row, col):
                if other != target:
                    with contextlib.suppress(FileNotFoundError):
                        other.unlink()
        for d in dirs:
            fsync_dir(d)
        return changed

    def iter_tiles(self, level: int | None = None) -> Iterator[Addr]:
        for zdir in _numeric_children(self.path):
            z = int(zdir.name)
            if level is not None and z != level:
                continue
            for xdir in _numeric_children(zdir):
                rows: set[int] = set()
                with os.scandir(xdir) as it:
                    for entry in it:
                        stem, ext = os.path.splitext(entry.name)
                        if (
                            ext in EXTENSIONS
                            and stem.isdigit()
                            and not entry.name.endswith(TMP_SUFFIX)
                        ):
                            rows.add(int(stem))
                for y in sorted(rows):
                    yield z, y, int(xdir.name)


def _read_file(path: Path) -> TileHit | None:
    """A tile file's bytes and mtime, None when absent; :class:`CacheError` when unreadable."""
    try:
        with open(path, "rb") as fh:
            return TileHit(fh.read(), os.fstat(fh.fileno()).st_mtime)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"cannot read tile {path}: {exc.strerror}") from exc


def _numeric_children(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.isdigit() and p.is_dir()),
                  key=lambda p: int(p.name))  # fmt: skip
