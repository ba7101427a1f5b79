"""The library calls behind the CLI and the ArcGIS Pro toolbox.

Every command runs through here: :func:`seed` and :func:`update` (and the server-side
update) go through the one run lifecycle (:func:`tiledelta.runs.run`); the rest read.
Nothing here imports Mapnik unless it renders.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shapely

from tiledelta import sample
from tiledelta.build import build_full, build_update
from tiledelta.build.context import Progress, Scope
from tiledelta.build.seed import plan_seed
from tiledelta.build.update import plan_update
from tiledelta.change import detect_changes, measured_speed, write_aoi
from tiledelta.change.aoi import extent_area, read_aoi
from tiledelta.change.detect import Changes, changes_without_reading
from tiledelta.change.unchanged import UNCHANGED_FILES
from tiledelta.config import LayerConfig, parse_config
from tiledelta.errors import ConfigError, TileDeltaError, UsageError
from tiledelta.grid import select_levels
from tiledelta.plan import TilePlan, full_plan, update_plan
from tiledelta.project import PROJECT_FILE, Project
from tiledelta.render import RunStats, mapnik_installed, require_mapnik
from tiledelta.runs import LevelSummary, RunSummary, run
from tiledelta.runs.summary import level_counts
from tiledelta.sources import describe, display_path, list_layers, read_layers
from tiledelta.sources.keys import find_key_field
from tiledelta.stores import open_project_store
from tiledelta.style import default_style
from tiledelta.style.cim import describe_map, layer_lines, read_pro_map

_LEVEL_SYNTAX = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
log = logging.getLogger(__name__)


def load_project(directory: Path | str) -> Project:
    """Load and validate a project: configuration, scheme, levels and style.

    Where Mapnik is installed the style is also loaded into Mapnik strictly, so its
    errors (unknown properties, bad colours, missing fonts) surface before any work.
    """
    project = Project.load(Path(directory))
    project.style  # noqa: B018 - parse errors first
    log.debug(
        "project %s: scheme %s, levels %s, cache %s at %s, layers %s",
        project.root,
        project.scheme.name,
        project.config.levels,
        project.config.cache.kind,
        project.cache_path,
        [lyr.name for lyr in project.style.layers],
    )
    if mapnik_installed():
        # Mapnik is optional (the server path runs without it): imported only when present.
        from tiledelta.render.validate import validate_style

        validate_style(project.style)
    return project


def seed(
    project: Project,
    *,
    progress: Progress | None = None,
    notify: bool = True,
    say: Callable[[str], None] | None = None,
    scope: Scope | None = None,
    restart: bool = False,
    stages: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Build the whole cache anew and record the snapshot; return the run summary.

    An interrupted seed of the same plan is resumed unless ``restart``. With a partial
    ``scope`` (:func:`run_scope`) only those meta-tiles are re-rendered, into the existing
    cache, and the snapshot stays. ``say`` receives the run's remarks (resuming, the Dask
    engine's cluster and dashboard). ``stages``: times paid before the call (the command
    line's ``startup``, ``imports``, ``load``), put first in the summary's stages.
    """
    require_mapnik()  # one line naming the render extra, before anything is written
    kw: dict[str, Any] = {"say": say} if say else {}
    build = functools.partial(build_full, scope=scope, restart=restart)
    summary = run(
        project, build, name="seed", progress=progress, notify=notify, stages=stages, **kw
    )
    return summary.as_json()


def update(
    project: Project,
    *,
    progress: Progress | None = None,
    notify: bool = True,
    allow_mass_delete: bool = False,
    say: Callable[[str], None] | None = None,
    scope: Scope | None = None,
    stages: dict[str, float] | None = None,
    full_compare: bool = False,
) -> dict[str, Any]:
    """Bring the cache up to date with the data; return the run summary (``--json``).

    ``allow_mass_delete`` lets through an update that deletes more of a layer than
    ``max_delete_share`` (:class:`~tiledelta.errors.MassDeleteError` otherwise). With a
    partial ``scope`` only the dirty meta-tiles there are re-rendered; the snapshot and
    the journal keep the rest pending. ``stages`` as in :func:`seed`.

    When every layer's files are proven unchanged since the last build and nothing else
    is due (docs/detection.md), nothing is read, locked or recorded: the summary says
    ``nothing_to_do``. ``full_compare`` reads, fingerprints and diffs every layer.
    """
    require_mapnik()  # one line naming the render extra, before anything is written
    if not full_compare and (scope is None or not scope.partial):
        t0 = time.perf_counter()
        quick = changes_without_reading(project)
        if quick is not None and not quick.any:
            return _nothing_to_do(project, quick, time.perf_counter() - t0, stages)
    build = functools.partial(
        build_update, allow_mass_delete=allow_mass_delete, scope=scope, full_compare=full_compare
    )
    kw: dict[str, Any] = {"say": say} if say else {}
    summary = run(
        project,
        build,
        name="update",
        progress=progress,
        notify=notify,
        keep_before=True,
        stages=stages,
        **kw,
    )
    return summary.as_json()


