"""Change-driven updates: diff against the snapshot, plan the dirty meta-tiles, render them.

Crash safety: before any tile is written, the dirty boxes of the run are
saved in the state database (the journal). The snapshot advances, and the
journal is cleared, in one transaction after every planned tile is in the
cache. A run that dies leaves the old snapshot and the journal, so the next
run re-plans the same tiles (plus whatever changed since) and finishes the job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

import numpy as np

from tiledelta.errors import LockedError
from tiledelta.plan import TilePlan, plan_for_boxes
from tiledelta.project import Project
from tiledelta.runlog import BeforeTiles, write_run
from tiledelta.runner import RunStats, blank_fill, fill_blanks, run_project_plan
from tiledelta.seed import full_plan, read_layers, seed, summary
from tiledelta.snapshot import (
    LayerChange,
    build_signature,
    connect,
    diff_layer,
    load_snapshot,
    record_build,
)
from tiledelta.sources import LayerData

log = logging.getLogger(__name__)


@dataclass
class Changes:
    """What changed since the last build, and what that means for the cache."""

    layers: dict[str, LayerChange] = field(default_factory=dict)
    rebuild: str | None = None  # why everything must be rebuilt, if it must
    new_levels: list[int] = field(default_factory=list)
    dropped_levels: list[int] = field(default_factory=list)
    journal: dict[str, np.ndarray] = field(default_factory=dict)  # boxes of an unfinished run

    @property
    def any(self) -> bool:
        return bool(
            self.rebuild
            or self.new_levels
            or self.dropped_levels
            or any(c.changed for c in self.layers.values())
            or any(len(b) for b in self.journal.values())
        )

    def as_dict(self) -> dict:
        return {
            "layers": {k: v.as_dict() for k, v in self.layers.items()},
            "rebuild": self.rebuild,
            "new_levels": self.new_levels,
            "dropped_levels": self.dropped_levels,
            "unfinished_run": bool(self.journal),
        }

    def boxes(self) -> dict[str, np.ndarray]:
        """Dirty boxes per layer (old and new places, plus an unfinished run's)."""
        out = {}
        for name in set(self.layers) | set(self.journal):
            parts = [self.layers[name].boxes] if name in self.layers else []
            if name in self.journal:
                parts.append(self.journal[name])
            out[name] = np.concatenate([np.asarray(p).reshape(-1, 4) for p in parts])
        return out


# --- lock & journal ------------------------------------------------------------------------


@contextmanager
def project_lock(project: Project) -> Iterator[None]:
    """Hold the project's run lock; :class:`LockedError` when another run has it."""
    project.state_dir.mkdir(parents=True, exist_ok=True)
    path = project.state_dir / "run.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the run
    try:
        try:
            _lock_file(fh)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            raise LockedError(
                f"{project.root}: another tiledelta run ({who}) is working on this project; "
                "wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def _lock_file(fh) -> None:
    if os.name == "nt":  # pragma: no cover - Windows (ArcGIS Pro)
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_journal(project: Project, target: str = "local") -> dict[str, np.ndarray]:
    with closing(connect(project, target)) as con:
        row = con.execute("SELECT value FROM meta WHERE key='journal'").fetchone()
    if not row:
        return {}
    data = json.loads(row[0])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in data.items()}


def _write_journal(project: Project, boxes: dict[str, np.ndarray], target: str = "local") -> None:
    data = {k: np.asarray(v).reshape(-1, 4).tolist() for k, v in boxes.items() if len(v)}
    with closing(connect(project, target)) as con, con:
        con.execute("INSERT OR REPLACE INTO meta VALUES ('journal', ?)", (json.dumps(data),))


# --- detection & planning ------------------------------------------------------------------


def detect_changes(
    project: Project, layers: dict[str, LayerData] | None = None, *, target: str = "local"
) -> Changes:
    """Compare the current data (and configuration) with the last build's snapshot.

    ``target`` names whose snapshot: the local cache, or a server ("arcgis").
    """
    snap = load_snapshot(project, target)
    if snap is None:
        return Changes(rebuild="no build yet")
    levels = project.levels
    sig = build_signature(project, levels)
    old = snap.signature
    ch = Changes(journal=_read_journal(project, target))
    if target == "local" and not project.cache_path.exists():
        ch.rebuild = f"the cache {project.cache_path} is missing"
        return ch
    for key, what in (
        ("style", "the style file changed"),
        ("scheme", "the tiling scheme changed"),
        ("render", "render settings (meta-tile, buffer, format) changed"),
        ("extent", "the configured extent changed"),
    ):
        if old.get(key) != sig[key]:
            ch.rebuild = what
            return ch
    ch.new_levels = sorted(set(levels) - set(old.get("levels", [])))
    ch.dropped_levels = sorted(set(old.get("levels", [])) - set(levels))
    layers = layers if layers is not None else read_layers(project)
    for name, data in layers.items():
        # Match by key only when both snapshots hold the same kind of key.
        keyed = (
            data.keyed
            and old.get("keyed", {}).get(name, False)
            and old.get("keys", {}).get(name) == sig["keys"][name]
        )
        ch.layers[name] = diff_layer(snap.layers.get(name), data, keyed)
    return ch


def plan_update(project: Project, changes: Changes, layers: dict[str, LayerData]) -> TilePlan:
    """Meta-tiles to re-render: dirty boxes on existing levels, everything on new levels."""
    s = project.settings
    levels = project.levels
    old_levels = [lv for lv in levels if lv not in changes.new_levels]
    plan = plan_for_boxes(
        project.scheme,
        project.style,
        changes.boxes(),
        old_levels,
        s.metatile,
        s.buffer,
        extent=project.extent,
    )
    if changes.new_levels:
        plan.levels.update(full_plan(project, layers, changes.new_levels).levels)
    return plan


# --- update --------------------------------------------------------------------------------


def update(project: Project, *, progress: Callable[[int, int], None] | None = None) -> dict:
    """Bring the cache up to date with the data; return a summary (see the CLI's --json).

    Notifications (``[notify]``) go out on success or failure as configured.
    """
    from tiledelta.notify import notify_failure, notify_run

    try:
        result = _update(project, progress=progress)
    except Exception as exc:
        notify_failure(project, "update", exc)
        raise
    notify_run(project, result)
    return result


def _update(project: Project, *, progress: Callable[[int, int], None] | None = None) -> dict:
    t0 = time.perf_counter()
    with project_lock(project):
        layers = read_layers(project)
        changes = detect_changes(project, layers)
        t_detect = time.perf_counter()
        if changes.rebuild:
            result = seed(project, progress=progress, layers=layers, locked=True)
            result["rebuild"] = changes.rebuild
            result["changes"] = changes.as_dict()
            return result
        plan = plan_update(project, changes, layers)
        t_plan = time.perf_counter()
        for name, c in changes.layers.items():
            log.info("%s: %s", name, c.as_dict())
        log.info(
            "plan: %d meta-tiles (%s)",
            plan.metatile_count,
            {lv: len(m) for lv, m in plan.levels.items()},
        )
        _write_journal(project, changes.boxes())
        stats = RunStats()
        keep_before = BeforeTiles(project)
        blank = blank_fill(project)
        top = max(project.levels + changes.dropped_levels)
        with project.open_store(max_level=top) as store:
            if plan.metatile_count:
                stats = run_project_plan(
                    project,
                    layers,
                    plan,
                    store,
                    compare=True,
                    progress=progress,
                    before=keep_before,
                    blank=blank,
                )
            if blank is not None and changes.new_levels:
                stats.tiles_blank_stored = fill_blanks(store, blank, changes.new_levels)
            for level in changes.dropped_levels:
                gone = [(lv, r, c, None) for lv, r, c in store.iter_tiles(level)]
                if gone:
                    store.put_many(gone)
                    stats.tiles_removed += len(gone)
                    stats.changed.extend(a[:3] for a in gone)
        if top > max(project.levels):
            project.open_store().close()  # conf.xml lists the configured levels again
        t_render = time.perf_counter()
        result = summary(
            project,
            stats,
            project.levels,
            time.perf_counter() - t0,
            stages={
                "detect": t_detect - t0,
                "plan": t_plan - t_detect,
                "render_write": t_render - t_plan,
            },
        )
        result["levels"] = {str(lv): {"tiles": stats.planned.get(lv, 0)} for lv in project.levels}
        result["changes"] = changes.as_dict()
        run_id = record_build(
            project,
            layers,
            project.levels,
            kind="update",
            summary=result,
            clear_journal=True,
            changed_tiles=stats.changed,
        )
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["run"] = run_id
        folder = write_run(
            project, run_id, result, changes=changes, layers=layers, tiles=stats.changed
        )
        result["run_folder"] = str(folder)
        keep_before.move_to(folder)
        result["before_tiles_complete"] = keep_before.complete
        from tiledelta.report import try_write_report

        try_write_report(project, folder, layers=layers)
        return result
