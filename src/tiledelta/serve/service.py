"""The cache behind ``tiledelta serve``: scheme facts, range checks, extents and tile reads.

The project's cache is opened read-only once (:func:`tiledelta.stores.open_project_store`
with ``readonly``): reads are safe from Starlette's thread pool, and a tile file or bundle
whose real path lies outside the cache folder is never read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import xml.etree.ElementTree as ET
from typing import Any

from PIL import Image, ImageColor
from pyproj import CRS, Transformer
from starlette.requests import Request
from starlette.responses import Response

from tiledelta.errors import CacheError
from tiledelta.grid import (
    WEB_MERCATOR_WKIDS,
    Bounds,
    TilingScheme,
    grid_size,
    is_web_mercator,
    scheme_meters_per_unit,
    tile_bounds,
    tile_format,
)
from tiledelta.grid.esri import esri_units
from tiledelta.project import Project
from tiledelta.serve.http import error_response, tile_response
from tiledelta.stores import TileHit, open_project_store
from tiledelta.stores.base import confined

log = logging.getLogger(__name__)

#: Seconds clients and proxies may reuse a tile (``Cache-Control: public, max-age=``).
DEFAULT_MAX_AGE = 3600
#: Largest tile row/column accepted when the scheme has no extent (ArcGIS uses int32).
MAX_INDEX = 2**31 - 1


def background_tile(project: Project, fmt: str, quality: int = 75) -> bytes:
    """A tile of the style's background colour (transparent when it has none), encoded
    in the cache's format, drawn without Mapnik (``serve`` runs where Mapnik is not)."""
    size = (project.scheme.tile_width, project.scheme.tile_height)
    color: tuple[int, ...] = (0, 0, 0, 0)
    try:
        text = ET.parse(project.style.path).getroot().get("background-color")
        if text:
            got = ImageColor.getcolor(text.strip(), "RGBA")
            color = got if isinstance(got, tuple) else (got, got, got, 255)
    except (ET.ParseError, OSError, ValueError):
        pass
    out = io.BytesIO()
    if fmt == "jpeg" or (fmt == "mixed" and color[3] == 255):
        Image.new("RGB", size, color[:3]).save(out, "JPEG", quality=quality)
    else:
        Image.new("RGBA", size, color).save(out, "PNG", optimize=True)
    return out.getvalue()


def service_name(project: Project) -> str:
    """The service / layer name: the project folder's name, made URL-safe."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", project.root.name) or "tiledelta"


def crs_urn(scheme: TilingScheme) -> str:
    """The OGC URN of the scheme's CRS (``urn:ogc:def:crs:EPSG::3857`` for Web Mercator)."""
    for code in (scheme.latest_wkid, scheme.wkid):
        if code in WEB_MERCATOR_WKIDS:
            return "urn:ogc:def:crs:EPSG::3857"
        if code is not None and code < 100000:
            return f"urn:ogc:def:crs:EPSG::{code}"
    auth = CRS.from_user_input(scheme.crs).to_authority(min_confidence=70)
    if auth:
        return f"urn:ogc:def:crs:{auth[0]}::{auth[1]}"
    code = scheme.latest_wkid or scheme.wkid
    return f"urn:ogc:def:crs:ESRI::{code}" if code else "urn:ogc:def:crs:EPSG::0"


