"""Publish: overwrite the service definition, then update the server's cache.

Where arcpy exists (ArcGIS Pro >= 2.7 on Windows) the service definition is made from
the configured .aprx map with ``KeepExistingMapCache`` on, staged and uploaded.
Elsewhere a staged ``.sd`` given in ``[arcgis] sd`` is uploaded over REST and
published with the *Publish Service Definition* tool.

The portal item ``[arcgis] item_id`` gets the map's thumbnail
(:func:`set_item_thumbnail`), a locally rendered tile package
(:func:`upload_package`) and, with ``[arcgis] describe_runs``, one line per run
in its description.
"""

from __future__ import annotations

import datetime as dt
import html
import importlib.util
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import arcgis_config, connect, update_server
from tiledelta.publish.arcgis.client import PUBLISH_TASK, ArcGISError
from tiledelta.publish.thumbnail import render_thumbnail

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
    result: dict[str, Any] = {"published": cfg.service, "sd": str(sd), "job": job}
    if update_cache:
        result["cache"] = update_server(project, say=say)
    if cfg.item_id and cfg.portal:
        set_item_thumbnail(project, say=say)
        result["thumbnail"] = cfg.item_id
        if cfg.describe_runs:
            describe_run(project, run_summary(result), say=say)
            result["described"] = cfg.item_id
    return result


def _portal_item(project: Project, what: str) -> str:
    cfg = arcgis_config(project)
    if not cfg.item_id:
        raise ArcGISError(f"[arcgis] item_id is not set: which portal item gets the {what}?")
    if not cfg.portal:
        raise ArcGISError(f"[arcgis] portal is not set: the {what} goes to a portal item")
    return cfg.item_id


def set_item_thumbnail(project: Project, *, say: Callable[[str], None] = log.info) -> None:
    """Render the 600x400 thumbnail and set it on the portal item ``[arcgis] item_id``."""
    item_id = _portal_item(project, "thumbnail")
    png = render_thumbnail(project, (600, 400))
    with connect(project, warn=say) as client:
        client.update_item(item_id, thumbnail=png)
    say(f"thumbnail set on item {item_id}")


def upload_package(
    project: Project, tpkx_path: Path, *, say: Callable[[str], None] = log.info
) -> dict:
    """Upload a tile package (.tpkx) as the data of the portal item ``[arcgis] item_id``.

    The "render locally, upload a tile package" route: ``tiledelta package`` writes the
    .tpkx from the local cache, and this replaces the item's file with it.
    """
    item_id = _portal_item(project, "tile package")
    tpkx = Path(tpkx_path)
    if tpkx.suffix.lower() != ".tpkx":
        raise ArcGISError(f"{tpkx}: a tile package file name must end in .tpkx")
    if not tpkx.is_file():
        raise ArcGISError(f"{tpkx}: no such tile package; write it with 'tiledelta package'")
    size = tpkx.stat().st_size
    say(f"uploading {tpkx.name} ({size:,} bytes) to item {item_id}")
    with connect(project, warn=say) as client:
        client.upload_item_file(item_id, tpkx)
    say(f"tile package uploaded to item {item_id}")
    return {"item": item_id, "package": str(tpkx), "bytes": size}


def run_summary(result: dict, when: dt.datetime | None = None) -> str:
    """One line about a publish run, for the item's description."""
    when = when or dt.datetime.now().astimezone()
    parts = [f"{when:%Y-%m-%d %H:%M %Z}".strip() + ": tiledelta published"]
    if result.get("published"):
        parts[0] += f" {result['published']}"
    cache = result.get("cache")
    if isinstance(cache, dict):
        jobs = cache.get("jobs") or []
        levels = sorted({j.get("level") for j in jobs if j.get("level") is not None})
        if jobs:
            parts.append(
                f"cache rebuilt at level{'s' if len(levels) > 1 else ''} "
                f"{', '.join(map(str, levels))} ({len(jobs)} job{'s' if len(jobs) > 1 else ''})"
            )
        else:
            parts.append("cache already current")
    return "; ".join(parts)


def describe_run(project: Project, line: str, *, say: Callable[[str], None] = log.info) -> None:
    """Append ``line`` (as its own paragraph) to the portal item's description."""
    item_id = _portal_item(project, "run summary")
    with connect(project, warn=say) as client:
        current = client.get_item(item_id).get("description") or ""
        text = f"{current}<p>{html.escape(line)}</p>"
        client.update_item(item_id, description=text)
    say(f"run summary added to the description of item {item_id}")


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
    if not cfg.aprx:
        raise ArcGISError("[arcgis] aprx: name the ArcGIS Pro project to publish from")
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
