"""Tiling schemes and tile math: pure functions and validated models, no project state.

- :mod:`~tiledelta.grid.tiles`: :class:`TilingScheme`, :class:`Bounds`, tile bounds and ranges;
- :mod:`~tiledelta.grid.metatiles`: meta-tile bounds, Mapnik's query reach, boxes → meta-tiles;
- :mod:`~tiledelta.grid.esri`: Esri facts (well-known ids, units, formats, bundle arithmetic);
- :mod:`~tiledelta.grid.schemes` and :mod:`~tiledelta.grid.conf_xml`: reading and writing
  schemes as tileInfo, root.json and conf.xml, and choosing levels.
"""

from tiledelta.grid.conf_xml import (
    conf_cdi_xml,
    conf_tile_format,
    read_conf_cdi,
    scheme_from_conf_xml,
    scheme_to_conf_xml,
)
from tiledelta.grid.esri import (
    BUNDLE_PACKET,
    FORMATS,
    INCHES_PER_METER,
    WEB_MERCATOR_WKIDS,
    TileFormat,
    bundle_name,
    bundle_origin,
    esri_units,
    record_index,
    record_tile,
    tile_format,
)
from tiledelta.grid.load import load_scheme
from tiledelta.grid.metatiles import (
    MAPNIK_PIXEL_METERS,
    mapnik_scale_denominator,
    metatile_bounds,
    metatile_grid,
    metatile_tiles,
    metatiles_for_boxes,
    query_pad,
)
from tiledelta.grid.schemes import (
    crs_from_spatial_reference,
    scheme_from_tile_info,
    scheme_inches_per_unit,
    scheme_meters_per_unit,
    scheme_to_root_json,
    scheme_to_tile_info,
    select_levels,
)
from tiledelta.grid.tiles import (
    LOD,
    Bounds,
    TilingScheme,
    covering_tiles,
    grid_size,
    is_web_mercator,
    tile_bounds,
    tile_range,
    up_to_level,
    web_mercator,
)

__all__ = [
    "BUNDLE_PACKET",
    "FORMATS",
    "INCHES_PER_METER",
    "LOD",
    "MAPNIK_PIXEL_METERS",
    "WEB_MERCATOR_WKIDS",
    "Bounds",
    "TileFormat",
    "TilingScheme",
    "bundle_name",
    "bundle_origin",
    "conf_cdi_xml",
    "conf_tile_format",
    "covering_tiles",
    "crs_from_spatial_reference",
    "esri_units",
    "grid_size",
    "is_web_mercator",
    "load_scheme",
    "mapnik_scale_denominator",
    "metatile_bounds",
    "metatile_grid",
    "metatile_tiles",
    "metatiles_for_boxes",
    "query_pad",
    "read_conf_cdi",
    "record_index",
    "record_tile",
    "scheme_from_conf_xml",
    "scheme_from_tile_info",
    "scheme_inches_per_unit",
    "scheme_meters_per_unit",
    "scheme_to_conf_xml",
    "scheme_to_root_json",
    "scheme_to_tile_info",
    "select_levels",
    "tile_bounds",
    "tile_format",
    "tile_range",
    "up_to_level",
    "web_mercator",
]
