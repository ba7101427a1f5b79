"""Server-side cache updates: turn the dirty area into Manage Map Cache Tiles jobs.

The snapshot of the ``arcgis`` target (``.tiledelta/state-arcgis.sqlite``)
advances only when every job succeeded; a failed or timed-out job is reported
with the server's messages and its area is planned again on the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyproj
import shapely

from tiledelta import config
from tiledelta.build import BuildOutcome, RunContext
from tiledelta.change import Changes, detect_changes, esri_feature_set
from tiledelta.config import ArcGISConfig
from tiledelta.grid import (
    TilingScheme,
    metatile_bounds,
    metatiles_for_boxes,
    query_pad,
    scheme_from_tile_info,
)
from tiledelta.plan import visible_levels
from tiledelta.project import Project
from tiledelta.publish.arcgis.client import ArcGISClient, ArcGISError, load_credentials
from tiledelta.runs import run
from tiledelta.sources import LayerData, read_layers

log = logging.getLogger(__name__)
TARGET = "arcgis"
#: Tiles are shrunk by this share of their size before they become the area of
#: interest, so the server's intersection test does not pick up their neighbours.
SHRINK = 0.01


def arcgis_config(project: Project) -> ArcGISConfig:
    cfg = project.config.arcgis
    if cfg is None:
        raise ArcGISError(
            f"{project.root / 'tiledelta.toml'}: no [arcgis] section; add server and service"
        )
    return cfg


def tls_verify(project: Project) -> bool | str:
    """``[arcgis] verify``: True/False, or the resolved path of a private CA bundle."""
    verify = arcgis_config(project).verify
    if isinstance(verify, str):
        ca = project.resolve(verify)
        if not ca.is_file():
            raise ArcGISError(f"[arcgis] verify: CA bundle {ca} not found")
        return str(ca)
    return verify


def connect(project: Project, warn: Callable[[str], None] | None = None) -> ArcGISClient:
    """A client for the project's server, with credentials from the environment or .env."""
    cfg = arcgis_config(project)
    user, password = load_credentials(project.root)
    verify = tls_verify(project)
    return ArcGISClient(
        cfg.server,
        user,
        password,
        portal=cfg.portal,
        verify=verify,
        token_minutes=cfg.token_minutes,
        warn=warn,
    )


def in_window(window: str | None, now: dt.time | None = None) -> bool:
    """True when ``now`` lies in the ``[arcgis] quiet_hours`` window ("HH:MM-HH:MM")."""
    try:
        return config.in_window(window, now)
    except ValueError:
        raise ArcGISError(f"[arcgis] quiet_hours {window!r}: use HH:MM-HH:MM") from None


def service_scheme(info: dict, service: str) -> TilingScheme:
    if "tileInfo" not in info:
        raise ArcGISError(f"service {service} has no tile cache (no tileInfo in its JSON)")
    return scheme_from_tile_info(info, name=service)


def level_areas(
    project: Project,
    scheme: TilingScheme,
    boxes_by_layer: dict[str, np.ndarray],
    levels: list[int],
) -> dict[int, object]:
    """Per level, the union of the tiles whose picture can change (shapely geometry).

    Boxes are in the project's scheme CRS and are transformed to the service's.
    """
    src = pyproj.CRS.from_user_input(project.scheme.crs)
    dst = pyproj.CRS.from_user_input(scheme.crs)
    tr = None if src.equals(dst) else pyproj.Transformer.from_crs(src, dst, always_xy=True)
    vis = visible_levels(project.style, project.scheme, levels)
    buffer_px = project.settings.buffer
    meta = project.settings.metatile
    out: dict[int, object] = {}
    for level in levels:
        parts = []
        for name, boxes in boxes_by_layer.items():
            if level not in vis.get(name, []) or not len(boxes):
                continue
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if tr is not None:
                b = np.array(
                    [tr.transform_bounds(x0, y0, x1, y1, densify_pts=11) for x0, y0, x1, y1 in b]
                )
            lyr_buffer = project.style.layer(name).buffer_size
            pad = query_pad(scheme, level, buffer_px if lyr_buffer is None else lyr_buffer)
            # Whole meta-tiles: a label moved anywhere in a meta-tile can change its
            # other tiles too, so the area covers what the dirty plan re-renders.
            mts = metatiles_for_boxes(scheme, level, b, pad, meta)
            inset = SHRINK * scheme.tile_width * scheme.resolution(level)
            for mrow, mcol in mts.tolist():
                t = metatile_bounds(scheme, level, mrow, mcol, meta)
                parts.append(
                    shapely.box(t.xmin + inset, t.ymin + inset, t.xmax - inset, t.ymax - inset)
                )
        if parts:
            out[level] = shapely.union_all(parts)
    return out


