"""Cache jobs: ``Manage Map Cache Tiles`` (which tiles an area selects, re-rendered through
tiledelta's own renderer into the service's compact cache) and ``ReportCacheStatus``."""

from __future__ import annotations

import json
import math
import re
import threading
from typing import Any

import numpy as np
import pyproj
import shapely

from tiledelta.errors import SchemeError, TileDeltaError
from tiledelta.grid import (
    Bounds,
    TilingScheme,
    bundle_origin,
    covering_tiles,
    crs_from_spatial_reference,
    grid_size,
    scheme_to_tile_info,
    tile_range,
)
from tiledelta.plan import full_plan
from tiledelta.render import mapnik_installed
from tiledelta.sources import read_layers
from tiledelta.stores import open_project_store, open_tpkx

from .jobs import UPDATE_MODES
from .model import WARNING, Job, JobCancelled, JobFailed, Service, rest_error
from .standin import StandInRenderer

#: Largest number of tiles one level of one cache job may cover (the emulator's own limit).
MAX_TILES_PER_LEVEL = 4_000_000
#: A service's ``AntialiasingMode`` (its MapServer ``documentInfo``) unless its
#: ``serviceinfo.json`` sets ``antialiasing_mode``; "None" is off, the others on.
DEFAULT_ANTIALIASING_MODE = "Normal"


def antialiasing_mode(svc: Service) -> str:
    """The service's ``AntialiasingMode``, as its MapServer JSON reports it."""
    return str(svc.info().get("antialiasing_mode") or DEFAULT_ANTIALIASING_MODE)


