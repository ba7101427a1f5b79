"""``tiledelta serve``: a local, read-only tile server over a project's cache.

One ASGI app (Starlette, run by uvicorn) answers, for any cache kind (compact,
MBTiles, XYZ):

- ``/tiles/{z}/{x}/{y}.png`` (or ``.jpg``): XYZ tiles, Web Mercator caches only;
- ``/arcgis/rest/services?f=json``, ``/arcgis/rest/services/<name>/MapServer?f=json``
  and ``.../MapServer/tile/{level}/{row}/{col}``: an ArcGIS REST cached MapServer,
  which ArcGIS Pro, the ArcGIS Maps SDK for JavaScript, QGIS and GDAL can add;
- ``/wmts/1.0.0/WMTSCapabilities.xml``, ``/wmts?SERVICE=WMTS&REQUEST=...`` and
  ``/wmts/1.0.0/<layer>/default/<set>/{TileMatrix}/{TileRow}/{TileCol}.png``: OGC WMTS 1.0.0;
- ``/``: a page listing those URLs (replaced by ``static/index.html`` when present) and
  ``/static`` from ``tiledelta/static/`` when that folder exists.

Tiles are read by integer address only (never by a path taken from the request), the
cache is opened read-only once, and reads are safe from Starlette's thread pool. An XYZ
tile file, or a compact bundle, whose real path lies outside the cache folder (a
symlink pointing elsewhere) is refused.
"""

from __future__ import annotations

import abc
import contextlib
import html
import itertools
import json
import logging
import math
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tiledelta.errors import CacheError
from tiledelta.grid import (
    Bounds,
    TilingScheme,
    grid_size,
    is_web_mercator,
    scheme_meters_per_unit,
    scheme_to_tile_info,
    tile_bounds,
    tile_format,
    tile_range,
)
from tiledelta.project import Project
from tiledelta.serve.http import (
    NO_CACHE,
    TILE_NAME,
    TileHit,
    base_url,
    error_response,
    json_response,
    ows_error,
    parse_int,
    tile_response,
)
from tiledelta.serve.viewer import page as viewer_page
from tiledelta.serve.viewer import routes as viewer_routes
from tiledelta.stores import read_compact_cache
from tiledelta.stores.xyz import MARKER, XYZStore

log = logging.getLogger(__name__)

#: Seconds clients and proxies may reuse a tile (``Cache-Control: public, max-age=``).
DEFAULT_MAX_AGE = 3600
#: The ArcGIS Server version the REST face claims (the JSON follows 10.x/11.x shapes).
ARCGIS_VERSION = 11.1
#: The one WMTS tile matrix set: OGC 0.28 mm pixels, as ArcGIS Server names it.
TILE_MATRIX_SET = "default028mm"
WMTS_STYLE = "default"
#: WMTS scale denominators count 0.28 mm pixels.
OGC_PIXEL_METERS = 0.00028
#: Largest tile row/column accepted when the scheme has no extent (ArcGIS uses int32).
MAX_INDEX = 2**31 - 1
#: Largest tile file read from an XYZ cache (bundle records hold at most 16 MiB too).
MAX_TILE_BYTES = (1 << 24) - 1
STATIC_DIR = Path(__file__).parent / "static"


# ------------------------------------------------------------------------------- readers