def _nothing_to_do(
    project: Project, changes: Changes, seconds: float, stages: dict[str, float] | None
) -> dict[str, Any]:
    """The summary of an update that found, without reading the data, nothing to do."""
    summary = RunSummary(
        kind="update",
        cache=str(project.cache_path),
        cache_kind=project.config.cache.kind,
        seconds=round(seconds, 3),
        levels={str(lv): LevelSummary(**level_counts(RunStats(), lv)) for lv in project.levels},
        stages={**(stages or {}), "detect": round(seconds, 3)},
        changes=changes.as_dict(),
    )
    return summary.as_json() | {"nothing_to_do": True}


def with_processes(project: Project, processes: int | None) -> Project:
    """The project with ``[render] processes`` overridden (``--processes``; 0 = all cores)."""
    return project if processes is None else project.updated(render={"processes": processes})


def run_scope(
    project: Project,
    *,
    levels: str | None = None,
    extent: str | None = None,
    extent_crs: str | None = None,
    aoi: Path | None = None,
) -> Scope:
    """The part of the cache ``--levels``, ``--extent`` (in ``extent_crs``, by default the
    scheme's CRS) and ``--aoi`` limit a seed or update to; a :class:`ConfigError` or
    :class:`UsageError` in one line before anything is written."""
    chosen: tuple[int, ...] | None = None
    configured = project.levels
    if levels is not None:
        allowed = f"{min(configured)}-{max(configured)}"
        try:
            picked = select_levels(project.scheme, levels)
        except TileDeltaError as exc:
            raise UsageError(
                f"--levels {levels}: {exc}; the project has levels {allowed}"
            ) from None
        outside = [lv for lv in picked if lv not in configured]
        if outside or not picked:
            raise UsageError(
                f"--levels {levels}: levels {outside or picked} are not configured; "
                f"choose within the project's levels {allowed}"
            )
        chosen = None if picked == configured else tuple(picked)
    if extent is not None and aoi is not None:
        raise UsageError("give --extent or --aoi, not both")
    area = None
    source = None
    crs = project.scheme.crs
    if extent is not None:
        area = extent_area(extent, extent_crs or crs, crs)
        source = f"--extent {extent}" + (f" ({extent_crs})" if extent_crs else "")
    elif aoi is not None:
        area = read_aoi(aoi, crs)
        source = f"--aoi {aoi}"
    elif extent_crs is not None:
        raise UsageError("--extent-crs needs --extent")
    known = project.extent or project.scheme.extent
    if area is not None and known is not None and not area.intersects(shapely.box(*known)):
        where = "[render] extent" if project.extent else "tiling scheme's extent"
        raise ConfigError(
            f"{source}: the area lies outside the {where} "
            f"({', '.join(f'{v:.6g}' for v in known)} in {crs})"
        )
    return Scope(levels=chosen, area=area, source=source)


def seed_dry_run(project: Project, *, scope: Scope | None = None, restart: bool = False) -> dict:
    """What ``seed`` would do, through the plan the seed executes (:func:`plan_seed`):
    per level the meta-tiles and tiles left to render, and an estimate; writes nothing."""
    layers = read_layers(project)
    sp = plan_seed(project, layers, scope=scope, restart=restart)
    result = _dry_run(project, "seed", sp.todo, scope)
    result["metatiles_planned"] = sp.plan.metatile_count
    if sp.resume:
        result["resume"] = {"metatiles_done": sp.metatiles_done, "bundles_done": len(sp.done)}
    if sp.discard:
        result["discard"] = sp.discard
    return result


