"""Tiling schemes and tile math.

A :class:`TilingScheme` is an Esri-style tiling scheme: a CRS, a top-left
origin, a tile size in pixels, a DPI and a list of levels of detail (LODs).
Rows grow downwards from the origin, columns to the right, as in ArcGIS.

Everything in this module is pure: no I/O, no global state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator

from tiledelta.errors import SchemeError
from tiledelta.grid.esri import normalize_wkid

WEB_MERCATOR_HALF = 20037508.342787
#: Esri's Web Mercator LOD 0 scale and resolution (ArcGIS Online / Bing / Google scheme).
WEB_MERCATOR_SCALE_0 = 591657527.591555
WEB_MERCATOR_RES_0 = 156543.033928


class Bounds(NamedTuple):
    """An axis-aligned box in scheme (map) units."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float


class LOD(BaseModel):
    """One level of detail."""

    model_config = ConfigDict(frozen=True)

    level: int
    scale: float
    resolution: float


class TilingScheme(BaseModel):
    """A tiling scheme in a projected CRS.

    ``crs`` is anything pyproj accepts ("EPSG:3857", WKT); ``wkid`` is the Esri
    well-known id written to conf.xml / tileInfo when known. ``extent`` bounds
    the grid (tiles outside it are never produced); ``None`` means the grid
    is bounded only by the origin (rows and columns are never negative).
    """

    model_config = ConfigDict(frozen=True)

    name: str = "custom"
    crs: str
    wkid: int | None = None
    latest_wkid: int | None = None
    origin_x: float
    origin_y: float
    tile_width: int = 256
    tile_height: int = 256
    dpi: int = 96
    lods: tuple[LOD, ...]
    extent: Bounds | None = None

    @model_validator(mode="after")
    def _check(self) -> TilingScheme:
        if not self.lods:
            raise SchemeError("tiling scheme has no levels of detail (LODs)")
        levels = [lod.level for lod in self.lods]
        if len(set(levels)) != len(levels):
            raise SchemeError("tiling scheme lists a level id twice")
        if any(lod.resolution <= 0 for lod in self.lods):
            raise SchemeError("tiling scheme has a level with a non-positive resolution")
        if self.tile_width <= 0 or self.tile_height <= 0:
            raise SchemeError("tile size must be positive")
        return self

    @property
    def levels(self) -> list[int]:
        """Level ids, in order."""
        return [lod.level for lod in self.lods]

    def lod(self, level: int) -> LOD:
        """The LOD with id ``level``; :class:`SchemeError` if the scheme has none."""
        for lod in self.lods:
            if lod.level == level:
                return lod
        raise SchemeError(
            f"level {level} is not in the tiling scheme (levels {self.levels[0]}-{self.levels[-1]})"
        )

    def resolution(self, level: int) -> float:
        """Map units per pixel at ``level``."""
        return self.lod(level).resolution

    def same_grid(self, other: TilingScheme, rel_tol: float = 1e-9) -> bool:
        """True when both schemes produce the same tiles (CRS, origin, size, LODs)."""
        if (self.tile_width, self.tile_height) != (other.tile_width, other.tile_height):
            return False
        if (self.wkid or other.wkid) and normalize_wkid(self.wkid) != normalize_wkid(other.wkid):
            return False
        if not (
            math.isclose(self.origin_x, other.origin_x, rel_tol=rel_tol, abs_tol=1e-6)
            and math.isclose(self.origin_y, other.origin_y, rel_tol=rel_tol, abs_tol=1e-6)
        ):
            return False
        mine = {lod.level: lod.resolution for lod in self.lods}
        theirs = {lod.level: lod.resolution for lod in other.lods}
        common = set(mine) & set(theirs)
        return bool(common) and all(math.isclose(mine[k], theirs[k], rel_tol=1e-7) for k in common)


def up_to_level(scheme: TilingScheme, max_level: int) -> TilingScheme:
    """The same grid with only the LODs up to ``max_level``.

    Caches list these in conf.xml: GDAL cannot address Web Mercator LOD 23
    (2^23 × 256 pixels overflow its raster size), and ArcGIS shows only listed levels.
    """
    return scheme.model_copy(update={"lods": tuple(x for x in scheme.lods if x.level <= max_level)})