class TileReader(abc.ABC):
    """Read-only access to one cache by tile address, safe from many threads."""

    @abc.abstractmethod
    def get(self, level: int, row: int, col: int) -> TileHit | None:
        """The tile, or None when it is not stored (or refused)."""

    @abc.abstractmethod
    def stored_range(self, level: int) -> tuple[int, int, int, int] | None:
        """Inclusive (row0, row1, col0, col1) of the stored tiles of ``level``, or None."""

    def stored_extent(self) -> Bounds | None:
        """The data extent the cache records (compact ``conf.cdi``), or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""


def _inside(root: str, path: Path) -> str | None:
    """``path`` resolved (symlinks followed) when it lies inside ``root``, else None."""
    real = os.path.realpath(path)
    try:
        if os.path.commonpath([root, real]) == root:
            return real
    except ValueError:  # different drives
        pass
    log.warning("refused %s: it resolves to %s, outside the cache %s", path, real, root)
    return None


def _read_regular_file(real: str) -> TileHit | None:
    """A regular file's bytes and mtime; None when absent, not a regular file or too big."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # ELOOP (a symlink swapped in), EACCES, ...
        log.warning("cannot read tile %s: %s", real, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TILE_BYTES:
            return None
        data = fh.read(MAX_TILE_BYTES + 1)
    if not data or len(data) > MAX_TILE_BYTES:
        return None
    return TileHit(data, st.st_mtime)


def _range_of(addrs: Any, limit: int = 1_000_000) -> tuple[int, int, int, int] | None:
    rows: list[int] = []
    cols: list[int] = []
    for _lv, row, col in itertools.islice(addrs, limit):
        rows.append(row)
        cols.append(col)
    if not rows:
        return None
    return min(rows), max(rows), min(cols), max(cols)


class CompactReader(TileReader):
    """An Esri Compact Cache V2 opened read-only (bundle indexes cached per file state)."""

    def __init__(self, path: Path, scheme: TilingScheme) -> None:
        self.store = read_compact_cache(path)
        if not self.store.scheme.same_grid(scheme):
            raise CacheError(
                f"{path} holds a compact cache of another tiling scheme than the project's"
            )
        self.root = os.path.realpath(self.store.path)

    def get(self, level: int, row: int, col: int) -> TileHit | None:
        bundle = self.store.bundle_path(level, row, col)
        if _inside(self.root, bundle) is None:
            return None
        try:
            mtime = os.stat(bundle).st_mtime
        except OSError:
            return None
        data = self.store.get(level, row, col)
        return None if data is None else TileHit(data, mtime)

    def stored_range(self, level: int) -> tuple[int, int, int, int] | None:
        return _range_of(self.store.iter_tiles(level))

    def stored_extent(self) -> Bounds | None:
        try:
            return self.store.read_extent()
        except CacheError as exc:
            log.warning("ignoring conf.cdi: %s", exc)
            return None


class XYZReader(TileReader):
    """A ``z/x/y.ext`` folder; tile files must resolve inside the cache folder."""

    def __init__(self, path: Path, scheme: TilingScheme, fmt: str) -> None:
        marker = Path(path) / MARKER
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Open with the format the marker records, so opening never rewrites it.
            fmt = json.loads(marker.read_text(encoding="utf-8")).get("format") or fmt
        self.store = XYZStore(path, scheme, fmt=fmt, create=False)
        self.root = os.path.realpath(self.store.path)
        first = tile_format(fmt).ext or ".png"
        self._exts = [first] + [e for e in (".png", ".jpg") if e != first]

    def get(self, level: int, row: int, col: int) -> TileHit | None:
        for ext in self._exts:
            real = _inside(self.root, self.store.tile_path(level, row, col, ext))
            if real is None:
                return None
            hit = _read_regular_file(real)
            if hit is not None:
                return hit
        return None

    def stored_range(self, level: int) -> tuple[int, int, int, int] | None:
        return _range_of(self.store.iter_tiles(level))


class MBTilesReader(TileReader):
    """An MBTiles file through read-only SQLite connections, one per thread.

    A connection is reopened when the file is replaced (``seed`` swaps in a new file).
    """

    def __init__(self, path: Path, scheme: TilingScheme) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise CacheError(f"{self.path} does not exist (no MBTiles cache there)")
        self._uri = self.path.as_uri() + "?mode=ro"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        try:
            row = (
                self._db()
                .execute("SELECT value FROM metadata WHERE name='tiledelta_scheme'")
                .fetchone()
            )
        except sqlite3.DatabaseError as exc:
            self.close()
            raise CacheError(f"{self.path} is not a readable MBTiles file ({exc})") from exc
        if row is not None:
            try:
                stored = TilingScheme.model_validate_json(row[0])
            except ValueError as exc:
                self.close()
                raise CacheError(f"{self.path}: unreadable tiledelta_scheme metadata") from exc
            if not stored.same_grid(scheme):
                self.close()
                raise CacheError(f"{self.path} holds tiles of another tiling scheme")

    def _db(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise CacheError(f"cannot read {self.path}: {exc.strerror}") from exc
        key = (st.st_dev, st.st_ino)
        db = getattr(self._local, "db", None)
        if db is not None and self._local.key == key:
            return db
        if db is not None:
            self._forget(db)
        db = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        with self._lock:
            self._conns.append(db)
        self._local.db, self._local.key = db, key
        return db

    def _forget(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if db in self._conns:
                self._conns.remove(db)
        with contextlib.suppress(sqlite3.Error):
            db.close()

    def _mtime(self) -> float:
        times = []
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                times.append(os.stat(p).st_mtime)
        return max(times) if times else time.time()

    def get(self, level: int, row: int, col: int) -> TileHit | None:
        hit = (
            self._db()
            .execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (level, col, (1 << level) - 1 - row),
            )
            .fetchone()
        )
        if hit is None or not hit[0]:
            return None
        return TileHit(bytes(hit[0]), self._mtime())

    def stored_range(self, level: int) -> tuple[int, int, int, int] | None:
        lo_r, hi_r, lo_c, hi_c = (
            self._db()
            .execute(
                "SELECT MIN(tile_row), MAX(tile_row), MIN(tile_column), MAX(tile_column) "
                "FROM tiles WHERE zoom_level=?",
                (level,),
            )
            .fetchone()
        )
        if lo_r is None:
            return None
        top = (1 << level) - 1
        return top - hi_r, top - lo_r, lo_c, hi_c

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for db in conns:
            with contextlib.suppress(sqlite3.Error):
                db.close()


def open_reader(project: Project) -> TileReader:
    """Open the project's cache read-only; :class:`CacheError` when there is none."""
    c = project.config.cache
    path = project.cache_path
    scheme = project.cache_scheme
    if not path.exists():
        raise CacheError(f"{path}: no cache yet; run 'tiledelta seed --project {project.root}'")
    if c.kind == "compact":
        return CompactReader(path, scheme)
    if c.kind == "mbtiles":
        return MBTilesReader(path, scheme)
    return XYZReader(path, scheme, c.format)


# ------------------------------------------------------------------------------- service


def service_name(project: Project) -> str:
    """The service / layer name: the project folder's name, made URL-safe."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", project.root.name) or "tiledelta"


def _crs_urn(scheme: TilingScheme) -> str:
    from pyproj import CRS

    for code in (scheme.latest_wkid, scheme.wkid):
        if code in (102100, 102113, 900913, 3857):
            return "urn:ogc:def:crs:EPSG::3857"
        if code is not None and code < 100000:
            return f"urn:ogc:def:crs:EPSG::{code}"
    crs = CRS.from_user_input(scheme.crs)
    auth = crs.to_authority(min_confidence=70)
    if auth:
        return f"urn:ogc:def:crs:{auth[0]}::{auth[1]}"
    code = scheme.latest_wkid or scheme.wkid
    return f"urn:ogc:def:crs:ESRI::{code}" if code else "urn:ogc:def:crs:EPSG::0"


class TileService:
    """The cache behind the app: scheme facts, range checks and tile reads."""

    def __init__(self, project: Project, *, max_age: int = DEFAULT_MAX_AGE) -> None:
        from pyproj import CRS

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
        #: WMTS TopLeftCorner order: northing first when the CRS's first axis points north.
        self.north_first = bool(crs.axis_info) and crs.axis_info[0].direction.lower() in (
            "north",
            "south",
        )
        self.crs_urn = _crs_urn(self.scheme)
        self.reader = open_reader(project)

    # -- addressing

    def grid(self, level: int) -> tuple[int, int] | None:
        """(rows, cols) of the grid at ``level``; None when the scheme has no extent."""
        if self.web_mercator:
            # 2**z exactly: grid_size rounds Esri's 156543.033928 up to 2**z + 1.
            return 1 << level, 1 << level
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
        return self.reader.get(level, row, col)

    # -- extents

    def data_extent(self) -> Bounds:
        """The cache's data extent: conf.cdi, else the stored tiles of the lowest
        configured level that has any, else the scheme extent."""
        ext = self.reader.stored_extent()
        if ext is not None:
            return ext
        for level in self.levels:
            rng = self.reader.stored_range(level)
            if rng is not None:
                a = tile_bounds(self.scheme, level, rng[0], rng[2])
                b = tile_bounds(self.scheme, level, rng[1], rng[3])
                return Bounds(a.xmin, b.ymin, b.xmax, a.ymax)
        if self.scheme.extent is not None:
            return self.scheme.extent
        return tile_bounds(self.scheme, self.scheme.levels[0], 0, 0)

    def wgs84_extent(self, ext: Bounds) -> Bounds:
        from pyproj import Transformer

        tr = Transformer.from_crs(self.scheme.crs, "EPSG:4326", always_xy=True)
        lon0, lat0, lon1, lat1 = tr.transform_bounds(*ext, densify_pts=21)
        clamp = lambda v, m: max(-m, min(m, v))  # noqa: E731
        return Bounds(clamp(lon0, 180), clamp(lat0, 90), clamp(lon1, 180), clamp(lat1, 90))

    # -- ArcGIS REST

    @property
    def units(self) -> str:
        if self.geographic:
            return "esriDecimalDegrees"
        if math.isclose(self.meters_per_unit, 1.0):
            return "esriMeters"
        if math.isclose(self.meters_per_unit, 0.3048, rel_tol=1e-5):
            return "esriFeet"
        return "esriUnknownUnits"

    def mapserver_json(self) -> dict[str, Any]:
        info = scheme_to_tile_info(self.scheme)
        sr = info["spatialReference"]
        info["format"] = self.fmt.esri
        info["compressionQuality"] = self.quality if self.fmt.name in ("jpeg", "mixed") else 0
        ext = self.data_extent()
        envelope = {
            "xmin": ext.xmin,
            "ymin": ext.ymin,
            "xmax": ext.xmax,
            "ymax": ext.ymax,
            "spatialReference": sr,
        }
        lo, hi = self.scheme.lod(self.levels[0]), self.scheme.lod(self.levels[-1])
        doc: dict[str, Any] = {
            "currentVersion": ARCGIS_VERSION,
            "serviceDescription": f"tiledelta cache of {self.name} ({self.project.config.levels})",
            "mapName": self.name,
            "description": "",
            "copyrightText": "",
            "supportsDynamicLayers": False,
            "layers": [
                {
                    "id": 0,
                    "name": self.name,
                    "parentLayerId": -1,
                    "defaultVisibility": True,
                    "subLayerIds": None,
                    "minScale": 0,
                    "maxScale": 0,
                }
            ],
            "tables": [],
            "spatialReference": sr,
            "singleFusedMapCache": True,
            "tileInfo": info,
            "initialExtent": dict(envelope),
            "fullExtent": dict(envelope),
            "minScale": lo.scale,
            "maxScale": hi.scale,
            "minLOD": lo.level,
            "maxLOD": hi.level,
            "units": self.units,
            "supportedImageFormatTypes": self.fmt.esri,
            "documentInfo": {"Title": self.name, "Author": "", "Comments": "", "Subject": ""},
            "capabilities": "Map",
            "supportedQueryFormats": "JSON",
            "exportTilesAllowed": False,
            "maxRecordCount": 0,
            "maxImageHeight": 4096,
            "maxImageWidth": 4096,
            "supportedExtensions": "",
        }
        if self.project.config.cache.kind == "compact":
            doc["storageInfo"] = {
                "storageFormat": "esriMapCacheStorageModeCompactV2",
                "packetSize": 128,
            }
        return doc

    # -- WMTS

    def _corner(self, x: float, y: float) -> str:
        return f"{_fmt(y)} {_fmt(x)}" if self.north_first else f"{_fmt(x)} {_fmt(y)}"

    def wmts_capabilities(self, base: str) -> str:
        ext = self.data_extent()
        wgs = self.wgs84_extent(ext)
        fmt_mime, fmt_ext = (
            ("image/jpeg", "jpg") if self.fmt.name == "jpeg" else ("image/png", "png")
        )
        rest = f"{base}/wmts/1.0.0/"
        kvp = f"{base}/wmts?"
        caps = f"{base}/wmts/1.0.0/WMTSCapabilities.xml"

        def dcp(rest_href: str) -> str:
            return (
                "<ows:DCP><ows:HTTP>"
                f'<ows:Get xlink:href={quoteattr(rest_href)}><ows:Constraint name="GetEncoding">'
                "<ows:AllowedValues><ows:Value>RESTful</ows:Value></ows:AllowedValues>"
                "</ows:Constraint></ows:Get>"
                f'<ows:Get xlink:href={quoteattr(kvp)}><ows:Constraint name="GetEncoding">'
                "<ows:AllowedValues><ows:Value>KVP</ows:Value></ows:AllowedValues>"
                "</ows:Constraint></ows:Get>"
                "</ows:HTTP></ows:DCP>"
            )

        matrices = []
        limits = []
        tw, th = self.scheme.tile_width, self.scheme.tile_height
        for level in self.levels:
            res = self.scheme.resolution(level)
            size = self.grid(level)
            if size is None:
                size = (
                    max(1, math.ceil((self.scheme.origin_y - ext.ymin) / (th * res) - 1e-9)),
                    max(1, math.ceil((ext.xmax - self.scheme.origin_x) / (tw * res) - 1e-9)),
                )
            rows, cols = min(size[0], MAX_INDEX), min(size[1], MAX_INDEX)
            matrices.append(
                "<TileMatrix>"
                f"<ows:Identifier>{level}</ows:Identifier>"
                f"<ScaleDenominator>{_fmt(res * self.meters_per_unit / OGC_PIXEL_METERS)}"
                "</ScaleDenominator>"
                f"<TopLeftCorner>{self._corner(self.scheme.origin_x, self.scheme.origin_y)}"
                "</TopLeftCorner>"
                f"<TileWidth>{tw}</TileWidth><TileHeight>{th}</TileHeight>"
                f"<MatrixWidth>{cols}</MatrixWidth><MatrixHeight>{rows}</MatrixHeight>"
                "</TileMatrix>"
            )
            rng = tile_range(self.scheme, level, ext, touch=False)
            if rng is not None:  # one tile of slack: labels may spill past the data extent
                r0, r1 = max(rng[0] - 1, 0), min(rng[1] + 1, rows - 1)
                c0, c1 = max(rng[2] - 1, 0), min(rng[3] + 1, cols - 1)
                limits.append(
                    "<TileMatrixLimits>"
                    f"<TileMatrix>{level}</TileMatrix>"
                    f"<MinTileRow>{r0}</MinTileRow><MaxTileRow>{r1}</MaxTileRow>"
                    f"<MinTileCol>{c0}</MinTileCol><MaxTileCol>{c1}</MaxTileCol>"
                    "</TileMatrixLimits>"
                )
        name = escape(self.name)
        template = (
            f"{rest}{self.name}/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/"
            f"{{TileCol}}.{fmt_ext}"
        )
        limits_xml = (
            f"<TileMatrixSetLimits>{''.join(limits)}</TileMatrixSetLimits>" if limits else ""
        )
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" \
xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:gml="http://www.opengis.net/gml" xsi:schemaLocation="http://www.opengis.net/wmts/1.0 \
http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd" version="1.0.0">
<ows:ServiceIdentification>
<ows:Title>{name}</ows:Title>
<ows:Abstract>tiledelta tile cache</ows:Abstract>
<ows:ServiceType>OGC WMTS</ows:ServiceType>
<ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>
</ows:ServiceIdentification>
<ows:OperationsMetadata>
<ows:Operation name="GetCapabilities">{dcp(caps)}</ows:Operation>
<ows:Operation name="GetTile">{dcp(rest)}</ows:Operation>
</ows:OperationsMetadata>
<Contents>
<Layer>
<ows:Title>{name}</ows:Title>
<ows:WGS84BoundingBox crs="urn:ogc:def:crs:OGC:2:84">\
<ows:LowerCorner>{_fmt(wgs.xmin)} {_fmt(wgs.ymin)}</ows:LowerCorner>\
<ows:UpperCorner>{_fmt(wgs.xmax)} {_fmt(wgs.ymax)}</ows:UpperCorner></ows:WGS84BoundingBox>
<ows:Identifier>{name}</ows:Identifier>
<ows:BoundingBox crs={quoteattr(self.crs_urn)}>\
<ows:LowerCorner>{self._corner(ext.xmin, ext.ymin)}</ows:LowerCorner>\
<ows:UpperCorner>{self._corner(ext.xmax, ext.ymax)}</ows:UpperCorner></ows:BoundingBox>
<Style isDefault="true"><ows:Title>Default</ows:Title>\
<ows:Identifier>{WMTS_STYLE}</ows:Identifier></Style>
<Format>{fmt_mime}</Format>
<TileMatrixSetLink><TileMatrixSet>{TILE_MATRIX_SET}</TileMatrixSet>{limits_xml}</TileMatrixSetLink>
<ResourceURL format="{fmt_mime}" resourceType="tile" template={quoteattr(template)}/>
</Layer>
<TileMatrixSet>
<ows:Title>{escape(self.scheme.name)}</ows:Title>
<ows:Identifier>{TILE_MATRIX_SET}</ows:Identifier>
<ows:SupportedCRS>{escape(self.crs_urn)}</ows:SupportedCRS>
{"".join(matrices)}
</TileMatrixSet>
</Contents>
<ServiceMetadataURL xlink:href={quoteattr(caps)}/>
</Capabilities>
"""

    # -- summary for the viewer page

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


def _fmt(v: float) -> str:
    return repr(float(v))


# --------------------------------------------------------------------------------- app


def create_app(project: Project, *, max_age: int = DEFAULT_MAX_AGE) -> Starlette:
    """The ASGI app serving ``project``'s cache (opened read-only, once)."""
    svc = TileService(project, max_age=max_age)

    def get_tile(request: Request, level: int | None, row: int | None, col: int | None):
        if level is None or row is None or col is None or not svc.in_range(level, row, col):
            return error_response(404, "tile address out of range")
        try:
            hit = svc.tile(level, row, col)
        except CacheError as exc:
            log.error("tile %s/%s/%s: %s", level, row, col, exc)
            return error_response(500, "the tile could not be read")
        if hit is None:
            return error_response(404, "tile not found")
        return tile_response(request, hit, svc.max_age)

    # -- pages

    def index(request: Request) -> Response:
        page = STATIC_DIR / "index.html"
        info = svc.summary(base_url(request))
        if page.is_file():  # the viewer page, its service URL list filled in (tiledelta.viewer)
            return HTMLResponse(viewer_page(page, info["urls"]), headers=NO_CACHE)
        items = "".join(
            f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>"
            for k, v in info["urls"].items()
        )
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(svc.name)} - tiledelta</title></head><body>"
            f"<h1>{html.escape(svc.name)}</h1>"
            f"<p>{html.escape(info['cache_kind'])} cache, {html.escape(info['scheme'])}, "
            f"levels {html.escape(project.config.levels)}</p><ul>{items}</ul>"
            "<p><a href='/service.json'>service.json</a></p></body></html>",
            headers={"Cache-Control": "no-cache"},
        )

    def service_json(request: Request) -> Response:
        return json_response(svc.summary(base_url(request)))

    # -- XYZ

    def xyz_tile(request: Request) -> Response:
        if not svc.web_mercator:
            return error_response(
                404,
                "XYZ tiles need the Web Mercator scheme; this cache uses "
                f"{svc.scheme.name}: use /arcgis/rest/services/{svc.name}/MapServer or /wmts",
            )
        p = request.path_params
        m = TILE_NAME.fullmatch(p["name"])
        y = int(m.group(1)) if m else None
        return get_tile(request, parse_int(p["z"]), y, parse_int(p["x"]))

    # -- ArcGIS REST

    def pretty(request: Request) -> bool:
        return request.query_params.get("f", "").lower() == "pjson"

    def rest_info(request: Request) -> Response:
        return json_response(
            {
                "currentVersion": ARCGIS_VERSION,
                "fullVersion": f"{ARCGIS_VERSION}.0",
                "authInfo": {"isTokenBasedSecurity": False},
            },
            pretty=pretty(request),
        )

    def catalog(request: Request) -> Response:
        return json_response(
            {
                "currentVersion": ARCGIS_VERSION,
                "folders": [],
                "services": [{"name": svc.name, "type": "MapServer"}],
            },
            pretty=pretty(request),
        )

    def check_name(request: Request) -> Response | None:
        if request.path_params["name"] != svc.name:
            return error_response(404, "Service not found")
        return None

    def mapserver(request: Request) -> Response:
        return check_name(request) or json_response(svc.mapserver_json(), pretty=pretty(request))

    def mapserver_layers(request: Request) -> Response:
        if (bad := check_name(request)) is not None:
            return bad
        layer = svc.mapserver_json()["layers"][0]
        layer.update({"type": "Raster Layer", "geometryType": None, "fields": None})
        return json_response({"layers": [layer], "tables": []}, pretty=pretty(request))

    def arcgis_tile(request: Request) -> Response:
        if (bad := check_name(request)) is not None:
            return bad
        p = request.path_params
        return get_tile(request, parse_int(p["level"]), parse_int(p["row"]), parse_int(p["col"]))

    # -- WMTS

    def wmts_caps(request: Request) -> Response:
        return Response(
            svc.wmts_capabilities(base_url(request)),
            media_type="application/xml",
            headers={"Cache-Control": "no-cache"},
        )

    def wmts_tile(request: Request, layer: str, style: str, tms: str, tm: str, row, col):
        if layer != svc.name:
            return ows_error(400, "InvalidParameterValue", f"no layer {layer!r}", "LAYER")
        if style not in (WMTS_STYLE, ""):
            return ows_error(400, "InvalidParameterValue", f"no style {style!r}", "STYLE")
        if tms != TILE_MATRIX_SET:
            msg = f"no tile matrix set {tms!r}"
            return ows_error(400, "InvalidParameterValue", msg, "TILEMATRIXSET")
        level, r, c = parse_int(tm), parse_int(row), parse_int(col)
        if level is None or level not in svc.levels:
            return ows_error(404, "TileOutOfRange", f"no tile matrix {tm!r}", "TILEMATRIX")
        if r is None or c is None or not svc.in_range(level, r, c):
            return ows_error(404, "TileOutOfRange", "tile row or column out of range", "TILEROW")
        try:
            hit = svc.tile(level, r, c)
        except CacheError as exc:
            log.error("tile %s/%s/%s: %s", level, r, c, exc)
            return ows_error(500, "NoApplicableCode", "the tile could not be read")
        if hit is None:
            return ows_error(404, "TileOutOfRange", "tile not found", "TILEROW")
        return tile_response(request, hit, svc.max_age)

    def wmts_rest_tile(request: Request) -> Response:
        p = request.path_params
        m = TILE_NAME.fullmatch(p["name"])
        return wmts_tile(
            request, p["layer"], p["style"], p["tms"], p["tm"], p["row"], m.group(1) if m else None
        )

    def wmts_kvp(request: Request) -> Response:
        q = {k.lower(): v for k, v in request.query_params.items()}
        service = q.get("service", "WMTS")
        if service.upper() != "WMTS":
            return ows_error(400, "InvalidParameterValue", "SERVICE must be WMTS", "SERVICE")
        req = q.get("request")
        if req is None:
            return ows_error(400, "MissingParameterValue", "REQUEST is missing", "REQUEST")
        if req.lower() == "getcapabilities":
            return wmts_caps(request)
        if req.lower() != "gettile":
            return ows_error(400, "OperationNotSupported", f"{req} is not supported", "REQUEST")
        needed = ("layer", "tilematrixset", "tilematrix", "tilerow", "tilecol")
        missing = [k.upper() for k in needed if not q.get(k)]
        if missing:
            msg = f"missing {', '.join(missing)}"
            return ows_error(400, "MissingParameterValue", msg, missing[0])
        for key in ("tilerow", "tilecol"):
            if parse_int(q[key]) is None:
                return ows_error(
                    400, "InvalidParameterValue", f"{key.upper()} must be an integer", key.upper()
                )
        return wmts_tile(
            request,
            q["layer"],
            q.get("style", WMTS_STYLE),
            q["tilematrixset"],
            q["tilematrix"],
            q["tilerow"],
            q["tilecol"],
        )

    # -- errors

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error_response(code, str(message))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s", request.url.path, exc_info=exc)
        return error_response(500, "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            svc.reader.close()

    ags = "/arcgis/rest/services/{name}/MapServer"
    routes: list[Any] = [
        Route("/", index),
        Route("/service.json", service_json),
        Route("/tiles/{z}/{x}/{name}", xyz_tile),
        Route("/arcgis/rest/info", rest_info),
        Route("/arcgis/rest/services", catalog),
        Route(ags, mapserver),
        Route(ags + "/layers", mapserver_layers),
        Route(ags + "/tile/{level}/{row}/{col}", arcgis_tile),
        Route("/wmts", wmts_kvp),
        Route("/wmts/1.0.0/WMTSCapabilities.xml", wmts_caps),
        Route("/wmts/1.0.0/{layer}/{style}/{tms}/{tm}/{row}/{name}", wmts_rest_tile),
    ]
    routes.extend(viewer_routes(project))  # viewer page data and Leaflet (tiledelta.viewer)
    if STATIC_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "HEAD"],
                expose_headers=["ETag", "Last-Modified"],
            )
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.service = svc
    return app


def run(
    project: Project,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    max_age: int = DEFAULT_MAX_AGE,
    say: Callable[[str], None] | None = print,
    log_level: str = "info",
) -> None:
    """Serve ``project``'s cache with uvicorn until interrupted."""
    import uvicorn

    app = create_app(project, max_age=max_age)
    if say is not None:
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}"
        for key, url in app.state.service.summary(base)["urls"].items():
            say(f"{key:<12} {url}")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
