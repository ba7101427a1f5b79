"""The OGC WMTS 1.0.0 face of ``tiledelta serve``: one layer, one style, one tile matrix set.

- ``/wmts/1.0.0/WMTSCapabilities.xml`` and ``/wmts?SERVICE=WMTS&REQUEST=GetCapabilities``;
- ``/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=...`` (KVP, keys in any case) and
  ``/wmts/1.0.0/<layer>/default/<set>/{TileMatrix}/{TileRow}/{TileCol}.png`` (RESTful).

Errors are OWS exception reports. Scale denominators count OGC's standardized 0.28 mm
pixels (:data:`tiledelta.grid.MAPNIK_PIXEL_METERS`, the same as Mapnik's).
"""

from __future__ import annotations

import logging
import math
from xml.sax.saxutils import escape, quoteattr

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiledelta.errors import CacheError
from tiledelta.grid import MAPNIK_PIXEL_METERS, tile_range
from tiledelta.serve.http import NO_CACHE, TILE_NAME, base_url, ows_error, parse_int, tile_response
from tiledelta.serve.service import MAX_INDEX, TileService

log = logging.getLogger(__name__)

#: The one WMTS tile matrix set: OGC 0.28 mm pixels, as ArcGIS Server names it.
TILE_MATRIX_SET = "default028mm"
WMTS_STYLE = "default"


def _fmt(v: float) -> str:
    return repr(float(v))


def _corner(svc: TileService, x: float, y: float) -> str:
    return f"{_fmt(y)} {_fmt(x)}" if svc.north_first else f"{_fmt(x)} {_fmt(y)}"


