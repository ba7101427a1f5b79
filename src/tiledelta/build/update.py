"""Change-driven updates: diff against the snapshot, plan the dirty meta-tiles, render them.

Crash safety: before any tile is written, the dirty boxes of the run go to the journal
(:meth:`~tiledelta.build.context.RunContext.journal`). The lifecycle advances the
snapshot and clears the journal in one transaction after every planned tile is in the
cache. A run that dies leaves the old snapshot and the journal, so the next run re-plans
the same tiles (plus whatever changed since) and finishes the job.
"""

from __future__ import annotations

import logging

from tiledelta.build.blanks import fill_blanks, reconcile_blanks
from tiledelta.build.context import BuildOutcome, RunContext
from tiledelta.build.seed import build_full, record_metadata
from tiledelta.change import detect_changes
from tiledelta.plan import update_plan
from tiledelta.render import RunStats
from tiledelta.sources import boxes_extent, data_extent, read_layers
from tiledelta.stores import open_project_store

log = logging.getLogger(__name__)


def build_update(ctx: RunContext) -> BuildOutcome:
    """Bring the cache up to date with the data: re-render exactly the dirty meta-tiles."""
    project = ctx.project
    with ctx.stage("read"):
        layers = read_layers(project)
    with ctx.stage("detect"):
        changes = detect_changes(project, layers)
    if changes.rebuild:
        outcome = build_full(ctx, layers=layers)
        outcome.kind = "rebuild"
        outcome.rebuild = changes.rebuild
        outcome.changes = changes
        return outcome
    # Rendering needs Mapnik, an optional dependency: imported only when there is work.
    from tiledelta.render.pool import blank_fill, run_project_plan

    with ctx.stage("plan"):
        boxes = changes.boxes()
        plan = update_plan(project, changes, layers)
    for name, c in changes.layers.items():
        log.info("%s: %s", name, c.as_dict())
    log.info(
        "plan: %d meta-tiles (%s)",
        plan.metatile_count,
        {lv: len(m) for lv, m in plan.levels.items()},
    )
    ctx.journal(boxes)
    stats = RunStats()
    top = max(project.levels + changes.dropped_levels)
    with ctx.stage("render_write"):
        blank = blank_fill(project, data_extent(layers))
        # The area the last build kept blank tiles over: the snapshot's extent.
        was = boxes_extent([snap.bounds for snap in changes.snapshot.values()])
        area = project.extent or was
        with open_project_store(project, max_level=top) as store:
            if plan.metatile_count:
                stats = run_project_plan(
                    project,
                    layers,
                    plan,
                    store,
                    compare=True,
                    progress=ctx.progress,
                    before=ctx.before,
                    blank=blank,
                )
            if blank is not None and changes.new_levels:
                fill_blanks(store, blank, changes.new_levels, stats, track=True)
            if blank is not None:
                old_blank = blank.over(project.scheme, project.levels, area)
                old_levels = [lv for lv in project.levels if lv not in changes.new_levels]
                reconcile_blanks(store, old_blank, blank, old_levels, stats)
            for level in changes.dropped_levels:
                gone = [(lv, r, c, None) for lv, r, c in store.iter_tiles(level)]
                if gone:
                    store.put_many(gone)
                    stats.tiles_removed += len(gone)
                    stats.changed.extend(a[:3] for a in gone)
        # conf.xml lists the configured levels again; the metadata follows the data.
        with open_project_store(project) as store:
            record_metadata(store, project, layers)
    return BuildOutcome(
        kind="update",
        layers=layers,
        levels=project.levels,
        stats=stats,
        changes=changes,
        changed_tiles=stats.changed,
        level_info={lv: {"tiles": stats.planned.get(lv, 0)} for lv in project.levels},
    )
