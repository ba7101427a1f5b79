"""Publish: overwrite the service definition, then update the server's cache.

Where arcpy exists (ArcGIS Pro >= 2.7 on Windows) the service definition is made from
the configured .aprx map with ``KeepExistingMapCache`` on, staged and uploaded.
Elsewhere a staged ``.sd`` given in ``[arcgis] sd`` is uploaded over REST and
published with the *Publish Service Definition* tool.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from tiledelta.arcgis.cache import arcgis_config, connect, update_server
from tiledelta.arcgis.client import PUBLISH_TASK, ArcGISError
from tiledelta.project import Project

log = logging.getLogger(__name__)

#: Known field failures and what to do about them.
ADVICE = [
    (
        re.compile(r"001117|description", re.I),
        "the map has no description: fill in the map's Description in ArcGIS Pro, then publish",
    ),
    (
        re.compile(r"00231|not registered|unregistered", re.I),
        "a data source is not registered with the server: register its folder or database "
        "in ArcGIS Server Manager (Data Stores), or copy data to the server",
    ),
    (
        re.compile(r"already exists", re.I),
        "the staged .sd file already exists: delete it (tiledelta stages into a fresh file)",
    ),
]


def advise(message: str) -> str:
    """``message`` plus what to do, for the failures publishers meet in the field."""
    for pattern, advice in ADVICE:
        if pattern.search(message):
            return f"{message} -> {advice}"
    return message


def has_arcpy() -> bool:
    return importlib.util.find_spec("arcpy") is not None


def publish(
    project: Project, *, say: Callable[[str], None] = log.info, update_cache: bool = True
) -> dict:
    """Overwrite the service and update its cache; return a summary."""
    cfg = arcgis_config(project)
    if has_arcpy() and cfg.aprx:
        sd = stage_with_arcpy(project, say)
    elif cfg.sd:
        sd = project.resolve(cfg.sd)
        if not sd.is_file():
            raise ArcGISError(f"[arcgis] sd: {sd} not found; stage the service definition first")
    else:
        raise ArcGISError(
            "nothing to publish: set [arcgis] aprx and map (needs ArcGIS Pro's arcpy) "
            "or [arcgis] sd (a staged .sd file)"
        )
    with connect(project, warn=say) as client:
        say(f"uploading {sd.name}")
        item = client.upload(sd)
        job = client.submit(PUBLISH_TASK, in_sdp_id=item)
        status = client.wait_job(
            PUBLISH_TASK,
            job,
            poll=cfg.poll_seconds,
            timeout=60 * cfg.job_timeout_minutes,
            on_message=lambda m: say(f"  server: {m}"),
        )
        if status.get("jobStatus") != "esriJobSucceeded":
            msgs = "; ".join(str(m.get("description", "")) for m in status.get("messages") or [])
            raise ArcGISError(advise(f"publishing failed ({status.get('jobStatus')}): {msgs}"))
        say(f"published {cfg.service}")
    result = {"published": cfg.service, "sd": str(sd), "job": job}
    if update_cache:
        result["cache"] = update_server(project, say=say)
    if cfg.item_id and cfg.portal:
        set_item_thumbnail(project, say=say)
        result["thumbnail"] = cfg.item_id
    return result


def set_item_thumbnail(project: Project, *, say: Callable[[str], None] = log.info) -> None:
    """Render the 600x400 thumbnail and set it on the portal item ``[arcgis] item_id``."""
    from tiledelta.thumbnail import render_thumbnail

    cfg = arcgis_config(project)
    if not cfg.item_id:
        raise ArcGISError("[arcgis] item_id is not set: which portal item gets the thumbnail?")
    png = render_thumbnail(project, (600, 400))
    with connect(project, warn=say) as client:
        client.update_item(cfg.item_id, thumbnail=png)
    say(f"thumbnail set on item {cfg.item_id}")


def keep_existing_cache(sddraft: Path) -> None:
    """Set ``KeepExistingMapCache`` to true in an .sddraft (so overwriting keeps the cache)."""
    tree = ET.parse(sddraft)
    found = False
    for prop in tree.iter("PropertySetProperty"):
        key = prop.find("Key")
        if key is not None and key.text == "KeepExistingMapCache":
            value = prop.find("Value")
            if value is not None:
                value.text = "true"
                found = True
    if not found:
        raise ArcGISError(f"{sddraft}: no KeepExistingMapCache property to set")
    tree.write(sddraft, encoding="utf-8", xml_declaration=True)


def stage_with_arcpy(project: Project, say: Callable[[str], None]) -> Path:  # pragma: no cover
    """Sharing draft from the .aprx map (overwrite, keep cache), staged to a fresh .sd."""
    import arcpy  # only on ArcGIS Pro machines

    cfg = arcgis_config(project)
    aprx = arcpy.mp.ArcGISProject(str(project.resolve(cfg.aprx)))
    maps = aprx.listMaps(cfg.map or "*")
    if not maps:
        raise ArcGISError(f"{cfg.aprx}: no map named {cfg.map!r}")
    folder, _, name = cfg.service.rpartition("/")
    draft = maps[0].getWebLayerSharingDraft("FEDERATED_SERVER", "MAP_IMAGE", name)
    draft.federatedServerUrl = cfg.server
    draft.overwriteExistingService = True
    if folder:
        draft.serverFolder = folder
    out = project.state_dir / "publish"
    out.mkdir(parents=True, exist_ok=True)
    sddraft, sd = out / f"{name}.sddraft", out / f"{name}.sd"
    for f in (sddraft, sd):
        f.unlink(missing_ok=True)  # an existing .sd makes staging fail
    draft.exportToSDDraft(str(sddraft))
    keep_existing_cache(sddraft)
    say("staging the service definition")
    try:
        arcpy.server.StageService(str(sddraft), str(sd))
    except Exception as exc:
        raise ArcGISError(advise(f"staging failed: {exc}")) from exc
    return sd
