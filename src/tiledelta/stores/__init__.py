"""Tile cache stores: Esri Compact Cache V2, MBTiles, XYZ folders, and a .tpkx reader."""

from tiledelta.stores.base import (
    FORMATS,
    TileData,
    TileFormat,
    TileStore,
    open_store,
    read_compact_cache,
    tile_format,
)
from tiledelta.stores.compact import CompactCache, scheme_from_conf_xml, scheme_to_conf_xml
from tiledelta.stores.mbtiles import MBTilesStore
from tiledelta.stores.tpkx import TpkxReader, open_tpkx, scheme_from_root_json
from tiledelta.stores.xyz import XYZStore

__all__ = [
    "FORMATS",
    "CompactCache",
    "MBTilesStore",
    "TileData",
    "TileFormat",
    "TileStore",
    "TpkxReader",
    "XYZStore",
    "open_store",
    "open_tpkx",
    "read_compact_cache",
    "scheme_from_conf_xml",
    "scheme_from_root_json",
    "scheme_to_conf_xml",
    "tile_format",
]