def update_dry_run(project: Project, *, scope: Scope | None = None) -> dict:
    """What ``update`` would do, through the plan the update executes; writes nothing."""
    layers = read_layers(project)
    changes = detect_changes(project, layers)
    if changes.rebuild:
        result = seed_dry_run(project, scope=scope)
        result["kind"] = "update"
        result["rebuild"] = changes.rebuild
    else:
        result = _dry_run(project, "update", plan_update(project, changes, layers, scope), scope)
    result["changes"] = changes.as_dict()
    return result


def _dry_run(project: Project, kind: str, plan: TilePlan, scope: Scope | None) -> dict:
    tiles = plan.tile_count(project.scheme)
    speed = measured_speed(project)
    size = _mean_tile_bytes(project)
    levels = [
        lv for lv in project.levels if scope is None or scope.levels is None or lv in scope.levels
    ]
    out: dict[str, Any] = {
        "dry_run": True,
        "kind": kind,
        "levels": {
            str(lv): {"metatiles": len(plan.levels.get(lv, ())), "tiles": tiles.get(lv, 0)}
            for lv in levels
        },
        "metatiles": plan.metatile_count,
        "tiles": sum(tiles.values()),
        "estimated_seconds": round(plan.metatile_count / speed, 1) if speed else None,
        "estimated_bytes": int(sum(tiles.values()) * size) if size else None,
        "estimate_basis": (
            f"{speed:.1f} meta-tiles/s measured over the last runs"
            if speed
            else "no measurement yet"
        )
        + (f"; {size:,.0f} bytes per stored tile in the cache" if size else ""),
    }
    if scope is not None and scope.partial:
        out["partial"] = scope.as_json()
    return out


def _mean_tile_bytes(project: Project, sample: int = 256) -> float | None:
    """Mean size of (up to ``sample``) tiles stored in the cache, or None."""
    if not project.cache_path.exists():
        return None
    try:
        with open_project_store(project, readonly=True) as store:
            addrs = list(itertools.islice(store.iter_tiles(), sample))
            got = store.get_many(addrs)
    except TileDeltaError:
        return None
    return sum(len(b) for b in got.values()) / len(got) if got else None


def with_engine(project: Project, engine: str | None, scheduler: str | None) -> Project:
    """The project with ``[render] engine`` / ``scheduler`` overridden (``--engine``,
    ``--scheduler``); a scheduler address alone means the Dask engine."""
    changes: dict[str, Any] = {}
    if scheduler:
        if not re.fullmatch(r"(tcp|tls|inproc|ws|wss)://\S+", scheduler):
            raise ConfigError(
                f"--scheduler {scheduler}: not a Dask scheduler address; give one like "
                "tcp://host:8786"
            )
        changes["scheduler"] = scheduler
        changes["engine"] = engine or "dask"
    elif engine:
        changes["engine"] = engine
    return project.updated(render=changes) if changes else project


