"""The stand-in's session state: the portal sign-in, messages, progressor, current project.

Tests configure it through :mod:`arcpy.standin` (``configure``/``reset``); tool code only
sees the public arcpy functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Pro's default portal when nobody signed in to another one.
DEFAULT_PORTAL = "https://www.arcgis.com/"


@dataclass
class Session:
    """What ArcGIS Pro would know at this moment."""

    portal_url: str | None = None  # the active portal
    token: str | None = None
    referer: str | None = None
    expires: int = 0  # epoch seconds
    username: str | None = None
    current_project: str | None = None  # the .aprx "CURRENT" opens (None: not inside Pro)
    messages: list[tuple[str, str]] = field(default_factory=list)  # (severity, text)
    progressor: dict[str, Any] = field(default_factory=dict)
    progress_log: list[dict[str, Any]] = field(default_factory=list)
    echo: bool = True  # print messages to stdout (the geoprocessing pane's stand-in)


session = Session()
