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
import sqlite3
import time
from collections.abc import Callable

from tiledelta.build import BuildOutcome, RunContext
from tiledelta.build.context import Progress
from tiledelta.change import record_build, record_run
from tiledelta.errors import Interrupted, StateError, os_error
from tiledelta.project import Project, project_lock
from tiledelta.runs.folder import BeforeTiles, write_run
from tiledelta.runs.summary import LevelSummary, RunSummary, level_counts

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
    stages: dict[str, float] | None = None,
) -> RunSummary:
    """Run ``build`` through the whole lifecycle; return its summary.

    ``name`` names the run in failure messages (seed, update, arcgis). ``keep_before``
    keeps the tiles the build replaces for the viewer's before/after swipe.
    ``notify=False`` leaves notifications to the caller (``tiledelta watch``).
    ``stages`` are times paid before the run (the command line's ``startup``, ``imports``
    and ``load``): the summary's stages start with them; its ``seconds`` do not count them.
    """
    t0 = time.perf_counter()
    try:
        try:
            with project_lock(project):
                summary = _locked_run(
                    project, build, name, target, progress, say, keep_before, t0, stages
                )
        except OSError as exc:  # a full disk, a read-only folder: one line naming the file
            raise os_error(exc) from exc
        except sqlite3.Error as exc:  # a state file SQLite cannot write (full disk, ...)
            raise StateError(
                f"{project.state_dir}: SQLite failed writing the run's state ({exc}); the disk "
                "may be full or the folder read-only"
            ) from exc
    except Exception as exc:
        if notify and _notifies(project):
            from tiledelta.runs.notify import notify_failure

            notify_failure(project, name, exc)
        raise
    if notify and _notifies(project):
        from tiledelta.runs.notify import notify_run  # its HTTP client only when it sends

        t = time.perf_counter()
        notify_run(project, summary.as_json())
        # Sent after summary.json: it gets the time too (the message cannot hold its own).
        summary.stages["notify"] = round(time.perf_counter() - t, 3)
        if summary.run is not None:
            write_run(project, summary.run, summary.as_json(), target=target)
    return summary


def _notifies(project: Project) -> bool:
    """True when ``[notify]`` is set (else notifying costs nothing, not even its imports)."""
    return getattr(project.config, "notify", None) is not None


def _locked_run(
    project: Project,
    build: Build,
    name: str,
    target: str,
    progress: Progress | None,
    say: Callable[[str], None],
    keep_before: bool,
    t0: float,
    stages: dict[str, float] | None = None,
) -> RunSummary:
    before = BeforeTiles(project) if keep_before else None
    ctx = RunContext(project, target=target, progress=progress, say=say, before=before)
    ctx.stages.update(stages or {})
    try:
        outcome = build(ctx)
    except BaseException as exc:
        if before is not None:
            before.discard()
        if isinstance(exc, KeyboardInterrupt | Interrupted):
            raise _interrupted(project, ctx, name, target, t0) from None
        raise
    summary = summarise(project, outcome, ctx, time.perf_counter() - t0)
    if outcome.partial:
        # A run limited to some levels or an area: recorded, but the snapshot (and the
        # update journal) stay, so the next full update still does everything else.
        run_id = record_run(project, outcome.kind, "ok", summary.as_json(), target)
    else:
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
    with ctx.stage("record"):
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
        summary.stages = _stages(ctx.stages, outcome)
        summary.seconds = round(time.perf_counter() - t0, 3)
        write_run(project, run_id, summary.as_json(), target=target)
        from tiledelta.runs.report import try_write_report  # Pillow: only a run reports

        try_write_report(project, folder, layers=outcome.layers)
    # The report's own time is known only now: summary.json (and --json) get every stage.
    summary.stages = _stages(ctx.stages, outcome)
    summary.seconds = round(time.perf_counter() - t0, 3)
    write_run(project, run_id, summary.as_json(), target=target)
    return summary


def _interrupted(
    project: Project, ctx: RunContext, name: str, target: str, t0: float
) -> Interrupted:
    """Record a run stopped by SIGINT or SIGTERM (run folder and history, status
    "interrupted", where it stopped) and return the error to raise."""
    pos = dict(ctx.position)
    record = {
        "kind": name,
        "status": "interrupted",
        "target": target,
        "seconds": round(time.perf_counter() - t0, 3),
        "stages": _rounded(ctx.stages),
        "stopped_at": pos,
    }
    where = ""
    try:
        run_id = record_run(project, name, "interrupted", record, target)
        record["run"] = run_id
        folder = write_run(project, run_id, record, target=target)
        where = f"; run record {folder}"
    except Exception as exc:  # the stop is the news: a record that fails is logged
        log.warning("could not record the interrupted run: %s", exc)
    done, total = pos.get("metatiles_done"), pos.get("metatiles_total")
    at = f" at {done:,} of {total:,} meta-tiles" if total else ""
    again = "to resume" if name == "seed" else "to finish"
    command = name if name in ("seed", "update") else "update --target arcgis"
    return Interrupted(f"{name} interrupted{at}{where}; run 'tiledelta {command}' again {again}")


def summarise(
    project: Project, outcome: BuildOutcome, ctx: RunContext, seconds: float
) -> RunSummary:
    """The typed summary of a finished build."""
    st = outcome.stats
    level_info = outcome.level_info
    if level_info is None:
        level_info = {lv: {"tiles": st.levels.get(lv, 0)} for lv in outcome.levels}
    local = ctx.target == "local"
    if local:  # per level, the run's counts: the same figures in a seed and an update
        level_info = {lv: {**level_info.get(lv, {}), **level_counts(st, lv)} for lv in level_info}
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
        tiles_solid=st.tiles_solid,
        seconds=round(seconds, 3),
        stages=_stages(ctx.stages, outcome),
        changes=outcome.changes.as_dict() if outcome.changes is not None else None,
        rebuild=outcome.rebuild,
        **outcome.extra,
    )


def _rounded(stages: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stages.items()}


def _stages(stages: dict[str, float], outcome: BuildOutcome) -> dict[str, float]:
    """The run's stage times, a build's ``render_write`` split into ``render`` and ``write``
    (the writing process's time storing tiles, :attr:`~tiledelta.render.RunStats.write_seconds`)."""
    out: dict[str, float] = {}
    for name, secs in stages.items():
        if name == "render_write":
            write = min(outcome.stats.write_seconds, secs)
            out["render"] = secs - write
            out["write"] = write
        else:
            out[name] = secs
    return _rounded(out)
