"""The XYZ face of ``tiledelta serve``: ``/tiles/{z}/{x}/{y}.png`` (or ``.jpg``), for Web
Mercator caches only (another scheme answers a JSON 404 naming the other faces)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiledelta.serve.http import TILE_NAME, error_response, parse_int
from tiledelta.serve.service import TileService


def routes(svc: TileService) -> list[Route]:
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
        return svc.tile_or_error(request, parse_int(p["z"]), y, parse_int(p["x"]))

    return [Route("/tiles/{z}/{x}/{name}", xyz_tile)]
