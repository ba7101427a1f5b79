"""``update --target arcgis --via package``: render locally, send the changed tiles as a
tile-package patch, and have ArcGIS import it, so the server never renders.

1. The local cache is updated (the same run as ``tiledelta update``).
2. The tiles that update wrote or removed (plus any patch an earlier run could not
   deliver, kept in ``.tiledelta/patch-pending.json``) are packaged as .tpkx patches.
3. A **hosted tile layer** gets each patch as its own portal item, imported with
   ``importTiles``: bundles where the update only wrote tiles are merged with
   ``mergeBundle=true, replaceTiles=true``; bundles where it removed tiles are sent whole
   and overwrite the server's bundle (``mergeBundle=false``), since a merge cannot delete.
   The patch items are deleted afterwards unless ``[arcgis] keep_patch_item``.
4. An **ArcGIS Server map service** gets the patch through the Administrator API's
   uploads and *Import Map Server Cache* (``source_cache_type=TILE_PACKAGE``,
   ``overwrite=OVERWRITE``), constrained to the bundles of the patch.

The pending record is cleared only when every import succeeded, so a failed import is
sent again by the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyproj

from tiledelta.build import build_update
from tiledelta.build.context import Progress
from tiledelta.change import last_update_tiles
from tiledelta.grid import BUNDLE_PACKET, bundle_origin, tile_bounds
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import arcgis_config, connect, service_scheme, wait_for
from tiledelta.publish.arcgis.client import ArcGISClient, ArcGISError
from tiledelta.publish.package import write_tpkx
from tiledelta.runs import run
from tiledelta.stores import open_project_store

log = logging.getLogger(__name__)

IMPORT_TASK = "System/CachingTools/GPServer/Import Map Server Cache"
PENDING = "patch-pending.json"
Addr = tuple[int, int, int]


def service_kind(project: Project) -> str:
    """``hosted-tile-layer`` or ``map-service`` (``[arcgis] service_type``; "auto" takes
    a service in the ``Hosted`` folder for a hosted tile layer)."""
    cfg = arcgis_config(project)
    if cfg.service_type != "auto":
        return cfg.service_type
    return "hosted-tile-layer" if cfg.service.split("/")[0] == "Hosted" else "map-service"


def _pending_path(project: Project) -> Path:
    return project.state_dir / PENDING


def pending_tiles(project: Project) -> set[Addr]:
    """Tiles a patch has still to deliver (from runs whose import did not finish)."""
    p = _pending_path(project)
    if not p.is_file():
        return set()
    return {(int(a), int(b), int(c)) for a, b, c in json.loads(p.read_text("utf-8"))}


def _save_pending(project: Project, tiles: set[Addr]) -> None:
    p = _pending_path(project)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(tiles)), "utf-8")
    tmp.replace(p)


def split_patch(
    project: Project, tiles: set[Addr]
) -> tuple[list[Addr], list[Addr], set[Addr], set[Addr]]:
    """(tiles to merge, every tile of the bundles to overwrite, those bundles, the
    removed tiles).

    A bundle where a tile was removed is sent whole (all its tiles in the local cache,
    possibly none), to overwrite the server's bundle; in the others only the changed
    tiles go.
    """
    with open_project_store(project, create=False) as store:
        present = set(store.get_many(sorted(tiles)))
        removed = tiles - present
        whole = {(lv, *bundle_origin(r, c)) for lv, r, c in removed}
        bundle_tiles: list[Addr] = []
        for lv in sorted({k[0] for k in whole}):
            bundle_tiles += [
                a for a in store.iter_tiles(lv) if (lv, *bundle_origin(a[1], a[2])) in whole
            ]
    merge = sorted(a for a in present if (a[0], *bundle_origin(a[1], a[2])) not in whole)
    return merge, sorted(bundle_tiles), whole, removed


def patch_extent(project: Project, tiles: list[Addr], wkid: int | None) -> dict[str, Any]:
    """The extent (JSON, scheme CRS) of the bundles holding ``tiles``."""
    scheme = project.cache_scheme
    boxes = []
    for lv, r0, c0 in {(lv, *bundle_origin(r, c)) for lv, r, c in tiles}:
        a = tile_bounds(scheme, lv, r0, c0)
        b = tile_bounds(scheme, lv, r0 + BUNDLE_PACKET - 1, c0 + BUNDLE_PACKET - 1)
        boxes.append(
            (min(a.xmin, b.xmin), min(a.ymin, b.ymin), max(a.xmax, b.xmax), max(a.ymax, b.ymax))
        )
    xmin, ymin = min(b[0] for b in boxes), min(b[1] for b in boxes)
    xmax, ymax = max(b[2] for b in boxes), max(b[3] for b in boxes)
    sr: dict[str, Any] = (
        {"wkid": wkid}
        if wkid
        else {"wkt": pyproj.CRS.from_user_input(scheme.crs).to_wkt("WKT1_ESRI")}
    )
    return {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax, "spatialReference": sr}


def update_via_package(
    project: Project,
    *,
    say: Callable[[str], None] = log.info,
    progress: Progress | None = None,
    upload_progress: Progress | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Update the local cache, then patch the ArcGIS service's cache with its changed
    tiles (see the module's docstring). Returns the local run summary with ``patch``."""
    cfg = arcgis_config(project)
    kind = service_kind(project)
    summary = run(
        project, build_update, name="update", progress=progress, notify=notify, keep_before=True
    ).as_json()
    last = last_update_tiles(project)
    tiles = pending_tiles(project) | {tuple(a) for a in (last.tolist() if last is not None else [])}
    result: dict[str, Any] = {
        "service": cfg.service,
        "kind": kind,
        "tiles": len(tiles),
        "imports": [],
    }
    summary["patch"] = result
    if not tiles:
        say("no tile changed: nothing to send")
        return summary
    _save_pending(project, tiles)  # kept until every import succeeded
    merge, whole, whole_bundles, removed = split_patch(project, set(tiles))
    out = project.state_dir / "patches"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = cfg.service.rsplit("/", 1)[-1]
    steps: list[tuple[str, list[Addr], set[Addr], bool]] = []
    if kind == "map-service":
        # Import Map Server Cache overwrites tiles but cannot delete them.
        present = sorted(set(tiles) - removed)
        if present:
            steps.append(("tiles", present, set(), True))
        if removed:
            say(
                f"{len(removed):,} tile(s) the update removed cannot be deleted by an import: "
                "they stay on the server until 'update --target arcgis' redraws them"
            )
    else:
        if whole_bundles:  # first: bundles overwritten whole (they carry the removals)
            steps.append(("bundles", whole, whole_bundles, False))
        if merge:
            steps.append(("tiles", merge, set(), True))
    if upload_progress is None:  # a line per part sent when a patch goes in parts

        def upload_progress(done: int, total: int) -> None:
            if total > cfg.part_mb * 1024 * 1024:
                say(f"  uploaded {done / 2**20:,.1f} of {total / 2**20:,.1f} MB")

    with connect(project, warn=say) as client:
        info = client.service_info(cfg.service)
        scheme = service_scheme(info, cfg.service)
        if not scheme.same_grid(project.cache_scheme):
            raise ArcGISError(
                f"{cfg.service} has another tiling scheme than the local cache; a tile "
                "package cannot patch it (use --target arcgis without --via package)"
            )
        for label, addrs, bundles, merge_bundle in steps:
            tpkx = out / f"{name}-patch-{stamp}-{label}.tpkx"
            pkg = write_tpkx(project, tpkx, tiles=addrs, bundles=bundles)
            say(
                f"patch {tpkx.name}: {pkg['tiles']:,} tiles in {pkg['bundles']} bundle(s), "
                f"levels {pkg['levels']}"
                + (
                    f" ({len(removed):,} removed tiles: bundles sent whole)"
                    if not merge_bundle
                    else ""
                )
            )
            cover = addrs + [(lv, r0, c0) for lv, r0, c0 in bundles]
            if kind == "hosted-tile-layer":
                step = _import_hosted(
                    client, project, tpkx, pkg, cover, merge_bundle, say, upload_progress
                )
            else:
                step = _import_map_service(client, project, tpkx, pkg, cover, say, upload_progress)
            result["imports"].append(step)
            tpkx.unlink(missing_ok=True)
    _pending_path(project).unlink(missing_ok=True)
    result["removed"] = len(removed)
    return summary


