"""``tiledelta serve``: a local, read-only tile server over a project's cache.

One ASGI app (Starlette, run by uvicorn) answers, for any cache kind (compact,
MBTiles, XYZ):

- ``/tiles/{z}/{x}/{y}.png`` (or ``.jpg``): XYZ tiles, Web Mercator caches only
  (:mod:`~tiledelta.serve.xyz`);
- ``/arcgis/rest/services?f=json``, ``/arcgis/rest/services/<name>/MapServer?f=json``
  and ``.../MapServer/tile/{level}/{row}/{col}``: an ArcGIS REST cached MapServer
  (:mod:`~tiledelta.serve.arcgis_rest`);
- ``/wmts/1.0.0/WMTSCapabilities.xml``, ``/wmts?SERVICE=WMTS&REQUEST=...`` and
  ``/wmts/1.0.0/<layer>/default/<set>/{TileMatrix}/{TileRow}/{TileCol}.png``: OGC WMTS 1.0.0
  (:mod:`~tiledelta.serve.wmts`);
- ``/`` and ``/service.json`` (:mod:`~tiledelta.serve.pages`), the viewer's endpoints
  (:mod:`~tiledelta.serve.viewer`) and ``/static`` from ``serve/static/`` when it exists.

Tiles are read by integer address only (never by a path taken from the request), through
the cache opened read-only once (:class:`~tiledelta.serve.service.TileService`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tiledelta.errors import ConfigError, PortInUse
from tiledelta.project import Project
from tiledelta.serve import arcgis_rest, pages, viewer, wmts, xyz
from tiledelta.serve.http import error_response
from tiledelta.serve.pages import STATIC_DIR
from tiledelta.serve.service import DEFAULT_MAX_AGE, TileService

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_AGE", "TileService", "create_app", "run"]

#: Browser clients on any origin may read tiles and their validators.
CORS = Middleware(
    CORSMiddleware,
    allow_origins=["*"],
    allow_methods=["GET", "HEAD"],
    expose_headers=["ETag", "Last-Modified"],
)


async def _http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    message = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(code, str(message))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("error serving %s", request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def create_app(project: Project, *, max_age: int = DEFAULT_MAX_AGE) -> Starlette:
    """The ASGI app serving ``project``'s cache (opened read-only, once)."""
    svc = TileService(project, max_age=max_age)
    routes: list[Any] = [
        *pages.routes(svc),
        *xyz.routes(svc),
        *arcgis_rest.routes(svc),
        *wmts.routes(svc),
        *viewer.routes(project),
    ]
    if STATIC_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            svc.close()

    app = Starlette(
        routes=routes,
        middleware=[CORS],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.service = svc
    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, before anything else is printed:
    :class:`~tiledelta.errors.PortInUse` (exit code 3) when another program has the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # as uvicorn: rebind a port in TIME_WAIT (on Windows this
            # option would let two servers share the port, so it is left off there)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno in _IN_USE or getattr(exc, "winerror", None) == 10048:
            raise PortInUse(
                f"{host}:{port} is already in use by another program; "
                "stop it or choose another --port"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port"
        ) from None
    return sock


_IN_USE = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}


def base_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for ``host:port``."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def run(
    project: Project,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    max_age: int = DEFAULT_MAX_AGE,
    say: Callable[[str], None] | None = print,
    log_level: str = "warning",
) -> None:
    """Serve ``project``'s cache with uvicorn until interrupted.

    The port is taken first (a busy port is one :class:`~tiledelta.errors.PortInUse`
    line before any other output); then the viewer's URL and the service URLs are said.
    """
    app = create_app(project, max_age=max_age)
    sock = listen(host, port)
    try:
        port = sock.getsockname()[1]  # the real port when 0 was asked for
        if say is not None:
            base = base_url(host, port)
            say(f"{'viewer':<12} {base}/")
            for key, url in app.state.service.summary(base)["urls"].items():
                say(f"{key:<12} {url}")
            say("Ctrl-C stops the server")
        config = uvicorn.Config(app, log_level=log_level)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