class TileService:
    """The cache behind the app: scheme facts, range checks and tile reads."""

    def __init__(self, project: Project, *, max_age: int = DEFAULT_MAX_AGE) -> None:
        self.project = project
        self.name = service_name(project)
        self.scheme = project.cache_scheme
        self.levels = project.levels
        self.fmt = tile_format(project.config.cache.format)
        self.quality = project.config.cache.quality
        self.web_mercator = is_web_mercator(project.scheme)
        self.max_age = int(max_age)
        self._level_ids = set(self.scheme.levels)
        crs = CRS.from_user_input(self.scheme.crs)
        self.geographic = crs.is_geographic
        self.meters_per_unit = scheme_meters_per_unit(self.scheme)
        #: The ``units`` of the MapServer document.
        self.units = esri_units(self.meters_per_unit, self.geographic)
        #: WMTS TopLeftCorner order: northing first when the CRS's first axis points north.
        self.north_first = bool(crs.axis_info) and crs.axis_info[0].direction.lower() in (
            "north",
            "south",
        )
        self.crs_urn = crs_urn(self.scheme)
        path = project.cache_path
        if not path.exists():
            raise CacheError(f"{path}: no cache yet; run 'tiledelta seed --project {project.root}'")
        self.store = open_project_store(project, readonly=True)
        self._extent: Bounds | None = None
        self._blank: TileHit | None = None

    def close(self) -> None:
        self.store.close()

    # -- addressing

    def grid(self, level: int) -> tuple[int, int] | None:
        """(rows, cols) of the grid at ``level``; None when the scheme has no extent."""
        return grid_size(self.scheme, level)

    def in_range(self, level: int, row: int, col: int) -> bool:
        if level not in self._level_ids or row < 0 or col < 0:
            return False
        size = self.grid(level)
        rows, cols = size if size is not None else (MAX_INDEX, MAX_INDEX)
        return row < min(rows, MAX_INDEX) and col < min(cols, MAX_INDEX)

    def tile(self, level: int, row: int, col: int) -> TileHit | None:
        if not self.in_range(level, row, col):
            return None
        return self.store.get_hit(level, row, col)

    def tile_or_error(
        self, request: Request, level: int | None, row: int | None, col: int | None
    ) -> Response:
        """The tile, or a JSON error: 404 out of range or not stored, 500 unreadable (the
        XYZ and ArcGIS REST answer; WMTS answers OWS exception reports instead)."""
        if level is None or row is None or col is None or not self.in_range(level, row, col):
            return error_response(404, "tile address out of range")
        try:
            hit = self.tile(level, row, col)
        except CacheError as exc:
            log.error("tile %s/%s/%s: %s", level, row, col, exc)
            return error_response(500, "the tile could not be read")
        if hit is None:
            hit = self.blank_hit(level, row, col)
        if hit is None:
            return error_response(404, "tile not found")
        return tile_response(request, hit, self.max_age)

    def blank_hit(self, level: int, row: int, col: int) -> TileHit | None:
        """The background-only tile for an address inside the cache's extent that holds no
        tile (blank tiles not stored, ``blank_tiles = "skip"``), else None: clients get
        the picture a render would give there, never a 404, inside the map."""
        if self._refused(level, row, col):
            return None  # a file is there but was not read (a symlink out of the cache)
        if self._extent is None:
            self._extent = self.data_extent()
        b, e = tile_bounds(self.scheme, level, row, col), self._extent
        if not (b.xmin < e.xmax and b.xmax > e.xmin and b.ymin < e.ymax and b.ymax > e.ymin):
            return None
        if self._blank is None:
            self._blank = TileHit(
                background_tile(self.project, self.fmt.name, self.quality),
                self.project.cache_path.stat().st_mtime,
            )
        return self._blank

    def _refused(self, level: int, row: int, col: int) -> bool:
        """Whether a file sits where the tile would be that the read-only store refused
        (its real path is outside the cache): that is not a blank tile."""
        store: Any = self.store
        root = getattr(store, "_root", None)
        if root is None:
            return False  # MBTiles: one file, no per-tile paths
        if hasattr(store, "bundle_path"):
            paths = [store.bundle_path(level, row, col)]
        else:
            paths = list(store._candidates(level, row, col))
        return any(os.path.lexists(p) and confined(root, p) is None for p in paths)

    # -- extents

    def data_extent(self) -> Bounds:
        """The cache's data extent: conf.cdi, else the stored tiles of the lowest
        configured level that has any, else the scheme extent."""
        ext = self.store.stored_extent()
        if ext is not None:
            return ext
        for level in self.levels:
            rng = self.store.stored_range(level)
            if rng is not None:
                a = tile_bounds(self.scheme, level, rng[0], rng[2])
                b = tile_bounds(self.scheme, level, rng[1], rng[3])
                return Bounds(a.xmin, b.ymin, b.xmax, a.ymax)
        if self.scheme.extent is not None:
            return self.scheme.extent
        return tile_bounds(self.scheme, self.scheme.levels[0], 0, 0)

    def wgs84_extent(self, ext: Bounds) -> Bounds:
        tr = Transformer.from_crs(self.scheme.crs, "EPSG:4326", always_xy=True)
        lon0, lat0, lon1, lat1 = tr.transform_bounds(*ext, densify_pts=21)
        clamp = lambda v, m: max(-m, min(m, v))  # noqa: E731
        return Bounds(clamp(lon0, 180), clamp(lat0, 90), clamp(lon1, 180), clamp(lat1, 90))

    # -- summary for the index page, service.json and ``tiledelta serve``'s banner

    def summary(self, base: str) -> dict[str, Any]:
        ext = self.data_extent()
        wgs = self.wgs84_extent(ext)
        ags = f"{base}/arcgis/rest/services/{self.name}/MapServer"
        urls = {
            "arcgis": ags,
            "arcgis_tile": ags + "/tile/{level}/{row}/{col}",
            "wmts": f"{base}/wmts/1.0.0/WMTSCapabilities.xml",
        }
        if self.web_mercator:
            urls["xyz"] = (
                base + "/tiles/{z}/{x}/{y}." + ("jpg" if self.fmt.name == "jpeg" else "png")
            )
        return {
            "name": self.name,
            "cache_kind": self.project.config.cache.kind,
            "format": self.fmt.name,
            "scheme": self.scheme.name,
            "crs": self.crs_urn,
            "web_mercator": self.web_mercator,
            "levels": self.levels,
            "extent": list(ext),
            "extent_wgs84": list(wgs),
            "urls": urls,
        }