def init_project(
    directory: Path,
    *,
    style: Path | None = None,
    sources: list[str] | None = None,
    levels: str = "0-19",
    scheme: str = "web-mercator",
    cache_kind: str = "compact",
    fmt: str = "png",
    force: bool = False,
    map_path: Path | None = None,
    map_name: str | None = None,
    layer_sources: dict[str, str] | None = None,
) -> Path:
    """Write ``directory/tiledelta.toml`` (and a default style when only sources are given).

    With ``map_path`` (an ArcGIS Pro .aprx/.mapx/.lyrx) the project reads that map
    (docs/pro-maps.md); ``layer_sources`` maps layer names to readable copies of their data
    (``[layers."NAME"] source``). Nothing is written when the map cannot be used.
    """
    directory = Path(directory)
    target = directory / PROJECT_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; use --force to overwrite it")
    for part in levels.split(","):  # the syntax now; the scheme checks the range below
        m = _LEVEL_SYNTAX.fullmatch(part)
        if not m or (m.group(2) is not None and int(m.group(1)) > int(m.group(2))):
            raise UsageError(f"--levels {levels}: write a low-high range, e.g. 9-19, 5 or 0-3,7")
    if map_path is not None:
        if style is not None or sources:
            raise ConfigError("give either --map, --style STYLE.xml or --source PATH, not several")
        return _init_from_map(
            directory,
            Path(map_path),
            map_name,
            layer_sources or {},
            levels,
            scheme,
            cache_kind,
            fmt,
        )
    if map_name is not None or layer_sources:
        raise ConfigError("--map-name and --layer-source need --map County.aprx")
    if (style is None) == (not sources):
        raise ConfigError("give either --style STYLE.xml or one or more --source PATH")
    if style is not None:
        style = Path(style)
        if not style.is_file():
            raise ConfigError(f"{style}: style file not found")
        style_ref = _relative(style.resolve(), directory.resolve())
    else:
        style_ref = "style.xml"
    cache_path = "cache.mbtiles" if cache_kind == "mbtiles" else "cache"
    data: dict[str, Any] = {
        "style": style_ref,
        "scheme": scheme,
        "levels": levels,
        "cache": {"kind": cache_kind, "path": cache_path, "format": fmt},
    }
    Project(directory, parse_config(data, target)).check()  # scheme and levels, before writing
    # A failed init leaves nothing behind: the folders it made and the style it wrote go.
    made = next((p for p in reversed([directory, *directory.parents]) if not p.exists()), None)
    default = directory / "style.xml"
    had_default = default.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        keys = _write_default_style(directory, sources or []) if style is None else {}
        if keys:
            data["layers"] = {name: {"key": key} for name, key in keys.items()}
        project = Project(directory, parse_config(data, target))
        project.style  # noqa: B018
        path = project.save()
        _note_keys(path, keys)
        return path
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        elif style is None and not had_default:
            default.unlink(missing_ok=True)
        raise


