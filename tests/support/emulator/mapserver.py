"""Map services: the services directory, a cached MapServer's document, and its
``tile/{level}/{row}/{col}`` endpoint served from the service's compact cache."""

from __future__ import annotations

import logging
import math
from typing import Any

from tiledelta.errors import TileDeltaError
from tiledelta.grid import BUNDLE_PACKET, scheme_meters_per_unit, scheme_to_tile_info, tile_format

from .caching import antialiasing_mode
from .jobs import GP_TASKS
from .model import (
    CURRENT_VERSION,
    RESERVED_FOLDERS,
    Request,
    Response,
    Service,
    content_type,
    json_response,
    rest_error,
)

log = logging.getLogger(__name__)


class MapServerMixin:
    """The map services of :class:`~support.emulator.server.Emulator`.

    It uses the emulator's service lookup (``services``, ``_find_service``), its project
    loader (``_project``) and its compact-cache readers (``_reader``).
    """

    def _catalog(self, folder: str) -> dict | None:
        services = self.services()
        if not folder:
            folders = sorted({s.folder for s in services if s.folder} | RESERVED_FOLDERS)
            listed = [{"name": s.name, "type": "MapServer"} for s in services if not s.folder]
            return {"currentVersion": CURRENT_VERSION, "folders": folders, "services": listed}
        if folder == "System":
            hidden = {"CachingControllers"} if self.faults.no_caching_controllers else set()
            listed = [
                {"name": f"System/{n}", "type": "GPServer"}
                for n in sorted(GP_TASKS)
                if n not in hidden
            ]
        elif folder == "Utilities":
            listed = []
        else:
            listed = [{"name": s.key, "type": "MapServer"} for s in services if s.folder == folder]
            if not listed:
                return None
        return {"currentVersion": CURRENT_VERSION, "folders": [], "services": listed}

    def _mapserver(self, req: Request, where: list[str], rest: list[str]) -> Response:
        svc = None
        if len(where) in (1, 2):
            folder, name = (where[0], where[1]) if len(where) == 2 else ("", where[0])
            svc = self._find_service(folder, name)
        if svc is None:
            detail = f"Service {'/'.join(where)}/MapServer not found"
            if rest[:1] == ["tile"]:
                return json_response(rest_error(404, "Service not found", [detail]), status=404)
            return json_response(rest_error(404, "Service not found", [detail]), req.pretty)
        if not rest:
            return json_response(self._mapserver_info(svc), req.pretty)
        if rest[0] == "tile" and len(rest) == 4:
            return self._tile(svc, rest[1:])
        return json_response(
            rest_error(
                400,
                "Unable to complete operation.",
                [f"MapServer/{'/'.join(rest)} is not implemented by the emulator"],
            ),
            req.pretty,
        )

    def _tile(self, svc: Service, parts: list[str]) -> Response:
        try:
            level, row, col = (int(p) for p in parts)
        except ValueError:
            return json_response(
                rest_error(400, "Invalid URL", ["tile/{level}/{row}/{col}"]), status=400
            )
        reader = self._reader(svc)
        data = None
        if reader is not None and row >= 0 and col >= 0:
            try:
                data = reader.get(level, row, col)
            except TileDeltaError as exc:
                log.warning("tile %s/%d/%d/%d: %s", svc.key, level, row, col, exc)
        if data is None:
            return json_response(rest_error(404, "Tile not found"), status=404)
        return Response(200, data, content_type(data), {"Cache-Control": "no-cache"})

    def _mapserver_info(self, svc: Service) -> dict[str, Any]:
        project = self._project(svc)
        scheme = project.cache_scheme
        cache = project.config.cache
        fmt = tile_format(cache.format).esri
        tile_info = scheme_to_tile_info(scheme)
        tile_info["format"] = fmt
        tile_info["compressionQuality"] = cache.quality if fmt in ("JPEG", "MIXED") else 0
        sr = tile_info["spatialReference"]
        meta = svc.info()
        ext = meta.get("extent") or (list(scheme.extent) if scheme.extent else None)
        if ext:
            envelope = dict(zip(("xmin", "ymin", "xmax", "ymax"), ext, strict=True))
        else:
            envelope = {"xmin": None, "ymin": None, "xmax": None, "ymax": None}
        envelope["spatialReference"] = sr
        levels = project.levels
        mpu = scheme_meters_per_unit(scheme)
        # tiledelta's rule (grid.esri.esri_units) is not exported from tiledelta.grid
        units = (
            "esriMeters"
            if math.isclose(mpu, 1.0)
            else "esriFeet"
            if math.isclose(mpu, 0.3048, rel_tol=1e-5)
            else "esriUnknownUnits"
        )
        return {
            "currentVersion": CURRENT_VERSION,
            "serviceDescription": meta.get("description", ""),
            "mapName": svc.name,
            "description": meta.get("description", ""),
            "copyrightText": "",
            "documentInfo": {
                "Title": svc.name,
                "Author": "",
                "Comments": "",
                "Subject": "",
                "Category": "",
                "AntialiasingMode": antialiasing_mode(svc),
                "TextAntialiasingMode": "Force",
                "Keywords": "",
            },
            "supportsDynamicLayers": False,
            "layers": [
                {
                    "id": i,
                    "name": lyr.name,
                    "parentLayerId": -1,
                    "defaultVisibility": True,
                    "subLayerIds": None,
                    "minScale": 0,
                    "maxScale": 0,
                }
                for i, lyr in enumerate(project.style.layers)
            ],
            "tables": [],
            "spatialReference": sr,
            "singleFusedMapCache": True,
            "tileInfo": tile_info,
            "storageInfo": {
                "storageFormat": "esriMapCacheStorageModeCompactV2",
                "packetSize": BUNDLE_PACKET,
            },
            "initialExtent": dict(envelope),
            "fullExtent": dict(envelope),
            "minScale": scheme.lod(min(levels)).scale,
            "maxScale": scheme.lod(max(levels)).scale,
            "minLOD": min(levels),
            "maxLOD": max(levels),
            "units": units,
            "supportedImageFormatTypes": "PNG32,PNG24,PNG,JPG,DIB,TIFF,EMF,PS,PDF,GIF,SVG,SVGZ,BMP",
            "capabilities": "Map,Query,Data",
            "exportTilesAllowed": False,
            "cacheType": "Map",
        }