def capabilities_xml(svc: TileService, base: str) -> str:
    """The WMTS 1.0.0 capabilities document; URLs start with ``base``."""
    ext = svc.data_extent()
    wgs = svc.wgs84_extent(ext)
    fmt_mime, fmt_ext = ("image/jpeg", "jpg") if svc.fmt.name == "jpeg" else ("image/png", "png")
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
    tw, th = svc.scheme.tile_width, svc.scheme.tile_height
    for level in svc.levels:
        res = svc.scheme.resolution(level)
        size = svc.grid(level)
        if size is None:
            size = (
                max(1, math.ceil((svc.scheme.origin_y - ext.ymin) / (th * res) - 1e-9)),
                max(1, math.ceil((ext.xmax - svc.scheme.origin_x) / (tw * res) - 1e-9)),
            )
        rows, cols = min(size[0], MAX_INDEX), min(size[1], MAX_INDEX)
        matrices.append(
            "<TileMatrix>"
            f"<ows:Identifier>{level}</ows:Identifier>"
            f"<ScaleDenominator>{_fmt(res * svc.meters_per_unit / MAPNIK_PIXEL_METERS)}"
            "</ScaleDenominator>"
            f"<TopLeftCorner>{_corner(svc, svc.scheme.origin_x, svc.scheme.origin_y)}"
            "</TopLeftCorner>"
            f"<TileWidth>{tw}</TileWidth><TileHeight>{th}</TileHeight>"
            f"<MatrixWidth>{cols}</MatrixWidth><MatrixHeight>{rows}</MatrixHeight>"
            "</TileMatrix>"
        )
        rng = tile_range(svc.scheme, level, ext, touch=False)
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
    name = escape(svc.name)
    template = (
        f"{rest}{svc.name}/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/"
        f"{{TileCol}}.{fmt_ext}"
    )
    limits_xml = f"<TileMatrixSetLimits>{''.join(limits)}</TileMatrixSetLimits>" if limits else ""
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
<ows:BoundingBox crs={quoteattr(svc.crs_urn)}>\
<ows:LowerCorner>{_corner(svc, ext.xmin, ext.ymin)}</ows:LowerCorner>\
<ows:UpperCorner>{_corner(svc, ext.xmax, ext.ymax)}</ows:UpperCorner></ows:BoundingBox>
<Style isDefault="true"><ows:Title>Default</ows:Title>\
<ows:Identifier>{WMTS_STYLE}</ows:Identifier></Style>
<Format>{fmt_mime}</Format>
<TileMatrixSetLink><TileMatrixSet>{TILE_MATRIX_SET}</TileMatrixSet>{limits_xml}</TileMatrixSetLink>
<ResourceURL format="{fmt_mime}" resourceType="tile" template={quoteattr(template)}/>
</Layer>
<TileMatrixSet>
<ows:Title>{escape(svc.scheme.name)}</ows:Title>
<ows:Identifier>{TILE_MATRIX_SET}</ows:Identifier>
<ows:SupportedCRS>{escape(svc.crs_urn)}</ows:SupportedCRS>
{"".join(matrices)}
</TileMatrixSet>
</Contents>
<ServiceMetadataURL xlink:href={quoteattr(caps)}/>
</Capabilities>
"""


def routes(svc: TileService) -> list[Route]:
    return WMTS(svc).routes()


class WMTS:
    """The WMTS endpoints over one :class:`TileService`."""

    def __init__(self, svc: TileService) -> None:
        self.svc = svc

    def routes(self) -> list[Route]:
        return [
            Route("/wmts", self.kvp),
            Route("/wmts/1.0.0/WMTSCapabilities.xml", self.capabilities),
            Route("/wmts/1.0.0/{layer}/{style}/{tms}/{tm}/{row}/{name}", self.rest_tile),
        ]

    def capabilities(self, request: Request) -> Response:
        return Response(
            capabilities_xml(self.svc, base_url(request)),
            media_type="application/xml",
            headers=NO_CACHE,
        )

    def tile(
        self,
        request: Request,
        layer: str,
        style: str,
        tms: str,
        tm: str,
        row: str | None,
        col: str | None,
    ) -> Response:
        """GetTile, from either encoding: the tile, or an OWS exception report."""
        svc = self.svc
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
        if hit is None:  # background only inside the cache's extent: the blank tile
            hit = svc.blank_hit(level, r, c)
        if hit is None:
            return ows_error(404, "TileOutOfRange", "tile not found", "TILEROW")
        return tile_response(request, hit, svc.max_age)

    def rest_tile(self, request: Request) -> Response:
        p = request.path_params
        m = TILE_NAME.fullmatch(p["name"])
        col = m.group(1) if m else None
        return self.tile(request, p["layer"], p["style"], p["tms"], p["tm"], p["row"], col)

    def kvp(self, request: Request) -> Response:
        q = {k.lower(): v for k, v in request.query_params.items()}
        service = q.get("service", "WMTS")
        if service.upper() != "WMTS":
            return ows_error(400, "InvalidParameterValue", "SERVICE must be WMTS", "SERVICE")
        req = q.get("request")
        if req is None:
            return ows_error(400, "MissingParameterValue", "REQUEST is missing", "REQUEST")
        if req.lower() == "getcapabilities":
            return self.capabilities(request)
        if req.lower() != "gettile":
            return ows_error(400, "OperationNotSupported", f"{req} is not supported", "REQUEST")
        needed = ("layer", "tilematrixset", "tilematrix", "tilerow", "tilecol")
        missing = [k.upper() for k in needed if not q.get(k)]
        if missing:
            msg = f"missing {', '.join(missing)}"
            return ows_error(400, "MissingParameterValue", msg, missing[0])
        for key in ("tilerow", "tilecol"):
            if parse_int(q[key]) is None:
                msg = f"{key.upper()} must be an integer"
                return ows_error(400, "InvalidParameterValue", msg, key.upper())
        return self.tile(
            request,
            q["layer"],
            q.get("style", WMTS_STYLE),
            q["tilematrixset"],
            q["tilematrix"],
            q["tilerow"],
            q["tilecol"],
        )
