"""A project published on the emulated ArcGIS Server, the way the ArcGIS tests start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.emulator import Emulator, make_service_definition
from tiledelta.api import load_project, seed
from tiledelta.config import ArcGISConfig
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.publish.arcgis.publish import publish


def publish_on_emulator(
    county: Path,
    emu: Emulator,
    user: str,
    password: str,
    *,
    service: str = "Tests/County",
    cache: dict[str, Any] | None = None,
    **arcgis: Any,
) -> None:
    """Point ``county`` at ``emu`` (fast polls, ``.env`` credentials), seed it locally,
    publish it with that cache and take the server's baseline (``mark_current``).

    ``cache`` changes ``[cache]`` keys (the emulator keeps no blank tiles, so tests that
    compare with it pass ``{"blank_tiles": "skip"}``); ``arcgis`` adds ``[arcgis]`` keys.
    """
    folder, name = service.split("/")
    project = Project.load(county).updated(
        render={"processes": 1},
        cache=cache or {},
        arcgis=ArcGISConfig(
            server=emu.url,
            service=service,
            sd="County.sd",
            poll_seconds=0.05,
            busy_timeout_minutes=0.05,
            **arcgis,
        ),
    )
    project.save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={user}\nARCGIS_PASSWORD={password}\n")
    seed(load_project(county))
    make_service_definition(county, county / "County.sd", folder, name, include_cache=True)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    update_server(load_project(county), mark_current=True)