def web_mercator(max_level: int = 23) -> TilingScheme:
    """Esri's Web Mercator Auxiliary Sphere scheme (WKID 102100), LOD 0..``max_level``."""
    lods = tuple(
        LOD(level=z, scale=WEB_MERCATOR_SCALE_0 / 2**z, resolution=WEB_MERCATOR_RES_0 / 2**z)
        for z in range(max_level + 1)
    )
    half = WEB_MERCATOR_HALF
    return TilingScheme(
        name="web-mercator",
        crs="EPSG:3857",
        wkid=102100,
        latest_wkid=3857,
        origin_x=-half,
        origin_y=half,
        lods=lods,
        extent=Bounds(-half, -half, half, half),
    )


def is_web_mercator(scheme: TilingScheme) -> bool:
    """True for the standard Web Mercator grid (so XYZ / MBTiles addressing applies)."""
    return (
        scheme.same_grid(web_mercator())
        and scheme.lods[0].level == 0
        and math.isclose(scheme.lods[0].resolution, WEB_MERCATOR_RES_0, rel_tol=1e-7)
    )


def tile_bounds(scheme: TilingScheme, level: int, row: int, col: int) -> Bounds:
    """The extent of tile (``level``, ``row``, ``col``) in map units."""
    res = scheme.resolution(level)
    w = scheme.tile_width * res
    h = scheme.tile_height * res
    xmin = scheme.origin_x + col * w
    ymax = scheme.origin_y - row * h
    return Bounds(xmin, ymax - h, xmin + w, ymax)


def grid_size(scheme: TilingScheme, level: int) -> tuple[int, int] | None:
    """(rows, cols) of the grid at ``level`` when the scheme has an extent, else None."""
    if scheme.extent is None:
        return None
    res = scheme.resolution(level)
    # Relative slack: Esri's rounded resolutions make 2^z tiles fall a hair short of the world.
    rows = math.ceil(
        (scheme.origin_y - scheme.extent.ymin) / (scheme.tile_height * res) * (1 - 1e-9)
    )
    cols = math.ceil(
        (scheme.extent.xmax - scheme.origin_x) / (scheme.tile_width * res) * (1 - 1e-9)
    )
    return max(rows, 1), max(cols, 1)


def tile_range(
    scheme: TilingScheme, level: int, bounds: Bounds, *, touch: bool = True
) -> tuple[int, int, int, int] | None:
    """Inclusive (row0, row1, col0, col1) of tiles whose extent meets ``bounds``.

    With ``touch`` (the default) a tile that only shares an edge with
    ``bounds`` counts, as in Mapnik's box intersection test. The range is
    clipped to the grid; ``None`` when nothing is left.
    """
    res = scheme.resolution(level)
    w = scheme.tile_width * res
    h = scheme.tile_height * res
    fx0 = (bounds.xmin - scheme.origin_x) / w
    fx1 = (bounds.xmax - scheme.origin_x) / w
    fy0 = (scheme.origin_y - bounds.ymax) / h
    fy1 = (scheme.origin_y - bounds.ymin) / h
    if touch:
        col0, col1 = math.ceil(fx0) - 1, math.floor(fx1)
        row0, row1 = math.ceil(fy0) - 1, math.floor(fy1)
    else:
        col0, col1 = math.floor(fx0), math.ceil(fx1) - 1
        row0, row1 = math.floor(fy0), math.ceil(fy1) - 1
    row0, col0 = max(row0, 0), max(col0, 0)
    size = grid_size(scheme, level)
    if size is not None:
        row1, col1 = min(row1, size[0] - 1), min(col1, size[1] - 1)
    if row0 > row1 or col0 > col1:
        return None
    return row0, row1, col0, col1


def covering_tiles(scheme: TilingScheme, level: int, bounds: Bounds) -> int:
    """How many tiles of ``level`` meet ``bounds`` (without listing them)."""
    rng = tile_range(scheme, level, bounds, touch=False)
    if rng is None:
        return 0
    return (rng[1] - rng[0] + 1) * (rng[3] - rng[2] + 1)