def _import_hosted(
    client: ArcGISClient,
    project: Project,
    tpkx: Path,
    pkg: dict,
    cover: list[Addr],
    merge_bundle: bool,
    say: Callable[[str], None],
    progress: Progress | None,
) -> dict[str, Any]:
    cfg = arcgis_config(project)
    item = client.add_item(
        tpkx,
        type="Compact Tile Package",
        title=tpkx.stem,
        tags="tiledelta,patch",
        typeKeywords="Compact Tile Package,Tile Package,tpkx,tiledelta-patch",
        part_bytes=int(cfg.part_mb * 1024 * 1024),
        progress=progress,
        resume_dir=project.state_dir / "uploads",
    )
    say(f"uploaded {tpkx.name} as its own item {item}")
    extent = patch_extent(project, cover, project.cache_scheme.wkid)
    job = client.import_tiles(
        cfg.service,
        item,
        levels=pkg["levels"],
        extent=extent,
        merge=merge_bundle,
        replace=True,
    )
    status = wait_for(
        client, cfg, "importTiles", job, say, path=f"{client.hosted_admin(cfg.service)}/jobs/{job}"
    )
    if status.get("jobStatus") != "esriJobSucceeded":
        raise ArcGISError(
            f"{status['summary']}; the patch item {item} was kept and the patch is sent "
            "again by the next run"
        )
    if cfg.keep_patch_item:
        say(f"kept the patch item {item} ([arcgis] keep_patch_item)")
    else:
        client.delete_item(item)
        say(f"deleted the patch item {item}")
    return {
        "item": item,
        "job": job,
        "tiles": pkg["tiles"],
        "mergeBundle": merge_bundle,
        "kept_item": cfg.keep_patch_item,
    }


