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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely

from tiledelta import config
from tiledelta.build import BuildOutcome, RunContext
from tiledelta.change import Changes, detect_changes, esri_feature_set, write_aoi
from tiledelta.config import ArcGISConfig
from tiledelta.grid import (
    TilingScheme,
    metatiles_for_boxes,
    query_pad,
    scheme_from_tile_info,
)
from tiledelta.grid.supertiles import (
    SUPERTILE_PX_ANTIALIASED,
    drawing_grid,
    service_antialiasing,
    supertile_bounds,
    supertile_px,
    supertile_span,
    supertile_tile_count,
    supertiles_of_tiles,
)
from tiledelta.plan import restyled_visibility, visible_levels
from tiledelta.project import Project
from tiledelta.publish.arcgis.client import ArcGISClient, ArcGISError, load_sign_in
from tiledelta.runs import run
from tiledelta.sources import LayerData, read_layers

log = logging.getLogger(__name__)
TARGET = "arcgis"
#: The union of the supertiles to redraw is shrunk by this share of a tile before it
#: becomes the area of interest, so the server's intersection test does not pick up
#: the neighbouring supertiles (1 % of a 256-pixel tile is 2.56 px, far above rounding).
SHRINK = 0.01


def arcgis_config(project: Project) -> ArcGISConfig:
    cfg = project.config.arcgis
    if cfg is None:
        raise ArcGISError(
            f"{project.root / 'tiledelta.toml'}: no [arcgis] section; add server and service"
        )
    return cfg


