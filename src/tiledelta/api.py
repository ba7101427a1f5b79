"""The library calls behind the CLI and the ArcGIS Pro toolbox.

Every command runs through here: :func:`seed` and :func:`update` (and the server-side
update) go through the one run lifecycle (:func:`tiledelta.runs.run`); the rest read.
Nothing here imports Mapnik unless it renders.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiledelta import sample
from tiledelta.build import build_full, build_update
from tiledelta.build.context import Progress
from tiledelta.change import detect_changes, measured_speed, write_aoi
from tiledelta.config import LayerConfig, parse_config
from tiledelta.errors import ConfigError
from tiledelta.grid import select_levels
from tiledelta.plan import full_plan, update_plan
from tiledelta.project import PROJECT_FILE, Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.publish.arcgis.publish import publish, upload_package
from tiledelta.publish.package import write_tpkx
from tiledelta.render import mapnik_installed
from tiledelta.runs import run
from tiledelta.sources import describe, display_path, list_layers, read_layers
from tiledelta.stores import open_project_store
from tiledelta.style import default_style


def load_project(directory: Path | str) -> Project:
    """Load and validate a project: configuration, scheme, levels and style.

    Where Mapnik is installed the style is also loaded into Mapnik strictly, so its
    errors (unknown properties, bad colours, missing fonts) surface before any work.
    """
    project = Project.load(Path(directory))
    project.style  # noqa: B018 - parse errors first
    if mapnik_installed():
        # Mapnik is optional (the server path runs without it): imported only when present.
        from tiledelta.render.validate import validate_style

        validate_style(project.style)
    return project


def seed(
    project: Project, *, progress: Progress | None = None, notify: bool = True
) -> dict[str, Any]:
    """Build the whole cache anew and record the snapshot; return the run summary."""
    return run(project, build_full, name="seed", progress=progress, notify=notify).as_json()


def update(
    project: Project, *, progress: Progress | None = None, notify: bool = True
) -> dict[str, Any]:
    """Bring the cache up to date with the data; return the run summary (``--json``)."""
    summary = run(
        project, build_update, name="update", progress=progress, notify=notify, keep_before=True
    )
    return summary.as_json()


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
) -> Path:
    """Write ``directory/tiledelta.toml`` (and a default style when only sources are given)."""
    directory = Path(directory)
    target = directory / PROJECT_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; use --force to overwrite it")
    if (style is None) == (not sources):
        raise ConfigError("give either --style STYLE.xml or one or more --source PATH")
    directory.mkdir(parents=True, exist_ok=True)
    if style is not None:
        style = Path(style)
        if not style.is_file():
            raise ConfigError(f"{style}: style file not found")
        style_ref = _relative(style.resolve(), directory.resolve())
    else:
        style_ref = "style.xml"
        _write_default_style(directory, sources or [])
    cache_path = "cache.mbtiles" if cache_kind == "mbtiles" else "cache"
    data = {
        "style": style_ref,
        "scheme": scheme,
        "levels": levels,
        "cache": {"kind": cache_kind, "path": cache_path, "format": fmt},
    }
    cfg = parse_config(data, target)
    project = Project(directory, cfg)
    project.check()  # scheme and levels, before writing
    project.style  # noqa: B018
    return project.save()


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _write_default_style(directory: Path, sources: list[str]) -> None:
    described: list[dict[str, Any]] = []
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
    (directory / "style.xml").write_text(default_style(described), encoding="utf-8")


def _split_layer(spec: str) -> tuple[str, str, str]:
    """PATH:LAYER, but leave Windows drive letters (C:\\...) alone."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and len(head) > 1 and not Path(spec).exists():
        return head, sep, tail
    return spec, "", ""


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
    directory = Path(directory)
    counts = sample.generate(directory)
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
    project = load_project(directory)
    full = seed(project, progress=progress)
    say(
        f"full build: {full['tiles_written']:,} tiles ({full['metatiles_rendered']:,} meta-tiles) "
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
        f"update: re-rendered {upd['tiles_rendered']:,} tiles ({upd['metatiles_rendered']:,} "
        f"meta-tiles), wrote {upd['tiles_written']:,}, removed {upd['tiles_removed']:,}, "
        f"{upd['tiles_unchanged']:,} unchanged, in {upd['seconds']:.2f} s "
        f"(the full build took {full['seconds']:.2f} s)"
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


def plan_summary(project: Project, aoi: Path | None = None) -> dict:
    """What ``update`` would do: changes, tiles per level, an estimate; writes no tiles."""
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


def changes_summary(project: Project, target: str = "local") -> dict:
    """What changed since the last build (as ``tiledelta status --json`` prints)."""
    return detect_changes(project, target=target).as_dict()


def describe_changes(changes: dict) -> list[str]:
    """Human lines for a changes summary."""
    if changes["rebuild"]:
        return [f"full rebuild needed: {changes['rebuild']}"]
    lines = [
        f"{name}: {c['added']} added, {c['modified']} modified, {c['deleted']} deleted"
        + (f", {c['reordered']} moved in the draw order" if c.get("reordered") else "")
        for name, c in changes["layers"].items()
    ]
    if changes["new_levels"]:
        lines.append(f"new levels (full render): {changes['new_levels']}")
    if changes["dropped_levels"]:
        lines.append(f"dropped levels (tiles removed): {changes['dropped_levels']}")
    if changes["unfinished_run"]:
        lines.append("an earlier update did not finish: its tiles are planned again")
    return lines


def run_update(
    project: Project,
    *,
    target: str = "local",
    say: Callable[[str], None] = print,
    progress: Progress | None = None,
    mark_current: bool = False,
) -> dict:
    """``tiledelta update``: the local cache, or the ArcGIS Server cache."""
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
    chosen = select_levels(project.scheme, levels) if levels else None
    result = write_tpkx(project, out, levels=chosen, changed_only=changed_only)
    if upload:
        result["upload"] = upload_package(project, out, say=say)
    return result


def publish_service(
    project: Project, *, say: Callable[[str], None] = print, update_cache: bool = True
) -> dict[str, Any]:
    """``tiledelta publish``: overwrite the service keeping its cache, then update the cache."""
    return publish(project, say=say, update_cache=update_cache)
