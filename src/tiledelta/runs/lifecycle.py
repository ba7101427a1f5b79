"""The one life of every run: lock → build (which journals) → record → run folder →
report → notify.

Seed, update, the server-side update and watch all go through :func:`run`. The build
does the work (:mod:`tiledelta.build`); this module does everything around it, once:

1. take the project's run lock (a second run is refused, :class:`LockedError`);
2. run the build, which saves its dirty area to the journal before its first write;
3. advance the snapshot and clear the journal in one transaction (only now: a run that
   dies before leaves the old snapshot and the journal for the next run to finish);
4. write the run folder (``.tiledelta/runs/<id>/``, ``runs-<target>/`` for a server);
5. write the report (HTML and change map; a report that fails is logged, not raised);
6. notify per ``[notify]``, on success or failure (unless the caller notifies itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tiledelta.build import BuildOutcome, RunContext
from tiledelta.build.context import Progress
from tiledelta.change import record_build
from tiledelta.project import Project, project_lock
from tiledelta.runs.folder import BeforeTiles, write_run
from tiledelta.runs.notify import notify_failure, notify_run
from tiledelta.runs.report import try_write_report
from tiledelta.runs.summary import LevelSummary, RunSummary

log = logging.getLogger(__name__)

Build = Callable[[RunContext], BuildOutcome]


def run(
    project: Project,
    build: Build,
    *,
    name: str,
    target: str = "local",
    progress: Progress | None = None,
    say: Callable[[str], None] = log.info,
    notify: bool = True,
    keep_before: bool = False,
) -> RunSummary:
    """Run ``build`` through the whole lifecycle; return its summary.

    ``name`` names the run in failure messages (seed, update, arcgis). ``keep_before``
    keeps the tiles the build replaces for the viewer's before/after swipe.
    ``notify=False`` leaves notifications to the caller (``tiledelta watch``).
    """
    t0 = time.perf_counter()
    try:
        with project_lock(project):
            summary = _locked_run(project, build, target, progress, say, keep_before, t0)
    except Exception as exc:
        if notify:
            notify_failure(project, name, exc)
        raise
    if notify:
        notify_run(project, summary.as_json())
    return summary


def _locked_run(
    project: Project,
    build: Build,
    target: str,
    progress: Progress | None,
    say: Callable[[str], None],
    keep_before: bool,
    t0: float,
) -> RunSummary:
    before = BeforeTiles(project) if keep_before else None
    ctx = RunContext(project, target=target, progress=progress, say=say, before=before)
    try:
        outcome = build(ctx)
    except BaseException:
        if before is not None:
            before.discard()
        raise
    summary = summarise(project, outcome, ctx, time.perf_counter() - t0)
    with ctx.stage("record"):
        run_id = record_build(
            project,
            outcome.layers,
            outcome.levels,
            kind="seed" if outcome.kind == "rebuild" else outcome.kind,
            summary=summary.as_json(),
            clear_journal=True,
            changed_tiles=outcome.changed_tiles,
            target=target,
        )
    summary.run = run_id
    with ctx.stage("run_folder"):
        folder = write_run(
            project,
            run_id,
            summary.as_json(),
            changes=outcome.changes if outcome.kind != "rebuild" else None,
            layers=outcome.layers,
            tiles=outcome.changed_tiles,
            target=target,
        )
        summary.run_folder = str(folder)
        if before is not None:
            before.move_to(folder)
            summary.before_tiles_complete = before.complete
    with ctx.stage("report"):
        summary.stages = _rounded(ctx.stages)
        summary.seconds = round(time.perf_counter() - t0, 3)
        write_run(project, run_id, summary.as_json(), target=target)
        try_write_report(project, folder, layers=outcome.layers)
    return summary


def summarise(
    project: Project, outcome: BuildOutcome, ctx: RunContext, seconds: float
) -> RunSummary:
    """The typed summary of a finished build."""
    st = outcome.stats
    level_info = outcome.level_info
    if level_info is None:
        level_info = {lv: {"tiles": st.levels.get(lv, 0)} for lv in outcome.levels}
    local = ctx.target == "local"
    return RunSummary(
        kind=outcome.kind,
        target="local" if local else "arcgis",
        cache=str(project.cache_path) if local else None,
        cache_kind=project.config.cache.kind if local else None,
        levels={str(lv): LevelSummary(**info) for lv, info in level_info.items()},
        metatiles_rendered=st.metatiles,
        tiles_rendered=st.tiles_rendered,
        tiles_written=st.tiles_written,
        tiles_unchanged=st.tiles_unchanged,
        tiles_removed=st.tiles_removed,
        tiles_blank=st.tiles_blank,
        tiles_blank_stored=st.tiles_blank_stored,
        seconds=round(seconds, 3),
        stages=_rounded(ctx.stages),
        changes=outcome.changes.as_dict() if outcome.changes is not None else None,
        rebuild=outcome.rebuild,
        **outcome.extra,
    )


def _rounded(stages: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stages.items()}