def supertile_expand(
    scheme: TilingScheme, level: int, tiles: np.ndarray, antialiasing: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Every tile of the supertiles that hold ``tiles``, and those supertiles.

    As Esri documents for its caching tools: the map is drawn in supertiles of
    2048 x 2048 px with antialiasing, 4096 x 4096 without, and a supertile the area
    meets is drawn whole. Supertiles are counted from the scheme's origin and clipped
    to the grid. Returns sorted (row, col) tiles and sorted (srow, scol) supertiles.
    """
    px = 2048 if antialiasing else 4096
    nr, nc = max(1, px // scheme.tile_height), max(1, px // scheme.tile_width)
    if not len(tiles):
        return tiles, np.zeros((0, 2), dtype=np.int64)
    sts = np.unique(np.column_stack([tiles[:, 0] // nr, tiles[:, 1] // nc]), axis=0)
    size = grid_size(scheme, level)
    out = []
    for sr, sc in sts.tolist():
        r1, c1 = sr * nr + nr, sc * nc + nc
        if size is not None:
            r1, c1 = min(r1, size[0]), min(c1, size[1])
        rows, cols = np.meshgrid(np.arange(sr * nr, r1), np.arange(sc * nc, c1), indexing="ij")
        out.append(np.column_stack([rows.ravel(), cols.ravel()]))
    every = np.unique(np.concatenate(out), axis=0).astype(np.int64)
    return every, sts.astype(np.int64)


def esri_polygon(rings: list) -> shapely.Geometry:
    """A shapely (multi)polygon from Esri rings (outer rings and holes, any orientation).

    Rings of a valid Esri polygon do not cross, so the even-odd combination of
    the rings is the polygon, whatever nesting of islands and holes it has.
    """
    geom = None
    for ring in rings:
        coords = [(float(p[0]), float(p[1])) for p in ring]
        if len(coords) < 3:
            continue
        part = shapely.make_valid(shapely.Polygon(coords))
        geom = part if geom is None else shapely.symmetric_difference(geom, part)
    if geom is None or geom.is_empty:
        raise JobFailed("area_of_interest: the polygon has no rings with an area")
    return geom


def tiles_in_area(scheme: TilingScheme, level: int, area: shapely.Geometry) -> np.ndarray:
    """(row, col) of the tiles of ``level`` whose interior meets ``area`` (sorted, (n, 2)).

    A tile that only shares an edge or a corner with the area is left out, so an
    area drawn along tile edges covers exactly the tiles inside it.
    """
    xmin, ymin, xmax, ymax = area.bounds
    rng = tile_range(scheme, level, Bounds(xmin, ymin, xmax, ymax), touch=False)
    if rng is None:
        return np.zeros((0, 2), dtype=np.int64)
    r0, r1, c0, c1 = rng
    n = (r1 - r0 + 1) * (c1 - c0 + 1)
    if n > MAX_TILES_PER_LEVEL:
        raise JobFailed(
            f"level {level}: the area covers {n:,} tiles, more than the emulator's limit of "
            f"{MAX_TILES_PER_LEVEL:,} per level; give a smaller area_of_interest"
        )
    rows, cols = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    res = scheme.resolution(level)
    w, h = scheme.tile_width * res, scheme.tile_height * res
    x0 = scheme.origin_x + cols * w
    y1 = scheme.origin_y - rows * h
    boxes = shapely.box(x0, y1 - h, x0 + w, y1)
    shapely.prepare(area)
    hit = shapely.intersects(area, boxes) & ~shapely.touches(area, boxes)
    return np.column_stack([rows[hit], cols[hit]]).astype(np.int64)


def crs_key(sr: Any) -> str | None:
    """What two Esri spatialReferences are compared by: the CRS tiledelta reads from them.

    :func:`tiledelta.grid.crs_from_spatial_reference` gives every Web Mercator id as
    ``EPSG:3857``; a WKT is named by its authority code when pyproj knows one, so it
    matches the same CRS given by wkid. An unreadable reference matches only itself.
    """
    if not isinstance(sr, dict) or not sr:
        return None
    try:
        crs = crs_from_spatial_reference(sr)[0]
        if re.fullmatch(r"(EPSG|ESRI):\d+", crs):
            return crs
        code = pyproj.CRS.from_user_input(crs).to_authority()
        if code is None or not code[1].isdigit():
            return crs
        return crs_from_spatial_reference({"wkid": int(code[1])})[0]
    except (SchemeError, pyproj.exceptions.CRSError):
        return json.dumps(sr, sort_keys=True)


def sr_name(sr: Any) -> str:
    """A spatialReference as a job message names it."""
    if isinstance(sr, dict):
        for key in ("wkid", "latestWkid"):
            if sr.get(key) is not None:
                return f"wkid {sr[key]}"
        if sr.get("wkt"):
            return "a WKT spatial reference"
    return "no spatial reference"


class CachingMixin:
    """The cache jobs of :class:`~support.emulator.server.Emulator`.

    It uses the emulator's service lookup, locks and cache readers, and the job steps
    of :class:`~support.emulator.jobs.JobsMixin`.
    """

    _lock: threading.RLock
    _cache_jobs_run: int

    def _levels(self, scheme: TilingScheme, text: str) -> tuple[list[int], list[float]]:
        """The LODs whose scales ``levels`` lists (semicolon-separated), and those scales."""
        values = [v.strip() for v in (text or "").split(";") if v.strip()]
        if not values:
            raise JobFailed("levels: give one or more scales separated by semicolons")
        levels, scales = [], []
        for v in values:
            try:
                s = float(v)
            except ValueError:
                raise JobFailed(f"levels: {v!r} is not a scale") from None
            scales.append(s)
            match = [
                lod.level
                for lod in scheme.lods
                if abs(lod.scale - s) <= max(1e-6 * lod.scale, 0.01)
            ]
            if not match:
                raise JobFailed(
                    f"Scale {v} is not a level of the service's tiling scheme "
                    f"(its scales: {', '.join(f'{lod.scale:g}' for lod in scheme.lods)})"
                )
            if match[0] not in levels:
                levels.append(match[0])
        return levels, scales

    def _area(self, job: Job, svc_sr: dict, params: dict[str, str], default: Bounds | None):
        """The area to cache: area_of_interest, else constraining_extent, else the full extent."""
        aoi_text = (params.get("area_of_interest") or "").strip()
        ext_text = (params.get("constraining_extent") or "").strip()
        want = crs_key(svc_sr)

        def check_sr(sr: Any, what: str) -> None:
            if not sr:
                job.message(f"{what} has no spatialReference; assuming the service's.", WARNING)
            elif crs_key(sr) != want:
                raise JobFailed(
                    f"{what} is in {sr_name(sr)} but the service's tiling scheme is in "
                    f"{sr_name(svc_sr)}; send it in the service's spatial reference"
                )

        if aoi_text:
            try:
                fs = json.loads(aoi_text)
            except ValueError as exc:
                raise JobFailed(f"area_of_interest is not valid JSON ({exc})") from None
            if not isinstance(fs, dict):
                raise JobFailed("area_of_interest must be a FeatureSet JSON object")
            gtype = fs.get("geometryType", "esriGeometryPolygon")
            if gtype != "esriGeometryPolygon":
                raise JobFailed(f"area_of_interest must hold polygons, not {gtype}")
            features = fs.get("features") or []
            if not isinstance(features, list) or not features:
                raise JobFailed("area_of_interest has no features")
            parts = []
            for i, feat in enumerate(features):
                geom = (feat or {}).get("geometry") if isinstance(feat, dict) else None
                if not isinstance(geom, dict) or not isinstance(geom.get("rings"), list):
                    raise JobFailed(f"area_of_interest feature {i} has no polygon rings")
                check_sr(
                    geom.get("spatialReference") or fs.get("spatialReference"), "area_of_interest"
                )
                try:
                    parts.append(esri_polygon(geom["rings"]))
                except (TypeError, ValueError, IndexError) as exc:
                    raise JobFailed(f"area_of_interest feature {i}: bad rings ({exc})") from None
            job.record["aoi"] = aoi_text
            return shapely.union_all(parts), "area_of_interest"
        if ext_text and ext_text.upper() != "DEFAULT":
            try:
                env = json.loads(ext_text)
                sr = env.get("spatialReference")
                box = [float(env[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (ValueError, KeyError, TypeError, AttributeError):
                try:
                    box, sr = [float(v) for v in ext_text.replace(",", " ").split()], None
                except ValueError:
                    box = []
                if len(box) != 4:
                    raise JobFailed(
                        "constraining_extent must be a JSON extent "
                        '{"xmin","ymin","xmax","ymax","spatialReference"}'
                    ) from None
            check_sr(sr, "constraining_extent")
            if box[0] >= box[2] or box[1] >= box[3]:
                raise JobFailed("constraining_extent is empty (xmin >= xmax or ymin >= ymax)")
            job.record["constraining_extent"] = ext_text
            return shapely.box(*box), "constraining_extent"
        if default is None:
            raise JobFailed("the service has no full extent; give an area_of_interest")
        return shapely.box(*default), "full extent"

    def _cache_job(self, job: Job, params: dict[str, str]) -> None:
        svc = self._service_from_url(params.get("service_url", ""))
        with self._service_lock(svc.key):
            self._begin(job)
            self._cache_work(job, svc, params)

    def _cache_work(self, job: Job, svc: Service, params: dict[str, str]) -> None:
        project = self._project(svc)
        scheme = project.cache_scheme
        levels, scales = self._levels(scheme, params.get("levels", ""))
        mode = (params.get("update_mode") or "RECREATE_ALL_TILES").strip().upper()
        try:
            threads = int(params.get("thread_count") or -1)
        except ValueError:
            raise JobFailed(
                f"thread_count {params.get('thread_count')!r} is not an integer"
            ) from None
        rec = job.record
        rec.update(
            service=svc.key,
            levels=levels,
            scales=scales,
            update_mode=mode,
            thread_count=threads,
            aoi=None,
            constraining_extent=None,
            tiles=[],
            written=[],
            deleted=[],
            unchanged=[],
            blank=[],
        )
        if mode not in UPDATE_MODES:
            raise JobFailed(
                f"update_mode {mode} is not supported by the emulator "
                f"(use {', '.join(UPDATE_MODES)})"
            )
        ext = svc.info().get("extent")
        area, source = self._area(
            job,
            scheme_to_tile_info(scheme)["spatialReference"],
            params,
            Bounds(*ext) if ext else None,
        )
        job.message(
            f"{mode} at levels {', '.join(map(str, levels))} over the {source} "
            f"of {svc.key}.MapServer"
        )
        self._cache_jobs_run += 1
        meta = project.settings.metatile
        # The area selects tiles; the server redraws every tile of their supertiles.
        in_area = {lv: tiles_in_area(scheme, lv, area) for lv in levels}
        antialiased = antialiasing_mode(svc) != "None"
        selected, supertiles = {}, {}
        for lv, rc in in_area.items():
            selected[lv], supertiles[lv] = supertile_expand(scheme, lv, rc, antialiased)
            if len(selected[lv]) > MAX_TILES_PER_LEVEL:
                raise JobFailed(
                    f"level {lv}: the area's supertiles hold {len(selected[lv]):,} tiles, more "
                    f"than the emulator's limit of {MAX_TILES_PER_LEVEL:,} per level"
                )
        total = sum(len(v) for v in selected.values())
        rec["tiles"] = sorted(
            (lv, int(r), int(c)) for lv, rc in selected.items() for r, c in rc.tolist()
        )
        rec["area_tiles"] = sorted(
            (lv, int(r), int(c)) for lv, rc in in_area.items() for r, c in rc.tolist()
        )
        rec["supertiles"] = sorted(
            (lv, int(r), int(c)) for lv, rc in supertiles.items() for r, c in rc.tolist()
        )
        written: list = rec["written"]
        deleted: list = rec["deleted"]
        unchanged: list = rec["unchanged"]
        blank: list = rec["blank"]
        renderer = None
        reached: dict[int, set] = {}
        if mode != "DELETE_TILES":
            layers = read_layers(project)
            plan = full_plan(project, layers, levels)
            reached = {lv: set(map(tuple, mt.tolist())) for lv, mt in plan.levels.items()}

        def bundle_of(metatile: tuple[int, int]) -> tuple[int, int]:
            """The bundle holding the meta-tile's first tile (writes are grouped by it)."""
            return bundle_origin(metatile[0] * meta, metatile[1] * meta)

        done = 0
        with open_project_store(project, create=True) as store:
            for lv in levels:
                groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
                for r, c in selected[lv].tolist():
                    groups.setdefault((r // meta, c // meta), []).append((r, c))
                order = sorted(groups, key=lambda m: (bundle_of(m), m))
                pending: list[tuple[int, int, int, bytes | None]] = []
                bundle_key = None
                for mrow, mcol in order:
                    key = bundle_of((mrow, mcol))
                    if key != bundle_key and pending:
                        store.put_many(pending)
                        pending = []
                    bundle_key = key
                    if job.cancel_event.is_set():
                        if pending:
                            store.put_many(pending)
                        raise JobCancelled()
                    wanted = groups[(mrow, mcol)]
                    addrs = [(lv, r, c) for r, c in wanted]
                    stored = store.get_many(addrs)
                    if mode == "DELETE_TILES":
                        for a in addrs:
                            if a in stored:
                                pending.append((*a, None))
                                deleted.append(a)
                    else:
                        todo = (
                            wanted
                            if mode == "RECREATE_ALL_TILES"
                            else [(r, c) for r, c in wanted if (lv, r, c) not in stored]
                        )
                        if not todo:
                            results = []
                        elif (mrow, mcol) in reached.get(lv, ()):
                            if renderer is None and not mapnik_installed():
                                # the no-Mapnik CI venv: flat stand-in tiles (standin.py)
                                renderer = StandInRenderer(
                                    project.scheme, layers, project.settings.buffer
                                )
                            elif renderer is None:
                                # Mapnik stays optional: the renderer is imported only to draw.
                                from tiledelta.render.renderer import Renderer

                                renderer = Renderer(
                                    project.style, project.scheme, layers, project.settings
                                )
                            results = renderer.tiles(lv, mrow, mcol, wanted=set(todo))
                        else:  # no feature reaches this meta-tile: its tiles are blank
                            results = [(lv, r, c, None) for r, c in todo]
                        for _lv, r, c, data in results:
                            a = (lv, r, c)
                            prev = stored.get(a)
                            if data is None:
                                blank.append(a)
                                if prev is not None:
                                    pending.append((*a, None))
                                    deleted.append(a)
                            elif data == prev:
                                unchanged.append(a)
                            else:
                                pending.append((*a, data))
                                written.append(a)
                    done += len(wanted)
                    job.progress = f"level {lv}: {done:,} of {total:,} tiles"
                if pending:
                    store.put_many(pending)
        job.message(
            f"{sum(len(v) for v in supertiles.values()):,} supertiles of "
            f"{2048 if antialiased else 4096} px drawn"
        )
        job.message(
            f"{total:,} tiles in the area: {len(written):,} written, {len(deleted):,} deleted, "
            f"{len(unchanged):,} unchanged, {len(blank):,} blank"
        )
        job.results["result"] = {
            "tiles": total,
            "written": len(written),
            "deleted": len(deleted),
            "unchanged": len(unchanged),
            "supertiles": sum(len(v) for v in supertiles.values()),
        }

    # -- Import Map Server Cache -------------------------------------------------------------
    def _import_cache_job(self, job: Job, params: dict[str, str]) -> None:
        svc = self._service_from_url(params.get("service_url", ""))
        with self._service_lock(svc.key):
            self._begin(job)
            self._import_cache_work(job, svc, params)

    def _import_cache_work(self, job: Job, svc: Service, params: dict[str, str]) -> None:
        """Tiles of an uploaded tile package into the service's cache, at the given scales,
        inside the area (``area_of_interest``, else ``import_extent``); ``OVERWRITE``
        replaces stored tiles. ``MERGE`` blends images on ArcGIS: not emulated (fails)."""
        kind = (params.get("source_cache_type") or "").strip().upper()
        if kind != "TILE_PACKAGE":
            raise JobFailed(
                f"source_cache_type {kind or '(none)'}: the emulator imports TILE_PACKAGE"
            )
        mode = (params.get("overwrite") or "MERGE").strip().upper()
        if mode not in ("OVERWRITE", "TRUE"):
            raise JobFailed(f"overwrite {mode}: the emulator does not blend images (use OVERWRITE)")
        try:
            ref = json.loads(params.get("source_tile_package") or "{}")
        except ValueError:
            ref = {}
        item = str(ref.get("itemID") or "") if isinstance(ref, dict) else ""
        folder = self.root / "uploads" / item
        meta = folder / "item.json"
        if not item or not meta.is_file():
            raise JobFailed(f"source_tile_package: upload item {item or '(none)'} not found")
        info = json.loads(meta.read_text("utf-8"))
        if not info.get("committed"):
            raise JobFailed(f"source_tile_package: upload item {item} is not committed")
        project = self._project(svc)
        scheme = project.cache_scheme
        levels, scales = self._levels(scheme, params.get("levels", ""))
        ext = svc.info().get("extent")
        area_params = {
            "area_of_interest": params.get("area_of_interest", ""),
            "constraining_extent": params.get("import_extent", ""),
        }
        area, source = self._area(
            job,
            scheme_to_tile_info(scheme)["spatialReference"],
            area_params,
            Bounds(*ext) if ext else None,
        )
        try:
            pkg = open_tpkx(folder / info["itemName"])
        except TileDeltaError as exc:
            raise JobFailed(f"source_tile_package: {exc}") from None
        rec = job.record
        rec.update(service=svc.key, levels=levels, scales=scales, item=item, written=[], outside=[])
        with pkg, open_project_store(project, create=True) as store:
            if not scheme.same_grid(pkg.scheme):
                raise JobFailed("The tile package's tiling scheme does not match the service's.")
            for lv in levels:
                inside = {tuple(rc) for rc in tiles_in_area(scheme, lv, area).tolist()}
                writes = []
                for _lv, r, c in pkg.iter_tiles(lv):
                    if (r, c) not in inside:
                        rec["outside"].append((lv, r, c))
                        continue
                    data = pkg.get(lv, r, c)
                    if data is not None:
                        writes.append((lv, r, c, data))
                        rec["written"].append((lv, r, c))
                store.put_many(writes)
                self._checkpoint(job)
        job.message(
            f"Imported {len(rec['written']):,} tiles of upload {item} into {svc.key}.MapServer "
            f"over the {source} ({len(rec['outside']):,} outside it were left out)."
        )

    # -- ReportCacheStatus ------------------------------------------------------------------
    def _report_cache_status(self, params: dict[str, str]) -> dict:
        mode = (params.get("report_mode") or "esriCacheStatus").strip()
        if mode != "esriCacheStatus":
            return rest_error(
                400,
                "Unable to complete operation.",
                [f"report_mode {mode} is not implemented by the emulator (use esriCacheStatus)"],
            )
        try:
            svc = self._service_from_url(params.get("service_url", ""))
        except JobFailed as exc:
            return rest_error(400, "Unable to complete operation.", [str(exc)])
        project = self._project(svc)
        scheme = project.cache_scheme
        reader = self._reader(svc)
        counts = reader.count() if reader is not None else {}
        ext = svc.info().get("extent")
        lod_infos = []
        for lv in project.levels:
            expected = covering_tiles(scheme, lv, Bounds(*ext)) if ext else 0
            n = counts.get(lv, 0)
            lod_infos.append(
                {
                    "levelID": lv,
                    "scale": scheme.lod(lv).scale,
                    "resolution": scheme.lod(lv).resolution,
                    "tileCount": n,
                    "expectedTileCount": expected,
                    "percent": min(100, math.floor(100 * n / expected)) if expected else 0,
                }
            )
        value = {
            "serviceName": f"{svc.key}.MapServer",
            "totalTileCount": sum(counts.get(lv, 0) for lv in project.levels),
            "lodInfos": lod_infos,
        }
        return {
            "results": [{"paramName": "result", "dataType": "GPString", "value": value}],
            "messages": [],
        }
