"""Publish: overwrite the service definition, then update the server's cache.

Where arcpy exists (ArcGIS Pro >= 2.7 on Windows) the service definition is made from
the configured .aprx map: signed in to the portal first (Pro's sign-in, or
``SignInToPortal`` with the .env account), a federated (``MAP_IMAGE``) or stand-alone
(``MAP_SERVICE``, ``[arcgis] server_connection``) draft, edited byte for byte so the
overwrite keeps and declares its cache (:mod:`~tiledelta.publish.arcgis.sddraft`),
staged and uploaded with ``UploadServiceDefinition``. Elsewhere a staged ``.sd`` given in
``[arcgis] sd`` is uploaded over REST and published with *Publish Service Definition*.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiledelta.credentials import env_value, same_url
from tiledelta.errors import RenderUnavailable
from tiledelta.grid import TilingScheme
from tiledelta.project import Project
from tiledelta.publish.arcgis import sddraft
from tiledelta.publish.arcgis.cache import (
    arcgis_config,
    connect,
    service_scheme,
    update_server,
    wait_for,
)
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
    job: str | None = None
    if has_arcpy() and cfg.aprx:
        sd, target = stage_with_arcpy(project, say)
        say(f"uploading {sd.name} to {target}")
        upload_with_arcpy(sd, target, project)
        say(f"published {cfg.service}")
    elif cfg.sd:
        sd = project.resolve(cfg.sd)
        if not sd.is_file():
            raise ArcGISError(f"[arcgis] sd: {sd} not found; stage the service definition first")
        job = _publish_over_rest(project, sd, say)
    else:
        raise ArcGISError(
            "nothing to publish: set [arcgis] aprx and map (needs ArcGIS Pro's arcpy) "
            "or [arcgis] sd (a staged .sd file)"
        )
    result: dict[str, Any] = {"published": cfg.service, "sd": str(sd), "job": job}
    if update_cache:
        result["cache"] = update_server(project, say=say)
    if cfg.item_id and cfg.portal:
        try:
            set_item_thumbnail(project, say=say)
            result["thumbnail"] = cfg.item_id
        except RenderUnavailable as exc:  # the core install without a local cache
            say(f"item thumbnail not updated: {exc}")
        if cfg.describe_runs:
            describe_run(project, run_summary(result), say=say)
            result["described"] = cfg.item_id
    return result


def _publish_over_rest(project: Project, sd: Path, say: Callable[[str], None]) -> str:
    """Upload a staged .sd and run *Publish Service Definition*; return the job id."""
    cfg = arcgis_config(project)
    with connect(project, warn=say) as client:
        say(f"uploading {sd.name}")
        item = client.upload(sd)
        job = client.submit(PUBLISH_TASK, in_sdp_id=item)
        status = wait_for(client, cfg, PUBLISH_TASK, job, say)
        if status.get("jobStatus") != "esriJobSucceeded":
            msgs = "; ".join(str(m.get("description", "")) for m in status.get("messages") or [])
            raise ArcGISError(advise(f"publishing failed ({status.get('jobStatus')}): {msgs}"))
        say(f"published {cfg.service}")
    return job


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


def keep_existing_cache(sddraft_path: Path, scheme: TilingScheme | None = None) -> list[str]:
    """Edit an .sddraft in place for an overwrite that keeps its map cache.

    Sets the top-level ``KeepExistingMapCache`` true and declares the cache
    (``isCached`` true, ``cacheOnDemand`` false, the tiling scheme when given), byte for
    byte (:mod:`tiledelta.publish.arcgis.sddraft`). Returns one line per change.
    """
    try:
        return sddraft.edit_file(sddraft_path, scheme=scheme)
    except sddraft.SDDraftError as exc:
        raise ArcGISError(str(exc)) from None


def _scrubbed(exc: BaseException, secrets: list[str]) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def sign_in_with_arcpy(arcpy: Any, project: Project, say: Callable[[str], None]) -> str:
    """Make sure arcpy is signed in to ``[arcgis] portal`` before a federated draft is exported.

    Pro's active sign-in is used when ``GetSigninToken()`` gives a token for that portal;
    otherwise ``arcpy.SignInToPortal`` with ARCGIS_USERNAME/ARCGIS_PASSWORD (an unattended
    run). Returns how it signed in.
    """
    cfg = arcgis_config(project)
    if not cfg.portal:
        raise ArcGISError(
            "[arcgis] portal is not set: a federated server is published through its portal "
            "(or set [arcgis] server_connection to a stand-alone server's .ags file)"
        )
    try:
        token = arcpy.GetSigninToken()
        active = arcpy.GetActivePortalURL()
    except Exception:  # no Pro session
        token, active = None, None
    if token and same_url(active, cfg.portal):
        say(f"signed in to {cfg.portal} through ArcGIS Pro")
        return "pro"
    user = env_value(project.root, "ARCGIS_USERNAME")
    password = env_value(project.root, "ARCGIS_PASSWORD")
    if not user or not password:
        raise ArcGISError(
            f"not signed in to {cfg.portal}: sign in to it in ArcGIS Pro (as the active "
            "portal), or set ARCGIS_USERNAME and ARCGIS_PASSWORD for unattended runs "
            f"(environment or {project.root / '.env'})"
        )
    try:
        arcpy.SignInToPortal(cfg.portal, user, password)
    except Exception as exc:
        raise ArcGISError(
            f"signing in to {cfg.portal} as {user} failed: {_scrubbed(exc, [password])}"
        ) from None
    say(f"signed in to {cfg.portal} as {user}")
    return "password"


def _publish_map(arcpy: Any, project: Project) -> Any:
    cfg = arcgis_config(project)
    if not cfg.aprx:
        raise ArcGISError("[arcgis] aprx: name the ArcGIS Pro project to publish from")
    where = cfg.aprx if cfg.aprx == "CURRENT" else str(project.resolve(cfg.aprx))
    try:
        aprx = arcpy.mp.ArcGISProject(where)
    except Exception:
        raise ArcGISError(
            f"[arcgis] aprx: {where} cannot be opened as an ArcGIS Pro project (.aprx)"
        ) from None
    maps = aprx.listMaps(cfg.map) if cfg.map else aprx.listMaps()
    names = [m.name for m in aprx.listMaps()]
    if not maps:
        raise ArcGISError(f"[arcgis] map: {cfg.aprx} has no map {cfg.map!r}; it has {names}")
    if len(maps) > 1:
        raise ArcGISError(f"[arcgis] map: {cfg.aprx} has several maps ({names}); name one")
    return maps[0]


def _service_scheme(project: Project, say: Callable[[str], None]) -> TilingScheme:
    """The service's tiling scheme (its MapServer JSON), else the project's own."""
    cfg = arcgis_config(project)
    try:
        with connect(project, warn=say) as client:
            return service_scheme(client.service_info(cfg.service), cfg.service)
    except ArcGISError as exc:
        say(f"using the project's tiling scheme for the draft ({exc})")
        return project.scheme


def stage_with_arcpy(project: Project, say: Callable[[str], None]) -> tuple[Path, str]:
    """Sharing draft from the .aprx map (overwrite, cache kept and declared), staged to a
    fresh .sd. Returns the .sd and the server to upload it to (URL or .ags path).

    Federated servers: ``getWebLayerSharingDraft("FEDERATED_SERVER", "MAP_IMAGE")``,
    signed in first. Stand-alone servers (``[arcgis] server_connection``):
    ``CreateSharingDraft("STANDALONE_SERVER", "MAP_SERVICE")`` with the .ags file.
    """
    import arcpy  # only on ArcGIS Pro machines

    cfg = arcgis_config(project)
    the_map = _publish_map(arcpy, project)
    folder, _, name = cfg.service.rpartition("/")
    if cfg.server_connection:
        ags = project.resolve(cfg.server_connection)
        if not ags.is_file():
            raise ArcGISError(
                f"[arcgis] server_connection: {ags} not found; make it in ArcGIS Pro "
                "(Insert > Connections > Server > New ArcGIS Server)"
            )
        draft = arcpy.sharing.CreateSharingDraft("STANDALONE_SERVER", "MAP_SERVICE", name, the_map)
        draft.targetServer = str(ags)
        target = str(ags)
    else:
        sign_in_with_arcpy(arcpy, project, say)
        draft = the_map.getWebLayerSharingDraft("FEDERATED_SERVER", "MAP_IMAGE", name)
        draft.federatedServerUrl = cfg.server
        target = cfg.server
    # Recent Pro releases read cache.useExistingCache only when the draft's cache is
    # enabled; older drafts have neither, and the draft edit below keeps the cache anyway.
    if hasattr(draft, "enableCache"):
        draft.enableCache = True
    cache = getattr(draft, "cache", None)
    if cache is not None and hasattr(cache, "useExistingCache"):
        cache.useExistingCache = True
    draft.overwriteExistingService = True
    if folder:
        draft.serverFolder = folder
    out = project.state_dir / "publish"
    out.mkdir(parents=True, exist_ok=True)
    draft_path, sd = out / f"{name}.sddraft", out / f"{name}.sd"
    for f in (draft_path, sd):
        f.unlink(missing_ok=True)  # an existing .sd makes staging fail
    secrets = [env_value(project.root, "ARCGIS_PASSWORD") or ""]
    try:
        draft.exportToSDDraft(str(draft_path))
    except Exception as exc:
        raise ArcGISError(
            advise(f"exporting the sharing draft failed: {_scrubbed(exc, secrets)}")
        ) from None
    scheme = _service_scheme(project, say)
    for change in keep_existing_cache(draft_path, scheme):
        say(f"draft: {change}")
    say("staging the service definition")
    try:
        arcpy.server.StageService(str(draft_path), str(sd))
    except Exception as exc:
        raise ArcGISError(advise(f"staging failed: {_scrubbed(exc, secrets)}")) from None
    return sd, target


def upload_with_arcpy(sd: Path, target: str, project: Project) -> None:
    """``arcpy.server.UploadServiceDefinition`` to the federated server URL or the .ags."""
    import arcpy

    secrets = [env_value(project.root, "ARCGIS_PASSWORD") or ""]
    try:
        arcpy.server.UploadServiceDefinition(str(sd), target, in_startupType="STARTED")
    except Exception as exc:
        raise ArcGISError(advise(f"publishing failed: {_scrubbed(exc, secrets)}")) from None