def _note_keys(path: Path, keys: dict[str, str]) -> None:
    """Say in ``tiledelta.toml`` which keys init proposed, above each layer's table."""
    if not keys:
        return
    text = path.read_text(encoding="utf-8")
    for name, key in keys.items():
        header = f"[layers.{name}]"
        if header not in text:
            header = f'[layers."{name}"]'
        note = (
            f'# init proposed key = "{key}": a unique integer id field of {name}, so an '
            "edited feature shows as modified (delete the key to match features by content)"
        )
        text = text.replace(header, f"{note}\n{header}", 1)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _init_from_map(
    directory: Path,
    map_path: Path,
    map_name: str | None,
    layer_sources: dict[str, str],
    levels: str,
    scheme: str,
    cache_kind: str,
    fmt: str,
) -> Path:
    """A project reading a Pro map: every check (the map, its layers and their data) runs
    before the folder or the file is written."""
    if not map_path.is_file():
        raise ConfigError(f"{map_path}: map file not found")
    root = directory.resolve()
    layers = {}
    for name, src in layer_sources.items():
        p = Path(src).expanduser()
        ref = src if src.startswith("PG:") else _relative(p.resolve(), root)
        layers[name] = {"source": ref}
    data: dict[str, Any] = {
        "map": _relative(map_path.resolve(), root),
        "scheme": scheme,
        "levels": levels,
        "cache": {
            "kind": cache_kind,
            "path": "cache.mbtiles" if cache_kind == "mbtiles" else "cache",
            "format": fmt,
        },
    }
    if map_name is not None:
        data["map_name"] = map_name
    if layers:
        data["layers"] = layers
    target = directory / PROJECT_FILE
    project = Project(directory, parse_config(data, target))
    project.check()
    style = project.style  # reads the map and checks every layer's data
    unknown = sorted(set(layer_sources) - {lyr.name for lyr in style.layers})
    if unknown:
        raise ConfigError(
            f"--layer-source names {', '.join(map(repr, unknown))}, not a feature layer of the "
            f"map (its layers: {', '.join(repr(lyr.name) for lyr in style.layers)})"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return project.save()


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _write_default_style(directory: Path, sources: list[str]) -> dict[str, str]:
    """Write ``style.xml`` drawing ``sources``; return the key proposed per layer (a
    unique integer id field: :func:`~tiledelta.sources.keys.find_key_field`)."""
    described: list[dict[str, Any]] = []
    keys: dict[str, str] = {}
    for spec in sources:
        path, _, layer = spec.partition("::") if "::" in spec else _split_layer(spec)
        real = Path(path).expanduser()
        if not real.exists():
            raise ConfigError(f"{path}: source not found")
        layers = [layer] if layer else list_layers(str(real))
        for lyr in layers:
            d = describe(str(real), lyr)
            described.append(
                {
                    "name": lyr
                    if lyr not in [x["name"] for x in described]
                    else f"{real.stem}_{lyr}",
                    "path": _relative(real.resolve(), directory.resolve()),
                    "layer": lyr,
                    "geometry_type": d["geometry_type"],
                    "fields": d["fields"],
                    "srs": (d["crs"] or "").lower() or None,
                }
            )
            key = find_key_field(str(real), lyr)
            if key is not None:
                keys[described[-1]["name"]] = key
    (directory / "style.xml").write_text(default_style(described), encoding="utf-8")
    return keys


def _split_layer(spec: str) -> tuple[str, str, str]:
    """PATH:LAYER, but leave Windows drive letters (C:\\...) alone."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and len(head) > 1 and not Path(spec).exists():
        return head, sep, tail
    return spec, "", ""


def map_info(path: Path, map_name: str | None = None) -> dict[str, Any]:
    """What tiledelta reads from an ArcGIS Pro map (.aprx/.mapx/.lyrx), without opening its
    data: layers, data connections, scale ranges, definition queries, fields, labels,
    buffers, and the layers not used (docs/pro-maps.md)."""
    return describe_map(read_pro_map(Path(path), map_name))


def map_layer_lines(project: Project) -> list[str]:
    """For a project reading an ArcGIS Pro map: one line per feature layer (data, scale
    range, definition query, fields, labels, buffer), then the map's notes (layers not
    used, fields that could not be told). Empty for a Mapnik XML style."""
    if project.config.map is None:
        return []
    pro = read_pro_map(project.style_file, project.config.map_name)
    return layer_lines(pro) + list(project.style.notes)


def project_info(project: Project) -> dict:
    """Scheme, levels, layers, cache and stored tiles per level."""
    scheme = project.scheme
    counts: dict[int, int] = {}
    if project.cache_path.exists():
        with open_project_store(project, create=False) as store:
            counts = store.count()
    return {
        "project": str(project.root),
        "style": str(project.style.path),
        "scheme": {
            "name": scheme.name,
            "crs": scheme.crs,
            "wkid": scheme.wkid,
            "origin": [scheme.origin_x, scheme.origin_y],
            "tile_size": [scheme.tile_width, scheme.tile_height],
        },
        "levels_configured": project.config.levels,
        "layers": {
            lyr.name: {
                "kind": lyr.kind,
                "path": display_path(lyr),
                "layer": lyr.layer,
                "attributes": list(lyr.attributes),
                "key": project.key_field(lyr.name),
            }
            for lyr in project.style.layers
        },
        "cache": str(project.cache_path),
        "cache_kind": project.config.cache.kind,
        "levels": {
            str(lv): {
                "tiles": counts.get(lv, 0),
                "scale": scheme.lod(lv).scale,
                "resolution": scheme.lod(lv).resolution,
            }
            for lv in project.levels
        },
        "tiles": sum(counts.values()),
    }


def run_demo(
    directory: Path,
    *,
    levels: str = "0-19",
    cache_kind: str = "compact",
    say: Callable[[str], None] = print,
    progress=None,
    verify: bool = True,
) -> dict:
    """The main job on sample data: build a sample county's cache, edit the data, update."""
    require_mapnik()  # before the sample county is written
    directory = Path(directory)
    counts = sample.generate(directory, hillshade=True)  # and a hillshade under the vectors
    say(
        f"sample county written to {directory / 'data' / 'county.gpkg'}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    init_project(
        directory,
        style=directory / "style.xml",
        levels=levels,
        cache_kind=cache_kind,
        force=True,
    )
    # Roads carry a stable id: a renamed or moved road is reported as "modified".
    Project.load(directory).updated(layers={"roads": LayerConfig(key="road_id")}).save()
    from tiledelta.runs.report import counts_line

    project = load_project(directory)
    full = seed(project, progress=progress)
    say(
        f"full build: {counts_line(full)} ({full['metatiles_rendered']:,} meta-tiles) "
        f"in {full['seconds']:.2f} s -> {full['cache']}"
    )
    say("editing the sample data:")
    for line in sample.apply_edits(directory):
        say(f"  - {line}")
    upd = update(load_project(directory), progress=progress)
    for name, c in upd["changes"]["layers"].items():
        if any(c.values()):
            say(f"  {name}: {c['added']} added, {c['modified']} modified, {c['deleted']} deleted")
    say(
        f"update: {counts_line(upd)} ({upd['metatiles_rendered']:,} meta-tiles) "
        f"in {upd['seconds']:.2f} s (the full build took {full['seconds']:.2f} s)"
    )
    result = {"seed": full, "update": upd}
    if verify:
        same, compared = verify_against_full_build(directory)
        result["verified"] = {"identical": same, "tiles_compared": compared}
        say(
            f"verified: the updated cache equals a fresh full build ({compared:,} tiles compared)"
            if same
            else "MISMATCH: the updated cache differs from a fresh full build"
        )
    say(
        f"cache: {full['cache']}  (look inside: tiledelta info --project {directory}; "
        f"browse it: tiledelta serve --project {directory})"
    )
    return result


