"""The ArcGIS REST face of ``tiledelta serve``: a cached MapServer, which ArcGIS Pro, the
ArcGIS Maps SDK for JavaScript, QGIS and GDAL can add.

- ``/arcgis/rest/info`` and ``/arcgis/rest/services?f=json``: the server and its catalog;
- ``/arcgis/rest/services/<name>/MapServer?f=json`` (``f=pjson`` indents) and ``.../layers``;
- ``.../MapServer/tile/{level}/{row}/{col}``: the stored tile, or a JSON error.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiledelta.grid import scheme_to_tile_info
from tiledelta.serve.http import error_response, json_response, parse_int
from tiledelta.serve.service import TileService

#: The ArcGIS Server version the REST face claims (the JSON follows 10.x/11.x shapes).
ARCGIS_VERSION = 11.1
MAPSERVER = "/arcgis/rest/services/{name}/MapServer"


def mapserver_json(svc: TileService) -> dict[str, Any]:
    """The MapServer document of the service (``.../MapServer?f=json``)."""
    info = scheme_to_tile_info(svc.scheme)
    sr = info["spatialReference"]
    info["format"] = svc.fmt.esri
    info["compressionQuality"] = svc.quality if svc.fmt.name in ("jpeg", "mixed") else 0
    ext = svc.data_extent()
    envelope = {
        "xmin": ext.xmin,
        "ymin": ext.ymin,
        "xmax": ext.xmax,
        "ymax": ext.ymax,
        "spatialReference": sr,
    }
    lo, hi = svc.scheme.lod(svc.levels[0]), svc.scheme.lod(svc.levels[-1])
    doc: dict[str, Any] = {
        "currentVersion": ARCGIS_VERSION,
        "serviceDescription": f"tiledelta cache of {svc.name} ({svc.project.config.levels})",
        "mapName": svc.name,
        "description": "",
        "copyrightText": "",
        "supportsDynamicLayers": False,
        "layers": [
            {
                "id": 0,
                "name": svc.name,
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
        "units": svc.units,
        "supportedImageFormatTypes": svc.fmt.esri,
        "documentInfo": {"Title": svc.name, "Author": "", "Comments": "", "Subject": ""},
        "capabilities": "Map",
        "supportedQueryFormats": "JSON",
        "exportTilesAllowed": False,
        "maxRecordCount": 0,
        "maxImageHeight": 4096,
        "maxImageWidth": 4096,
        "supportedExtensions": "",
    }
    if svc.project.config.cache.kind == "compact":
        doc["storageInfo"] = {
            "storageFormat": "esriMapCacheStorageModeCompactV2",
            "packetSize": 128,
        }
    return doc


def _pretty(request: Request) -> bool:
    return request.query_params.get("f", "").lower() == "pjson"


def routes(svc: TileService) -> list[Route]:
    return ArcGISRest(svc).routes()


class ArcGISRest:
    """The REST endpoints over one :class:`TileService`."""

    def __init__(self, svc: TileService) -> None:
        self.svc = svc

    def routes(self) -> list[Route]:
        return [
            Route("/arcgis/rest/info", self.info),
            Route("/arcgis/rest/services", self.catalog),
            Route(MAPSERVER, self.mapserver),
            Route(MAPSERVER + "/layers", self.layers),
            Route(MAPSERVER + "/tile/{level}/{row}/{col}", self.tile),
        ]

    def info(self, request: Request) -> Response:
        return json_response(
            {
                "currentVersion": ARCGIS_VERSION,
                "fullVersion": f"{ARCGIS_VERSION}.0",
                "authInfo": {"isTokenBasedSecurity": False},
            },
            pretty=_pretty(request),
        )

    def catalog(self, request: Request) -> Response:
        return json_response(
            {
                "currentVersion": ARCGIS_VERSION,
                "folders": [],
                "services": [{"name": self.svc.name, "type": "MapServer"}],
            },
            pretty=_pretty(request),
        )

    def _unknown(self, request: Request) -> Response | None:
        if request.path_params["name"] != self.svc.name:
            return error_response(404, "Service not found")
        return None

    def mapserver(self, request: Request) -> Response:
        return self._unknown(request) or json_response(
            mapserver_json(self.svc), pretty=_pretty(request)
        )

    def layers(self, request: Request) -> Response:
        if (bad := self._unknown(request)) is not None:
            return bad
        layer = mapserver_json(self.svc)["layers"][0]
        layer.update({"type": "Raster Layer", "geometryType": None, "fields": None})
        return json_response({"layers": [layer], "tables": []}, pretty=_pretty(request))

    def tile(self, request: Request) -> Response:
        if (bad := self._unknown(request)) is not None:
            return bad
        p = request.path_params
        level, row, col = parse_int(p["level"]), parse_int(p["row"]), parse_int(p["col"])
        return self.svc.tile_or_error(request, level, row, col)
