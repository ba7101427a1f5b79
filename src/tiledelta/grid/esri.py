"""Esri facts, each written once: well-known ids, unit conversions, tile format names,
and the Compact Cache bundle arithmetic (128 × 128 tiles a bundle, records row-major).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiledelta.errors import ConfigError

#: Esri's ids for Web Mercator (Auxiliary Sphere), which EPSG calls 3857.
WEB_MERCATOR_WKIDS = frozenset({102100, 102113, 900913, 3857})
#: ArcGIS relates scale and resolution with 39.37 inches per metre (a US survey inch):
#: 591657527.591555 / 156543.033928 = 96 × 39.37.
INCHES_PER_METER = 39.37
#: The XML namespace of conf.xml, conf.cdi and service definitions' typens.
ESRI_NS = "http://www.esri.com/schemas/ArcGIS/10.0"
#: Tiles per bundle side in a Compact Cache V2 (and a tile package).
BUNDLE_PACKET = 128


def normalize_wkid(wkid: int | None) -> int | None:
    """102100 for every Web Mercator id, any other id unchanged."""
    return 102100 if wkid in WEB_MERCATOR_WKIDS else wkid


def esri_units(meters_per_unit: float, geographic: bool) -> str:
    """The ``units`` string of a MapServer document for a CRS."""
    if geographic:
        return "esriDecimalDegrees"
    if math.isclose(meters_per_unit, 1.0):
        return "esriMeters"
    if math.isclose(meters_per_unit, 0.3048, rel_tol=1e-5):
        return "esriFeet"
    return "esriUnknownUnits"


def inches_per_unit(meters_per_unit: float) -> float:
    """Inches per map unit as ArcGIS counts them (39.37 per metre, 12 per foot)."""
    if math.isclose(meters_per_unit, 0.3048, rel_tol=1e-5):  # international and US survey foot
        return 12.0
    return INCHES_PER_METER * meters_per_unit


# --- tile formats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TileFormat:
    """How one tile format name is spelled by each cache kind."""

    name: str  #: tiledelta name: png | png8 | jpeg | mixed
    esri: str  #: conf.xml CacheTileFormat / root.json tileInfo.format
    ext: str | None  #: XYZ file extension; None = decided per tile (mixed)
    mbtiles: str  #: MBTiles metadata ``format``


FORMATS: dict[str, TileFormat] = {
    "png": TileFormat("png", "PNG32", ".png", "png"),
    "png8": TileFormat("png8", "PNG8", ".png", "png"),
    "jpeg": TileFormat("jpeg", "JPEG", ".jpg", "jpg"),
    "mixed": TileFormat("mixed", "MIXED", None, "png"),
}
#: Image formats a Compact Cache / tile package may declare, and tiledelta's name for each.
ESRI_FORMATS = {
    "PNG": "png", "PNG24": "png", "PNG32": "png", "PNG8": "png8", "JPEG": "jpeg", "JPG": "jpeg",
    "MIXED": "mixed",
}  # fmt: skip
_ALIASES = {"jpg": "jpeg", "png32": "png", "png24": "png"}


def tile_format(fmt: str) -> TileFormat:
    """The :class:`TileFormat` for a format name (case-insensitive; jpg/png32 accepted)."""
    key = fmt.lower()
    key = _ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        raise ConfigError(f"unknown tile format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def esri_tile_format(esri: str) -> str:
    """tiledelta's name for an Esri format name (unknown names read as mixed)."""
    return ESRI_FORMATS.get(esri.upper(), "mixed")


# --- bundle arithmetic ----------------------------------------------------------------------


def bundle_origin(row: int, col: int) -> tuple[int, int]:
    """(row, col) of the first tile of the bundle that holds tile (``row``, ``col``)."""
    return row - row % BUNDLE_PACKET, col - col % BUNDLE_PACKET


def bundle_name(row: int, col: int) -> str:
    """File name of the bundle holding tile (row, col): ``R{row0:04x}C{col0:04x}.bundle``."""
    r0, c0 = bundle_origin(row, col)
    return f"R{r0:04x}C{c0:04x}.bundle"


def record_index(row: int, col: int) -> int:
    """Position of tile (``row``, ``col``) in its bundle's index (row-major)."""
    return BUNDLE_PACKET * (row % BUNDLE_PACKET) + col % BUNDLE_PACKET


def record_tile(row0: int, col0: int, pos: int) -> tuple[int, int]:
    """(row, col) of index position ``pos`` in the bundle starting at (``row0``, ``col0``)."""
    return row0 + pos // BUNDLE_PACKET, col0 + pos % BUNDLE_PACKET