def verify_against_full_build(directory: Path) -> tuple[bool, int]:
    """Seed a copy of the project's data and compare every tile with the project's cache."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy"
        shutil.copytree(
            directory, copy, ignore=shutil.ignore_patterns("cache", "cache.*", ".tiledelta", ".env")
        )
        seed(load_project(copy), notify=False)
        with (
            open_project_store(load_project(directory), create=False) as a,
            open_project_store(load_project(copy), create=False) as b,
        ):
            ta, tb = set(a.iter_tiles()), set(b.iter_tiles())
            same = ta == tb and all(a.get(*t) == b.get(*t) for t in ta)
    return same, len(ta)


def plan_summary(project: Project, aoi: Path | None = None, target: str = "local") -> dict:
    """What ``update`` would do: changes, tiles per level, an estimate; writes no tiles.

    With ``target="arcgis"``: per level of the service, the tiles found dirty and the
    supertiles and tiles ArcGIS Server would redraw (the service's JSON is read; no job
    is sent).
    """
    if target == "arcgis":
        from tiledelta.publish.arcgis.cache import plan_server  # the server's HTTP client

        return plan_server(project, aoi=aoi)
    layers = read_layers(project)
    changes = detect_changes(project, layers)
    if changes.rebuild:
        plan = full_plan(project, layers, project.levels)
    else:
        plan = update_plan(project, changes, layers)
    counts = plan.tile_count(project.scheme)
    stored: dict[int, int] = {}
    if project.cache_path.exists():
        with open_project_store(project, create=False) as store:
            stored = store.count()
    result = {
        "changes": changes.as_dict(),
        "levels": {
            str(lv): {"tiles": counts.get(lv, 0), "stored": stored.get(lv, 0)}
            for lv in project.levels
        },
        "tiles": sum(counts.values()),
        "metatiles": plan.metatile_count,
        "estimated_seconds": _estimate(project, plan.metatile_count),
    }
    if aoi is not None:
        result["aoi_files"] = [str(p) for p in write_aoi(project, changes.boxes(), aoi)]
    return result


def _estimate(project: Project, metatiles: int) -> float | None:
    """Seconds for ``metatiles`` at the speed the last runs measured."""
    speed = measured_speed(project)
    return round(metatiles / speed, 1) if speed else None


def changes_summary(project: Project, target: str = "local", *, full_compare: bool = False) -> dict:
    """What changed since the last build (as ``tiledelta status --json`` prints); layers
    whose files are proven unchanged are not read (``full_compare``: every one is)."""
    return detect_changes(project, target=target, full_compare=full_compare).as_dict()


def describe_changes(changes: dict) -> list[str]:
    """Human lines for a changes summary."""
    if changes["rebuild"]:
        return [f"full rebuild needed: {changes['rebuild']}"]
    proven = set(changes.get("unchanged_files", []))
    lines = [
        f"{name}: {c['added']} added, {c['modified']} modified, {c['deleted']} deleted"
        + (f", {c['reordered']} moved in the draw order" if c.get("reordered") else "")
        + (f"; {UNCHANGED_FILES}" if name in proven else "")
        for name, c in changes["layers"].items()
    ]
    if changes["new_levels"]:
        lines.append(f"new levels (full render): {changes['new_levels']}")
    if changes["dropped_levels"]:
        lines.append(f"dropped levels (tiles removed): {changes['dropped_levels']}")
    if changes["unfinished_run"]:
        lines.append("an earlier update did not finish: its tiles are planned again")
    for name in changes.get("restyled", []):
        lines.append(
            f"{name}: its symbology, labels or scale range changed in the map, or the layer "
            "was added or removed (its levels are rebuilt)"
        )
    idle = not (
        any(
            c["added"] or c["modified"] or c["deleted"] or c.get("reordered")
            for c in changes["layers"].values()
        )
        or changes["new_levels"]
        or changes["dropped_levels"]
        or changes["unfinished_run"]
        or changes.get("restyled")
    )
    if proven and idle:
        lines.append("nothing to do")
    return lines


def run_update(
    project: Project,
    *,
    target: str = "local",
    say: Callable[[str], None] = print,
    progress: Progress | None = None,
    mark_current: bool = False,
    via: str = "render",
    upload_progress: Progress | None = None,
) -> dict:
    """``tiledelta update``: the local cache, or the ArcGIS Server cache.

    With ``target="arcgis"``, ``via="render"`` has the server redraw the changed area;
    ``via="package"`` renders locally and imports the changed tiles as a tile package.
    """
    # ArcGIS Server's client (httpx) is imported by the runs that talk to a server only.
    from tiledelta.publish.arcgis.cache import update_server
    from tiledelta.publish.arcgis.patch import update_via_package

    if target == "arcgis" and via == "package":
        if mark_current:
            raise ConfigError("--mark-current goes with --via render, not --via package")
        return update_via_package(
            project, say=say, progress=progress, upload_progress=upload_progress
        )
    if target == "arcgis":
        return update_server(project, say=say, mark_current=mark_current)
    result = update(project, progress=progress)
    for line in describe_changes(result["changes"]) if not result.get("rebuild") else []:
        say(line)
    return result


def make_package(
    project: Project,
    out: Path,
    *,
    levels: str | None = None,
    changed_only: bool = False,
    upload: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``tiledelta package``: a .tpkx from the local cache, optionally uploaded to the item."""
    if upload and changed_only:
        raise ConfigError(
            "--changed-only with --upload would replace the full tile package of the portal "
            "item [arcgis] item_id with a partial one; patch the service with "
            "'tiledelta update --target arcgis --via package' instead"
        )
    from tiledelta.publish.arcgis.publish import upload_package
    from tiledelta.publish.package import write_tpkx

    try:
        chosen = select_levels(project.scheme, levels) if levels else None
    except TileDeltaError as exc:
        raise UsageError(f"--levels {levels}: {exc}") from None
    result = write_tpkx(project, out, levels=chosen, changed_only=changed_only)
    if upload:
        result["upload"] = upload_package(project, out, say=say)
    return result