def update_server(
    project: Project,
    *,
    say: Callable[[str], None] = log.info,
    mark_current: bool = False,
    notify: bool = True,
) -> dict[str, Any]:
    """Rebuild, on ArcGIS Server, the cache tiles that changed data touches; return the
    run summary (as ``--json`` prints it).

    With ``mark_current``, record the current data as what the server's cache shows,
    sending nothing (a baseline after the server's own full build).
    """
    cfg = arcgis_config(project)
    if mark_current:
        return run(
            project, _baseline, name="arcgis", target=TARGET, say=say, notify=notify
        ).as_json()
    if not in_window(cfg.quiet_hours):
        raise ArcGISError(
            f"outside the quiet hours {cfg.quiet_hours}: nothing was sent; run again then"
        )
    summary = run(project, _server_build, name="arcgis", target=TARGET, say=say, notify=notify)
    return summary.as_json()


def _baseline(ctx: RunContext) -> BuildOutcome:
    project = ctx.project
    with ctx.stage("read"):
        layers = read_layers(project)
    return BuildOutcome(
        kind="arcgis-baseline",
        layers=layers,
        levels=project.levels,
        level_info={},
        extra={"marked_current": True, "jobs": []},
    )


def _server_build(ctx: RunContext) -> BuildOutcome:
    """Detect, plan the areas of interest per level, and run one cache job per level."""
    project, say = ctx.project, ctx.say
    cfg = arcgis_config(project)
    with ctx.stage("read"):
        layers = read_layers(project)
    with ctx.stage("detect"):
        changes = detect_changes(project, layers, target=TARGET)
        boxes = _boxes(changes, layers)
    jobs: list[dict] = []
    with connect(project, warn=say) as client:
        info = client.service_info(cfg.service)
        scheme = service_scheme(info, cfg.service)
        levels = [lv for lv in project.levels if lv in scheme.levels]
        with ctx.stage("plan"):
            areas = level_areas(project, scheme, boxes, levels)
        if not areas:
            say("nothing to rebuild on the server")
        else:
            ctx.journal(boxes)
            with ctx.stage("server_jobs"):
                for level in sorted(areas):
                    _wait_not_busy(client, cfg, say)
                    jobs.append(_run_job(client, cfg, scheme, level, areas[level], say))
    return BuildOutcome(
        kind="arcgis",
        layers=layers,
        levels=project.levels,
        changes=changes,
        level_info={lv: {"scale": scheme.lod(lv).scale, "submitted": lv in areas} for lv in levels},
        extra={"jobs": jobs},
    )


def _boxes(changes: Changes, layers: dict[str, LayerData]) -> dict[str, np.ndarray]:
    if changes.rebuild:  # no baseline or configuration change: the whole data extent
        return {name: d.bounds for name, d in layers.items()}
    return changes.boxes()


def _wait_not_busy(client: ArcGISClient, cfg: ArcGISConfig, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 60 * cfg.busy_timeout_minutes
    while (busy := client.caching_busy()) > 0:
        if cfg.when_busy == "stop":
            raise ArcGISError(f"the caching service is busy ({busy} jobs); try again later")
        if time.monotonic() > deadline:
            raise ArcGISError(
                f"the caching service stayed busy for {cfg.busy_timeout_minutes} min; "
                "try again later"
            )
        say(f"caching service busy ({busy} jobs); waiting")
        time.sleep(cfg.poll_seconds)


def _run_job(
    client: ArcGISClient,
    cfg: ArcGISConfig,
    scheme: TilingScheme,
    level: int,
    area,
    say: Callable[[str], None],
) -> dict:
    scale = scheme.lod(level).scale
    fs = esri_feature_set(
        area,
        scheme.wkid,
        None if scheme.wkid else pyproj.CRS.from_user_input(scheme.crs).to_wkt("WKT1_ESRI"),
    )
    params = {
        "service_url": f"{cfg.service}:MapServer",
        "levels": repr(scale),
        "thread_count": str(cfg.thread_count),
        "update_mode": "RECREATE_ALL_TILES",
        "area_of_interest": json.dumps(fs),
        "wait_for_job_completion": "false",
    }
    say(f"level {level} (1:{scale:,.0f}): {len(fs['features'])} area(s) submitted")
    job_id = client.submit(cfg.cache_task, **params)
    status = client.wait_job(
        cfg.cache_task,
        job_id,
        poll=cfg.poll_seconds,
        timeout=60 * cfg.job_timeout_minutes,
        on_message=lambda m: say(f"  server: {m}"),
    )
    state = status.get("jobStatus")
    if state != "esriJobSucceeded":
        msgs = "; ".join(str(m.get("description", "")) for m in status.get("messages") or [])
        raise ArcGISError(
            f"cache job {job_id} for level {level} ended {state}: {msgs or 'no messages'}; "
            "the snapshot was not advanced, run again to retry"
        )
    return {"job": job_id, "level": level, "scale": scale, "status": state}
