"""Tile caches behind one interface (:class:`TileStore`): Esri Compact Cache V2, MBTiles,
XYZ folders, and a read-only .tpkx tile package."""

from tiledelta.stores.base import TileData, TileHit, TileRange, TileStore
from tiledelta.stores.compact import CompactCache
from tiledelta.stores.mbtiles import MBTilesStore, replace_mbtiles
from tiledelta.stores.open import KINDS, open_project_store, open_store, read_compact_cache
from tiledelta.stores.tpkx import TpkxReader, open_tpkx, scheme_from_root_json
from tiledelta.stores.xyz import XYZStore

__all__ = [
    "KINDS",
    "CompactCache",
    "MBTilesStore",
    "TileData",
    "TileHit",
    "TileRange",
    "TileStore",
    "TpkxReader",
    "XYZStore",
    "open_project_store",
    "open_store",
    "open_tpkx",
    "read_compact_cache",
    "replace_mbtiles",
    "scheme_from_root_json",
]
