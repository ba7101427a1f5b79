"""``/``: the viewer page (``static/index.html``, see :mod:`tiledelta.serve.viewer`) or,
without it, a plain page listing the service URLs; ``/service.json``: the same facts as
JSON (:meth:`TileService.summary`)."""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tiledelta.serve.http import NO_CACHE, base_url, json_response
from tiledelta.serve.service import TileService
from tiledelta.serve.viewer import page as viewer_page
from tiledelta.serve.viewer import url_list

STATIC_DIR = Path(__file__).parent / "static"


def routes(svc: TileService) -> list[Route]:
    def index(request: Request) -> Response:
        page = STATIC_DIR / "index.html"
        info = svc.summary(base_url(request))
        if page.is_file():  # the viewer page, its service URL list filled in
            return HTMLResponse(viewer_page(page, info["urls"]), headers=NO_CACHE)
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(svc.name)} - tiledelta</title></head><body>"
            f"<h1>{html.escape(svc.name)}</h1>"
            f"<p>{html.escape(info['cache_kind'])} cache, {html.escape(info['scheme'])}, "
            f"levels {html.escape(svc.project.config.levels)}</p>{url_list(info['urls'])}"
            "<p><a href='/service.json'>service.json</a></p></body></html>",
            headers=NO_CACHE,
        )

    def service_json(request: Request) -> Response:
        return json_response(svc.summary(base_url(request)))

    return [Route("/", index), Route("/service.json", service_json)]
