"""Open a cache by kind, or a project's cache as its configuration describes it."""

from __future__ import annotations

from pathlib import Path

from tiledelta.errors import CacheError, ConfigError
from tiledelta.grid import TilingScheme, is_web_mercator, tile_format, up_to_level
from tiledelta.project import Project
from tiledelta.stores.base import TileStore
from tiledelta.stores.compact import CompactCache
from tiledelta.stores.mbtiles import MBTilesStore
from tiledelta.stores.xyz import XYZStore

KINDS = ("compact", "mbtiles", "xyz")


def _require_web_mercator(scheme: TilingScheme) -> None:
    if not is_web_mercator(scheme):
        raise CacheError(
            "MBTiles/XYZ caches need the Web Mercator scheme; "
            f"use --cache compact for {scheme.name}"
        )


def open_store(
    kind: str,
    path: Path,
    scheme: TilingScheme,
    *,
    fmt: str = "png",
    quality: int = 75,
    create: bool = True,
    readonly: bool = False,
) -> TileStore:
    """Open (and with ``create`` make) a tile cache of ``kind`` compact | mbtiles | xyz.

    With ``readonly`` the cache must exist and is never written, not even its metadata
    (the format is the one it records, ``fmt`` and ``quality`` are ignored); the store is
    safe from many threads and treats a tile file or bundle whose real path lies outside
    ``path`` as absent.

    Raises :class:`CacheError` when ``path`` holds a cache of another scheme or
    kind, when it holds none and ``create`` is false (or ``readonly``), or when
    MBTiles / XYZ is asked for a scheme other than Web Mercator.
    """
    path = Path(path)
    tf = tile_format(fmt)
    if kind == "compact":
        if readonly:
            return CompactCache.open_existing(path, scheme)
        return CompactCache(path, scheme, fmt=tf.name, quality=quality, create=create)
    if kind == "mbtiles":
        _require_web_mercator(scheme)
        return MBTilesStore(path, scheme, fmt=tf.name, create=create, readonly=readonly)
    if kind == "xyz":
        _require_web_mercator(scheme)
        return XYZStore(path, scheme, fmt=tf.name, create=create, readonly=readonly)
    raise ConfigError(f"unknown cache kind {kind!r}; use {', '.join(KINDS)}")


def open_project_store(
    project: Project,
    *,
    create: bool = True,
    readonly: bool = False,
    max_level: int | None = None,
    path: Path | None = None,
) -> TileStore:
    """The project's cache (or one at ``path`` with the same settings).

    ``max_level`` lists LODs beyond the configured ones (to remove tiles of levels that
    were dropped from the project). ``readonly``: see :func:`open_store`.
    """
    c = project.config.cache
    scheme = project.cache_scheme if max_level is None else up_to_level(project.scheme, max_level)
    return open_store(
        c.kind,
        project.cache_path if path is None else path,
        scheme,
        fmt=c.format,
        quality=c.quality,
        create=create,
        readonly=readonly,
    )


def read_compact_cache(path: Path | str) -> CompactCache:
    """Open an existing compact cache read-only by its folder (or its conf.xml)."""
    return CompactCache.open_existing(Path(path))