def publish_service(
    project: Project, *, say: Callable[[str], None] = print, update_cache: bool = True
) -> dict[str, Any]:
    """``tiledelta publish``: overwrite the service keeping its cache, then update the cache."""
    from tiledelta.publish.arcgis.publish import publish

    return publish(project, say=say, update_cache=update_cache)


def pro_project(
    directory: Path | str, *, aprx: str | None = None, map_name: str | None = None
) -> Project:
    """The project an ArcGIS Pro toolbox tool works on.

    ``directory`` holds ``tiledelta.toml``; when it has none, one is made from the Pro
    map (``aprx`` + ``map_name``, as ``tiledelta init --map``). ``aprx``/``map_name``
    also become this run's ``[arcgis] aprx``/``map`` (what ``publish`` shares).
    """
    directory = Path(directory)
    if not (directory / PROJECT_FILE).is_file():
        if not aprx:
            raise ConfigError(
                f"{directory}: no {PROJECT_FILE}; choose the map (or its .aprx) to make one, "
                "or run 'tiledelta init' there"
            )
        init_project(directory, map_path=Path(aprx), map_name=map_name)
    project = load_project(directory)
    cfg = project.config.arcgis
    update = {k: v for k, v in (("aprx", aprx), ("map", map_name)) if v}
    if cfg is not None and update:
        project = project.updated(arcgis=cfg.model_copy(update=update))
    return project
