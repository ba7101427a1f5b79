"""Full builds: render every non-blank tile of the configured levels."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tiledelta.errors import CacheError
from tiledelta.plan import TilePlan, plan_for_boxes
from tiledelta.project import Project
from tiledelta.runlog import write_run
from tiledelta.runner import RunStats, blank_fill, fill_blanks, run_project_plan
from tiledelta.sources import LayerData, data_extent, read_layer

log = logging.getLogger(__name__)


def read_layers(project: Project) -> dict[str, LayerData]:
    """Every style layer's features, in scheme CRS and stable order."""
    out = {}
    for src in project.style.layers:
        t = time.perf_counter()
        out[src.name] = read_layer(src, project.scheme.crs, project.key_field(src.name))
        log.info(
            "read %s: %d features in %.2f s", src.name, len(out[src.name]), time.perf_counter() - t
        )
    return out


def full_plan(project: Project, layers: dict[str, LayerData], levels: list[int]) -> TilePlan:
    """Meta-tiles that any feature reaches, per level (all others are blank)."""
    s = project.settings
    return plan_for_boxes(
        project.scheme,
        project.style,
        {name: d.bounds for name, d in layers.items()},
        levels,
        s.metatile,
        s.buffer,
        extent=project.extent,
    )


def _swap_in(new: Path, final: Path) -> None:
    """Replace ``final`` by ``new`` (files or folders) with two renames."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def seed(
    project: Project,
    *,
    progress: Callable[[int, int], None] | None = None,
    layers: dict[str, LayerData] | None = None,
    locked: bool = False,
) -> dict:
    """Build the whole cache anew and record the snapshot; return a summary.

    The cache is built beside the old one and swapped in at the end, so a
    failed build leaves the previous cache untouched. ``locked`` says the
    caller already holds the project lock.
    """
    if not locked:
        from tiledelta.notify import notify_failure, notify_run
        from tiledelta.update import project_lock

        try:
            with project_lock(project):
                result = seed(project, progress=progress, layers=layers, locked=True)
        except Exception as exc:
            notify_failure(project, "seed", exc)
            raise
        notify_run(project, result)
        return result
    t0 = time.perf_counter()
    scheme, levels = project.scheme, project.levels
    final = project.cache_path
    if final.exists():
        # Refuse early when the existing cache holds another scheme.
        project.open_store(create=False).close()
    layers = layers if layers is not None else read_layers(project)
    plan = full_plan(project, layers, levels)
    t_read = time.perf_counter()
    log.info("plan: %d meta-tiles over levels %s", plan.metatile_count, sorted(plan.levels))
    building = final.with_name(final.name + ".building")
    if building.exists():
        shutil.rmtree(building) if building.is_dir() else building.unlink()
    from tiledelta.stores import open_store

    c = project.config.cache
    try:
        with open_store(
            c.kind, building, project.cache_scheme, fmt=c.format, quality=c.quality
        ) as store:
            if hasattr(store, "set_extent"):
                store.set_extent(data_extent(layers) or scheme.extent)
            blank = blank_fill(project)
            stats = run_project_plan(project, layers, plan, store, progress=progress, blank=blank)
            if blank is not None:
                stats.tiles_blank_stored = fill_blanks(store, blank, levels)
        _swap_in(building, final)
    except BaseException:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True) if building.is_dir() else building.unlink()
        raise
    from tiledelta.snapshot import record_build

    result = summary(
        project, stats, levels, time.perf_counter() - t0, stages={"read_plan": t_read - t0}
    )
    run_id = record_build(project, layers, levels, kind="seed", summary=result, clear_journal=True)
    result["run"] = run_id
    folder = write_run(project, run_id, result)
    result["run_folder"] = str(folder)
    from tiledelta.report import try_write_report

    try_write_report(project, folder, layers=layers)
    return result


def summary(
    project: Project,
    stats: RunStats,
    levels: list[int],
    seconds: float,
    stages: dict[str, float] | None = None,
) -> dict:
    """The JSON summary shared by seed and update."""
    if not isinstance(stats, RunStats):
        raise CacheError("internal: bad run statistics")
    return {
        "cache": str(project.cache_path),
        "cache_kind": project.config.cache.kind,
        "levels": {str(lv): {"tiles": stats.levels.get(lv, 0)} for lv in levels},
        "metatiles_rendered": stats.metatiles,
        "tiles_rendered": stats.tiles_rendered,
        "tiles_written": stats.tiles_written,
        "tiles_unchanged": stats.tiles_unchanged,
        "tiles_removed": stats.tiles_removed,
        "tiles_blank": stats.tiles_blank,
        "tiles_blank_stored": stats.tiles_blank_stored,
        "seconds": round(seconds, 3),
        "stages": {k: round(v, 3) for k, v in (stages or {}).items()},
    }
