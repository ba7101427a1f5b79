"""Full builds: render every non-blank tile of the configured levels.

The cache is built beside the old one (``<cache>.building``) and swapped in at the end,
so a failed build leaves the previous cache untouched and serving.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tiledelta.build.blanks import fill_blanks
from tiledelta.build.context import BuildOutcome, RunContext
from tiledelta.plan import full_plan
from tiledelta.project import Project
from tiledelta.sources import LayerData, data_extent, read_layers
from tiledelta.stores import TileStore, open_project_store

log = logging.getLogger(__name__)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _swap_in(new: Path, final: Path) -> None:
    """Replace ``final`` by ``new`` (files or folders) with two renames."""
    old = final.with_name(final.name + ".old")
    _remove(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    _remove(old)


def record_metadata(store: TileStore, project: Project, layers: dict[str, LayerData]) -> None:
    """The cache's metadata from the current data: the same after a seed or an update."""
    extent = data_extent(layers) or project.scheme.extent
    store.set_metadata(extent=extent, name=project.root.name, levels=project.levels)


def build_full(ctx: RunContext, *, layers: dict[str, LayerData] | None = None) -> BuildOutcome:
    """Render the whole cache anew into a new folder and swap it in."""
    # Rendering needs Mapnik, an optional dependency: imported only when a build runs.
    from tiledelta.render.pool import blank_fill, run_project_plan

    project = ctx.project
    levels = project.levels
    final = project.cache_path
    if final.exists():
        # Refuse early when the existing cache holds another scheme.
        open_project_store(project, create=False).close()
    with ctx.stage("read"):
        layers = layers if layers is not None else read_layers(project)
    with ctx.stage("plan"):
        plan = full_plan(project, layers, levels)
    log.info("plan: %d meta-tiles over levels %s", plan.metatile_count, sorted(plan.levels))
    building = final.with_name(final.name + ".building")
    _remove(building)
    try:
        with ctx.stage("render_write"), open_project_store(project, path=building) as store:
            blank = blank_fill(project, data_extent(layers))
            stats = run_project_plan(
                project, layers, plan, store, progress=ctx.progress, blank=blank
            )
            if blank is not None:
                fill_blanks(store, blank, levels, stats)
            record_metadata(store, project, layers)
        _swap_in(building, final)
    except BaseException:
        _remove(building)
        raise
    return BuildOutcome(
        kind="seed",
        layers=layers,
        levels=levels,
        stats=stats,
        level_info={lv: {"tiles": stats.levels.get(lv, 0)} for lv in levels},
    )
