"""An ArcGIS Server emulator: a real HTTP server that follows the documented REST contract.

ArcGIS Enterprise cannot run here, so tiledelta's publishing code is tested against
this stand-in. It listens on a real socket, issues expiring tokens, accepts uploads,
publishes services, and its ``Manage Map Cache Tiles`` jobs really re-render the
requested tiles with Mapnik (through tiledelta's own renderer) into the service's
own Compact Cache V2, which its ``MapServer/tile`` endpoint serves. With
``portal=True`` a minimal Portal sits beside it: portal tokens, the federated
token exchange, and items whose thumbnail, data and fields can be updated.

It is test support, not part of the ``tiledelta`` package (a wheel does not carry it),
and it uses only tiledelta's public API. What it emulates, what it does not, and the
service definitions (7-Zip ``.sd``) and sign-in modes it accepts are described in
``docs/emulator.md``.

Modules:

- :mod:`~support.emulator.server`: :class:`Emulator` (state, lifecycle, services,
  routing) and the HTTP plumbing (``http.server``, bodies, multipart forms);
- :mod:`~support.emulator.model`: names and codes, :class:`Faults`, :class:`Job`,
  :class:`Service`, requests, answers and the two error shapes;
- :mod:`~support.emulator.tokens`: ``generateToken`` and token checks;
- :mod:`~support.emulator.portal`: the emulated Portal and its items;
- :mod:`~support.emulator.mapserver`: the services directory, MapServer and its tiles;
- :mod:`~support.emulator.jobs`: GP services, job resources and the job runner;
- :mod:`~support.emulator.publishing`: uploads, ``Publish Service Definition`` and
  :func:`make_service_definition`;
- :mod:`~support.emulator.caching`: ``Manage Map Cache Tiles`` and ``ReportCacheStatus``;
- :mod:`~support.emulator.cli`: ``python -m support.emulator`` (from the ``tests/``
  folder) ``--root DIR --port 6080 --user USER``; the password comes from
  ``--password`` or the ``ARCGIS_PASSWORD`` environment variable.
"""

from .caching import esri_polygon, tiles_in_area
from .cli import main
from .model import Faults, Job, RequestRecord, Service
from .portal import PortalItem
from .publishing import make_service_definition
from .server import Emulator, parse_multipart

__all__ = [
    "Emulator",
    "Faults",
    "Job",
    "PortalItem",
    "RequestRecord",
    "Service",
    "esri_polygon",
    "main",
    "make_service_definition",
    "parse_multipart",
    "tiles_in_area",
]
