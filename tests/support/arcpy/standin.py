"""Test hooks of the stand-in arcpy (not part of arcpy's API).

``configure(...)`` sets what ArcGIS Pro would know (the current project, an active
portal sign-in made outside Python, e.g. Windows authentication); ``reset()`` forgets
everything; ``messages()`` returns what tools wrote to the geoprocessing pane.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from . import _state


def reset() -> None:
    """Forget the sign-in, the current project, messages and progress."""
    _state.session = _state.Session()


def configure(
    *,
    current_project: str | None = None,
    portal_url: str | None = None,
    token: str | None = None,
    referer: str | None = None,
    expires_in: float = 3600.0,
    username: str | None = None,
    echo: bool | None = None,
) -> None:
    """Set Pro's current project and/or an active portal sign-in (``token`` from the portal)."""
    s = _state.session
    if current_project is not None:
        s.current_project = current_project
    if portal_url is not None:
        s.portal_url = portal_url.rstrip("/") + "/"
        s.token, s.referer, s.username = token, referer, username
        s.expires = int(time.time() + expires_in)
    if echo is not None:
        s.echo = echo


def messages(severity: str | None = None) -> list[str]:
    """Texts written with AddMessage/AddWarning/AddError (``severity``: 0, 1 or 2 as text)."""
    return [t for sev, t in _state.session.messages if severity is None or sev == severity]


def progress_log() -> list[dict]:
    """Every SetProgressor/SetProgressorLabel/SetProgressorPosition/ResetProgressor call."""
    return list(_state.session.progress_log)


def make_aprx(
    path: str | Path,
    maps: dict[str, list[str]],
    *,
    generation: int = 3,
) -> Path:
    """Write a minimal .aprx: a zip of CIM documents, JSON (Pro 3.x) or XML (Pro 2.x).

    ``maps`` maps each map's name to its layer names. Only what the stand-in reads (and
    a project document) is written; real projects hold much more.
    """
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if generation >= 3:
            zf.writestr(
                "GISProject.json",
                json.dumps({"type": "CIMGISProject", "version": "3.3.0", "mapViews": []}),
            )
            for i, (name, layers) in enumerate(maps.items()):
                doc = {
                    "type": "CIMMapDocument",
                    "version": "3.3.0",
                    "mapDefinition": {"type": "CIMMap", "name": name, "mapType": "Map"},
                    "layerDefinitions": [
                        {"type": "CIMFeatureLayer", "name": lyr, "uRI": f"CIMPATH={lyr}.json"}
                        for lyr in layers
                    ],
                }
                zf.writestr(f"map{i}/map{i}.json", json.dumps(doc))
        else:
            ns = (
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
                'xmlns:typens="http://www.esri.com/schemas/ArcGIS/2.8.0"'
            )
            zf.writestr(
                "GISProject.xml",
                f'<?xml version="1.0" encoding="utf-8"?>\n'
                f'<CIMGISProject xsi:type="typens:CIMGISProject" {ns}></CIMGISProject>',
            )
            for i, (name, layers) in enumerate(maps.items()):
                lyrs = "".join(
                    f'<CIMDefinition xsi:type="typens:CIMFeatureLayer"><Name>{escape(lyr)}</Name>'
                    "</CIMDefinition>"
                    for lyr in layers
                )
                zf.writestr(
                    f"map{i}/map{i}.xml",
                    f'<?xml version="1.0" encoding="utf-8"?>\n'
                    f'<CIMMapDocument xsi:type="typens:CIMMapDocument" {ns}>'
                    f'<MapDefinition xsi:type="typens:CIMMap"><Name>{escape(name)}</Name>'
                    f"</MapDefinition><LayerDefinitions>{lyrs}</LayerDefinitions>"
                    "</CIMMapDocument>",
                )
    return path
