"""Change-driven updates: diff against the snapshot, plan the dirty meta-tiles, render them.

Crash safety: before any tile is written, the dirty boxes of the run go to the journal
(:meth:`~tiledelta.build.context.RunContext.journal`). The lifecycle advances the
snapshot and clears the journal in one transaction after every planned tile is in the
cache. A run that dies leaves the old snapshot and the journal, so the next run re-plans
the same tiles (plus whatever changed since) and finishes the job.
"""

from __future__ import annotations

import logging
from typing import Any

from tiledelta.build.blanks import fill_blanks, reconcile_blanks
from tiledelta.build.context import BuildOutcome, RunContext, Scope
from tiledelta.build.seed import build_full, check_cache, record_metadata, recover_swap
from tiledelta.change import Changes, check_mass_delete, detect_changes
from tiledelta.change.unchanged import observe_layers
from tiledelta.plan import TilePlan, restrict_plan, update_plan
from tiledelta.project import Project
from tiledelta.render import BlankFill, RunStats
from tiledelta.render.dask_engine import open_engine
from tiledelta.sources import LayerData, boxes_extent, data_extent
from tiledelta.sources.files import still_same
from tiledelta.stores import TileStore, open_project_store

log = logging.getLogger(__name__)


def build_update(
    ctx: RunContext,
    *,
    allow_mass_delete: bool = False,
    scope: Scope | None = None,
    full_compare: bool = False,
) -> BuildOutcome:
    """Bring the cache up to date with the data: re-render exactly the dirty meta-tiles,
    with the project's engine (``[render] engine``: local pool or Dask).

    With a partial ``scope`` (``--levels``, ``--extent``, ``--aoi``) only the dirty
    meta-tiles in it are re-rendered; the snapshot is not advanced and the journal keeps
    the whole dirty area, so the next full update does the rest. ``full_compare``
    fingerprints and diffs every layer, even those whose files are proven unchanged.
    """
    with open_engine(ctx.project, ctx.say) as engine:  # a cluster is checked before any write
        return _update(
            ctx,
            engine,
            allow_mass_delete=allow_mass_delete,
            scope=scope or Scope(),
            full_compare=full_compare,
        )


def _update(
    ctx: RunContext,
    engine: Any,
    *,
    allow_mass_delete: bool = False,
    scope: Scope,
    full_compare: bool = False,
) -> BuildOutcome:
    """Bring the cache up to date with the data: re-render exactly the dirty meta-tiles.

    Stops before writing anything when a layer would lose more than its
    ``max_delete_share`` of features, unless ``allow_mass_delete``; every check (the
    cache opens, the bundles and tiles the run reads are whole) comes before the
    journal and the first write.
    """
    project = ctx.project
    recover_swap(project, ctx.say)
    with ctx.stage("read"):
        layers = _read(project, engine)
    with ctx.stage("detect"):
        # Layers whose files are the ones the snapshot was read from are not diffed.
        changes = detect_changes(project, layers, full_compare=full_compare)
        if not allow_mass_delete:
            check_mass_delete(project, changes, layers)
    if changes.rebuild:
        outcome = build_full(ctx, layers=layers, engine=engine, scope=scope)
        outcome.kind = "rebuild"
        outcome.rebuild = changes.rebuild
        outcome.changes = changes
        return outcome
    # Rendering needs Mapnik, an optional dependency: imported only when there is work.
    from tiledelta.render.pool import blank_fill

    engine.complete(project, layers, changes)  # geometry of changed features (Dask)
    with ctx.stage("plan"):
        boxes = changes.boxes()
        plan = plan_update(project, changes, layers, scope)
    for name, c in changes.layers.items():
        log.info("%s: %s", name, c.as_dict())
    log.info(
        "plan: %d meta-tiles (%s)",
        plan.metatile_count,
        {lv: len(m) for lv, m in plan.levels.items()},
    )
    top = max(project.levels + changes.dropped_levels)
    check_cache(project, plan)  # before the journal: a bad cache changes nothing
    ctx.journal(boxes)
    stats = RunStats()
    if scope.partial:
        return _partial(ctx, layers, changes, plan, scope, engine)
    with ctx.stage("render_write"):
        blank = blank_fill(project, data_extent(layers))
        # The area the last build kept blank tiles over: the snapshot's extent.
        was = boxes_extent([snap.bounds for snap in changes.snapshot.values()])
        area = project.extent or was
        with open_project_store(project, max_level=top) as store:
            if plan.metatile_count:
                stats = _render(ctx, layers, plan, store, blank, engine)
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


def _read(project: Project, engine: Any) -> dict[str, LayerData]:
    """Every layer, with what proves its files unchanged next time: the local reader
    hashes each file before reading it; for an engine that reads elsewhere (Dask), the
    files are hashed here first and the proof kept when none was written meanwhile."""
    trust = project.config.update.trust_unchanged_files
    before = observe_layers(project) if trust else {}
    layers = engine.read_layers(project)
    for src in project.style.layers:
        data = layers.get(src.name)
        seen = before.get(src.name)
        if data is not None and data.inputs is None and seen and still_same(src, seen):
            data.inputs = seen
    return layers


def _render(
    ctx: RunContext,
    layers: dict[str, LayerData],
    plan: TilePlan,
    store: TileStore,
    blank: BlankFill | None,
    engine: Any,
) -> RunStats:
    """Render ``plan`` into ``store`` with the run's engine, comparing with the stored
    tiles (unchanged ones are not rewritten) and keeping the replaced ones (``before``)."""
    from tiledelta.render.pool import run_project_plan  # Mapnik: only when there is work

    return run_project_plan(
        ctx.project,
        layers,
        plan,
        store,
        compare=True,
        progress=ctx.progress,
        before=ctx.before,
        blank=blank,
        executor=engine.executor(ctx.project, layers),
        chunk=engine.chunk,
    )


def plan_update(
    project: Project, changes: Changes, layers: dict[str, LayerData], scope: Scope | None = None
) -> TilePlan:
    """The meta-tiles an update re-renders (no rebuild): the exact dirty set, limited to
    ``scope``; ``--dry-run`` and ``plan`` print this same plan."""
    plan = update_plan(project, changes, layers)
    if scope is not None and scope.partial:
        plan = restrict_plan(plan, project.scheme, levels=scope.levels, area=scope.area)
    return plan


def _partial(
    ctx: RunContext,
    layers: dict[str, LayerData],
    changes: Changes,
    plan: TilePlan,
    scope: Scope,
    engine: Any,
) -> BuildOutcome:
    """The dirty meta-tiles of ``scope`` only: no blank reconciling, no dropped level, no
    metadata (the next full update does them, from the same journal and snapshot)."""
    from tiledelta.render.pool import blank_fill

    project = ctx.project
    stats = RunStats()
    with ctx.stage("render_write"), open_project_store(project) as store:
        if plan.metatile_count:
            blank = blank_fill(project, data_extent(layers))
            stats = _render(ctx, layers, plan, store, blank, engine)
    levels = [lv for lv in project.levels if scope.levels is None or lv in scope.levels]
    return BuildOutcome(
        kind="update",
        layers=layers,
        levels=levels,
        stats=stats,
        changes=changes,
        changed_tiles=stats.changed,
        level_info={lv: {"tiles": stats.planned.get(lv, 0)} for lv in levels},
        extra={"partial": scope.as_json()},
        partial=True,
    )