def _first(names: set[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in names), None)


def _import_map_service(
    client: ArcGISClient,
    project: Project,
    tpkx: Path,
    pkg: dict,
    cover: list[Addr],
    say: Callable[[str], None],
    progress: Progress | None,
) -> dict[str, Any]:
    """Import Map Server Cache from the patch: uploaded to the CachingTools GP service's
    uploads, with ``source_cache_type=TILE_PACKAGE``, the patch's scales, its bundles'
    extent and overwrite on. Parameter names are read from the task itself (``?f=json``)
    since sites differ; a site without the task gets one clear line."""
    cfg = arcgis_config(project)
    try:
        spec = client.get(f"rest/services/{IMPORT_TASK}")
    except ArcGISError as exc:
        raise ArcGISError(
            f"{cfg.server} has no {IMPORT_TASK} ({exc}); use --via render for this service"
        ) from None
    names = {str(p.get("name")) for p in spec.get("parameters") or []}
    overwrite = _first(names, "overwrite", "overwrite_tiles", "replace_existing_tiles")
    package = _first(names, "source_tile_package")
    extent_name = _first(names, "import_extent", "constraining_extent")
    if not (package and overwrite and "service_url" in names and "levels" in names):
        raise ArcGISError(
            f"{IMPORT_TASK} on {cfg.server} takes {sorted(names)}: no tile-package source or "
            "overwrite parameter tiledelta knows; use --via render for this service"
        )
    upload = client.upload(
        tpkx,
        part_bytes=int(cfg.part_mb * 1024 * 1024),
        progress=progress,
        resume_dir=project.state_dir / "uploads",
        description="tiledelta patch",
        gp_service=IMPORT_TASK.split("/GPServer/")[0].removeprefix("rest/services/"),
    )
    say(f"uploaded {tpkx.name} ({upload})")
    scheme = project.cache_scheme
    params = {
        "service_url": f"{cfg.service}:MapServer",
        "source_cache_type": "TILE_PACKAGE",
        package: json.dumps({"itemID": upload}),
        "levels": ";".join(repr(scheme.lod(lv).scale) for lv in pkg["levels"]),
        overwrite: "true" if overwrite == "replace_existing_tiles" else "OVERWRITE",
    }
    if "thread_count" in names:
        params["thread_count"] = str(cfg.thread_count)
    if extent_name:
        params[extent_name] = json.dumps(patch_extent(project, cover, scheme.wkid))
    job = client.submit(IMPORT_TASK, **params)
    status = wait_for(client, cfg, IMPORT_TASK, job, say)
    if status.get("jobStatus") != "esriJobSucceeded":
        raise ArcGISError(f"{status['summary']}; the patch is sent again by the next run")
    return {"upload": upload, "job": job, "tiles": pkg["tiles"], "mergeBundle": False}