def wait_for(
    client: ArcGISClient,
    cfg: ArcGISConfig,
    task: str,
    job: str,
    say: Callable[[str], None],
    **kwargs: Any,
) -> dict:
    """Poll a server job with the ``[arcgis]`` poll, timeout and settle settings, passing
    its messages to ``say``; the job's last status."""
    return client.wait_job(
        task,
        job,
        poll=cfg.poll_seconds,
        timeout=60 * cfg.job_timeout_minutes,
        settle=cfg.settle_seconds,
        on_message=lambda m: say(f"  server: {m}"),
        **kwargs,
    )


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
    """A client for the project's server, signed in as :func:`load_sign_in` finds (Pro's
    sign-in, the environment or .env)."""
    cfg = arcgis_config(project)
    way = load_sign_in(project.root, cfg.portal)
    verify = tls_verify(project)
    return ArcGISClient(
        cfg.server,
        way.username,
        way.password,
        portal=cfg.portal,
        verify=verify,
        token_minutes=cfg.token_minutes,
        warn=warn,
        sign_in=way,
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


@dataclass(frozen=True)
class LevelWork:
    """What ArcGIS Server redraws at one level: the supertiles of the dirty tiles."""

    dirty_tiles: np.ndarray  # (row, col) of the tiles whose picture can change
    supertiles: np.ndarray  # (srow, scol) of the supertiles holding them
    tiles: int  # tiles the server redraws: every tile of those supertiles in the grid
    area: shapely.Geometry  # the area of interest sent for the level


@dataclass(frozen=True)
class Supertiles:
    """The supertile size used for a service, and where it came from."""

    px: int
    span: tuple[int, int]  # tiles per supertile (rows, cols)
    source: str


def service_supertiles(cfg: ArcGISConfig, info: dict, scheme: TilingScheme) -> Supertiles:
    """``[arcgis] supertile``, else the service's antialiasing, else 2048 px (assumed)."""
    if cfg.supertile != "auto":
        px, source = int(cfg.supertile), "[arcgis] supertile"
    else:
        aa = service_antialiasing(info)
        if aa is None:
            px = SUPERTILE_PX_ANTIALIASED
            source = "assumed (the service JSON gives no documentInfo.AntialiasingMode)"
        else:
            px = supertile_px(aa)
            mode = info["documentInfo"]["AntialiasingMode"]
            source = f"the service's documentInfo.AntialiasingMode ({mode})"
    return Supertiles(px, supertile_span(scheme, px), source)


def server_work(
    project: Project,
    scheme: TilingScheme,
    boxes_by_layer: dict[str, np.ndarray],
    levels: list[int],
    supertiles: Supertiles,
    changes: Changes | None = None,
) -> dict[int, LevelWork]:
    """Per level, the tiles whose picture can change, their supertiles and the area of
    interest that makes the server redraw exactly those supertiles. Layers ``changes``
    says were restyled count at the levels and with the reach they had or have.

    Boxes are in the project's scheme CRS and are transformed to the service's. A tile
    is dirty when its extent grown by the layer's buffer meets a box, on a level where
    the layer draws. The area is the union of the supertiles (clipped to the grid),
    shrunk by :data:`SHRINK` of a tile: every point of it lies that far inside the
    chosen supertiles, so it meets no neighbouring supertile, and it still covers
    98 % of every tile of them. Supertiles are clipped to the tiling grid
    (:func:`~tiledelta.grid.supertiles.drawing_grid`), not to the service's full extent.
    """
    src = pyproj.CRS.from_user_input(project.scheme.crs)
    dst = pyproj.CRS.from_user_input(scheme.crs)
    tr = None if src.equals(dst) else pyproj.Transformer.from_crs(src, dst, always_xy=True)
    vis = visible_levels(project.style, project.scheme, levels)
    buffers: dict[str, int] = {}
    if changes is not None:
        vis, buffers = restyled_visibility(vis, changes)
    buffer_px = project.settings.buffer
    span = supertiles.span
    grid = drawing_grid(scheme)
    out: dict[int, LevelWork] = {}
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
            # a restyled layer: the larger of its old and new reach (it may be gone)
            if name in buffers:
                lyr_buffer: int | None = buffers[name]
            else:
                lyr_buffer = project.style.layer(name).buffer_size
            pad = query_pad(scheme, level, buffer_px if lyr_buffer is None else lyr_buffer)
            # Single tiles (meta-tiles of 1): the server's drawing unit is its supertile,
            # not tiledelta's meta-tile, so only the tiles themselves are kept.
            parts.append(metatiles_for_boxes(scheme, level, b, pad, 1))
        if not parts:
            continue
        dirty = np.unique(np.concatenate(parts), axis=0).reshape(-1, 2)
        if not len(dirty):
            continue
        sts = supertiles_of_tiles(dirty, span)
        rects = [
            shapely.box(*supertile_bounds(grid, level, sr, sc, span)) for sr, sc in sts.tolist()
        ]
        inset = SHRINK * min(scheme.tile_width, scheme.tile_height) * scheme.resolution(level)
        area = shapely.union_all(rects).buffer(-inset, join_style="mitre")
        out[level] = LevelWork(
            dirty_tiles=dirty,
            supertiles=sts,
            tiles=supertile_tile_count(grid, level, sts, span),
            area=area,
        )
    return out


def level_areas(
    project: Project,
    scheme: TilingScheme,
    boxes_by_layer: dict[str, np.ndarray],
    levels: list[int],
    supertiles: Supertiles | None = None,
) -> dict[int, object]:
    """Per level, the area of interest (shapely geometry) of :func:`server_work`."""
    st = supertiles or Supertiles(
        SUPERTILE_PX_ANTIALIASED, supertile_span(scheme, SUPERTILE_PX_ANTIALIASED), "default"
    )
    return {
        lv: w.area for lv, w in server_work(project, scheme, boxes_by_layer, levels, st).items()
    }


def work_summary(scheme: TilingScheme, work: dict[int, LevelWork], levels: list[int]) -> dict:
    """Per level and in total: tiles found dirty, supertiles and tiles the server redraws."""
    per_level = {
        str(lv): {
            "scale": scheme.lod(lv).scale,
            "dirty_tiles": len(work[lv].dirty_tiles) if lv in work else 0,
            "supertiles": len(work[lv].supertiles) if lv in work else 0,
            "tiles": work[lv].tiles if lv in work else 0,
        }
        for lv in levels
    }
    return {
        "levels": per_level,
        "dirty_tiles": sum(d["dirty_tiles"] for d in per_level.values()),
        "supertiles": sum(d["supertiles"] for d in per_level.values()),
        "tiles": sum(d["tiles"] for d in per_level.values()),
    }


def plan_server(project: Project, aoi: Path | None = None) -> dict[str, Any]:
    """What ``update --target arcgis`` would send, and what the server would redraw.

    Reads the service's JSON (its tiling scheme and antialiasing) and detects changes
    against the arcgis snapshot; sends no job. With ``aoi``, writes the dirty area
    there (as ``plan --aoi``).
    """
    cfg = arcgis_config(project)
    layers = read_layers(project)
    changes = detect_changes(project, layers, target=TARGET)
    boxes = _boxes(changes, layers)
    with connect(project) as client:
        info = client.service_info(cfg.service)
    scheme = service_scheme(info, cfg.service)
    levels = [lv for lv in project.levels if lv in scheme.levels]
    st = service_supertiles(cfg, info, scheme)
    work = server_work(project, scheme, boxes, levels, st, changes)
    result = {
        "target": TARGET,
        "service": cfg.service,
        "changes": changes.as_dict(),
        "supertile": {"px": st.px, "tiles": list(st.span), "source": st.source},
        **work_summary(scheme, work, levels),
        "jobs": len(work),
    }
    if aoi is not None:
        result["aoi_files"] = [str(f) for f in write_aoi(project, boxes, aoi)]
    return result


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
            st = service_supertiles(cfg, info, scheme)
            work = server_work(project, scheme, boxes, levels, st, changes)
        if not work:
            say("nothing to rebuild on the server")
        else:
            ctx.journal(boxes)
            say(f"supertiles of {st.px} px ({st.span[0]}x{st.span[1]} tiles): {st.source}")
            with ctx.stage("server_jobs"):
                for level in sorted(work):
                    _wait_not_busy(client, cfg, say)
                    job = _run_job(client, cfg, scheme, level, work[level], say)
                    jobs.append(job)
    return BuildOutcome(
        kind="arcgis",
        layers=layers,
        levels=project.levels,
        changes=changes,
        level_info={
            lv: {
                "scale": scheme.lod(lv).scale,
                "submitted": lv in work,
                "tiles": work[lv].tiles if lv in work else 0,
            }
            for lv in levels
        },
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
    work: LevelWork,
    say: Callable[[str], None],
) -> dict:
    scale = scheme.lod(level).scale
    fs = esri_feature_set(
        work.area,
        scheme.wkid,
        None if scheme.wkid else pyproj.CRS.from_user_input(scheme.crs).to_wkt("WKT1_ESRI"),
    )
    params = {
        "service_url": f"{cfg.service}:MapServer",
        "levels": repr(scale),
        "thread_count": str(cfg.thread_count),
        "update_mode": "RECREATE_ALL_TILES",
        "area_of_interest": json.dumps(fs),
    }
    say(
        f"level {level} (1:{scale:,.0f}): {len(fs['features'])} area(s) submitted, "
        f"{len(work.supertiles):,} supertile(s), {work.tiles:,} tiles to redraw "
        f"({len(work.dirty_tiles):,} dirty)"
    )
    task = client.cache_task(cfg.cache_task)  # CachingTools where there is no CachingControllers
    job_id = client.submit(task, **params)
    status = wait_for(client, cfg, task, job_id, say)
    state = status.get("jobStatus")
    if state != "esriJobSucceeded":
        raise ArcGISError(
            f"level {level}: {status['summary']}; the snapshot was not advanced, run again to retry"
        )
    return {
        "job": job_id,
        "level": level,
        "scale": scale,
        "status": state,
        "supertiles": len(work.supertiles),
        "tiles": work.tiles,
        "dirty_tiles": len(work.dirty_tiles),
    }
