"""``tiledelta watch``: poll the sources and update the cache when the data changed.

Each poll reloads the project (so edits to ``tiledelta.toml`` and the style are
seen), skips detection when no source file changed since the cache was last known
to be current (a cheap ``stat`` of every file the tiles depend on), otherwise runs
:func:`tiledelta.change.detect_changes`, and runs an update when something changed
and the clock is inside the window. Every decision is one log line. A failed check
or run is reported (through ``[notify]``, once per distinct error) and the watcher
goes on; Ctrl-C stops it between or during runs (an interrupted update is finished
by the next one, see :mod:`tiledelta.build.update`).

A long-running watcher is safe with Mapnik: datasources are in-memory and built per
run, and the render workers are fresh processes per run, so Mapnik's per-process
shapefile cache never serves stale data.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tiledelta.api import load_project, update
from tiledelta.change import Changes, detect_changes
from tiledelta.config import in_window, parse_window
from tiledelta.errors import Interrupted, LockedError, TileDeltaError, UsageError
from tiledelta.project import PROJECT_FILE, Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.render import Throttle
from tiledelta.runs.notify import notify
from tiledelta.runs.report import counts_line

#: A signature taken less than this many seconds after a file's last change is not
#: trusted for skipping detection (an edit in the same timestamp tick could hide).
SETTLE_SECONDS = 2.0

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|sec|min|s|m|h|d)?", re.IGNORECASE)


def parse_every(text: str | float | int) -> float:
    """Seconds in a duration: ``"30s"``, ``"10m"``, ``"1h"``, ``"1h30m"``, ``"90"`` (seconds)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().lower()
        pos, seconds = 0, 0.0
        while pos < len(s):
            m = _PART.match(s, pos)
            if not m:
                pos = -1
                break
            seconds += float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
            pos = m.end()
            while pos < len(s) and s[pos] == " ":
                pos += 1
        if pos != len(s) or not s:
            raise UsageError(f"--every {text!r}: use a duration such as 30s, 10m, 1h or 1h30m")
    if not seconds > 0:
        raise UsageError(f"--every {text!r}: the interval must be longer than zero")
    return seconds


def check_window(window: str | None) -> str | None:
    """``window`` if it is a valid "HH:MM-HH:MM"; :class:`UsageError` otherwise."""
    if not window:
        return None
    try:
        parse_window(window)
    except ValueError:
        raise UsageError(
            f"--window {window!r}: use HH:MM-HH:MM, e.g. 22:00-06:00 (may wrap past midnight)"
        ) from None
    return window


# --- cheap pre-check -----------------------------------------------------------------------


def _dir_stat(path: Path) -> tuple[int, int, int]:
    newest = size = count = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            newest = max(newest, st.st_mtime_ns)
            size += st.st_size
            count += 1
    return newest, size, count


def _file_group(path: Path) -> list[Path]:
    """A dataset file and the files that go with it (shapefile sidecars, SQLite WAL)."""
    out = [path]
    if path.suffix.lower() == ".shp" and path.parent.is_dir():
        stem = path.stem.lower()
        out += sorted(p for p in path.parent.iterdir() if p != path and p.stem.lower() == stem)
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        out.append(wal)
    return out


def input_files(project: Project) -> list[Path] | None:
    """Every file whose change can change the tiles, or None when a source is not a file
    (PostGIS and other connection strings: the pre-check cannot see those)."""
    files = [project.root / PROJECT_FILE, project.style_file]
    scheme = project.resolve(project.config.scheme)
    if project.config.scheme.lower().replace("_", "-") not in ("web-mercator", "webmercator"):
        files.append(scheme)
    for src in project.style.layers:
        if src.kind == "postgis" or src.path.startswith("PG:"):
            return None
        files += _file_group(Path(src.path))
    return list(dict.fromkeys(files))  # without repeats, in order


@dataclass(frozen=True)
class InputSignature:
    """Stats of the input files; equal signatures mean the inputs were not touched."""

    entries: tuple
    newest: float  # newest mtime (epoch seconds)

    def settled(self, wall: float | None = None) -> bool:
        return (wall if wall is not None else time.time()) - self.newest >= SETTLE_SECONDS


def input_signature(project: Project, target: str = "local") -> InputSignature | None:
    files = input_files(project)
    if files is None:
        return None
    entries: list[tuple] = []
    newest = 0
    for p in files:
        try:
            if p.is_dir():
                m, size, count = _dir_stat(p)
                entries.append((str(p), "dir", m, size, count))
            else:
                st = p.stat()
                m = st.st_mtime_ns
                entries.append((str(p), m, st.st_size))
        except OSError:
            entries.append((str(p), None))
            continue
        newest = max(newest, m)
    if target == "local":
        entries.append(("cache", project.cache_path.exists()))
    entries.append(("target", target))
    return InputSignature(tuple(entries), newest / 1e9)


# --- the watcher ---------------------------------------------------------------------------


@dataclass
class Decision:
    kind: str  # outside-window | untouched | no-change | updated | failed | locked
    line: str
    result: dict | None = None
    ran: bool = False  # an update was attempted (it succeeded or failed)
    error: BaseException | None = None


@dataclass
class Watcher:
    """The state between polls; :meth:`poll` makes one decision."""

    project_dir: Path
    window: str | None = None
    target: str = "local"
    max_workers: int | None = None
    max_tiles_per_second: float | None = None
    now: Callable[[], dt.datetime] = dt.datetime.now
    on_failure: Callable[[Path, str], None] | None = None
    say: Callable[[str], None] = print
    clean: InputSignature | None = None  # inputs when the cache was last known current
    last_failure: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def load(self) -> Project:
        """The project as it is now, with the watcher's render limits applied."""
        project = load_project(self.project_dir)
        render: dict = {}
        if self.max_workers is not None:
            render["processes"] = self.max_workers
        if self.max_tiles_per_second:
            render["max_tiles_per_second"] = self.max_tiles_per_second  # paces the task feed
        return project.updated(render=render) if render else project

    def window_for(self, project: Project) -> str | None:
        if self.window is not None:
            return self.window
        if self.target == "arcgis" and project.config.arcgis is not None:
            return project.config.arcgis.quiet_hours
        return None

    def poll(self) -> Decision:
        d = self._decide()
        self.counts[d.kind] = self.counts.get(d.kind, 0) + 1
        if d.kind == "failed":
            if d.line != self.last_failure:  # the same error again: logged, not re-sent
                self._notify_failure(d)
            self.last_failure = d.line
        elif d.kind in ("updated", "no-change", "untouched"):
            self.last_failure = None
        return d

    def _decide(self) -> Decision:
        try:
            project = self.load()
            sig = input_signature(project, self.target)
            window = self.window_for(project)
            inside = in_window(window, self.now().time())
        except TileDeltaError as exc:
            return Decision("failed", f"check failed: {_one_line(exc)}", error=exc)
        except Exception as exc:  # an unexpected error must not end the watcher
            return Decision(
                "failed", f"check failed: {type(exc).__name__}: {_one_line(exc)}", error=exc
            )
        if not inside:
            touched = (
                "unknown"
                if sig is None or self.clean is None
                else ("yes" if sig != self.clean else "no")
            )
            return Decision(
                "outside-window",
                f"outside the window {window}: not checking (files changed since the last "
                f"sync: {touched})",
            )
        if sig is not None and sig == self.clean:
            return Decision("untouched", "no change (source files untouched)")
        try:
            changes = detect_changes(project, target=self.target)
        except TileDeltaError as exc:
            return Decision("failed", f"check failed: {_one_line(exc)}", error=exc)
        except Exception as exc:
            return Decision(
                "failed", f"check failed: {type(exc).__name__}: {_one_line(exc)}", error=exc
            )
        if not changes.any:
            self.clean = sig if sig is not None and sig.settled() else None
            return Decision("no-change", "no change in the data")
        self.say(self._stamp(f"changes: {describe(changes)}; updating ({self.target})"))
        try:
            result = self._run(project)
        except Interrupted as exc:  # Ctrl-C or SIGTERM during the run: the watcher stops
            raise KeyboardInterrupt from exc
        except LockedError as exc:
            return Decision("locked", f"skipped: {_one_line(exc)}")
        except TileDeltaError as exc:
            return Decision("failed", f"update failed: {_one_line(exc)}", ran=True, error=exc)
        except Exception as exc:
            msg = f"update failed: {type(exc).__name__}: {_one_line(exc)}"
            return Decision("failed", msg, ran=True, error=exc)
        # Inputs as they were before detection: edits made during the run are seen next time.
        self.clean = sig if sig is not None and sig.settled() else None
        return Decision("updated", self._describe_result(result), result, ran=True)

    def _run(self, project: Project) -> dict:
        # The watcher sends the notifications itself (failures once per distinct error),
        # so the run sends none of its own.
        result = self._run_target(project)
        if project.config.notify is not None:
            folder = result.get("run_folder")
            notify(project, result, ok=True, folder=Path(folder) if folder else None)
        return result

    def _run_target(self, project: Project) -> dict:
        if self.target == "arcgis":
            say = lambda m: self.say(self._stamp(f"  {m}"))  # noqa: E731
            return update_server(project, say=say, notify=False)
        t0 = time.monotonic()
        result = update(project, notify=False)
        result["watch_seconds"] = round(time.monotonic() - t0, 3)
        return result

    def _describe_result(self, r: dict) -> str:
        if self.target == "arcgis":
            return f"server cache updated: {len(r.get('jobs', []))} job(s) succeeded"
        secs = r.get("watch_seconds") or r.get("seconds") or 0.0
        rate = f", {r['tiles_rendered'] / secs:,.0f} tiles/s" if secs else ""
        head = f"rebuilt ({r['rebuild']})" if r.get("rebuild") else "updated"
        return f"{head}: {counts_line(r)}; in {secs:.1f} s{rate}"

    def _notify_failure(self, d: Decision) -> None:
        """Tell ``on_failure``, or the project's ``[notify]`` channels (never raises)."""
        try:
            if self.on_failure is not None:
                self.on_failure(self.project_dir, d.line)
                return
            project = Project.load(self.project_dir)  # [notify] needs only the TOML
            if project.config.notify is None:
                return
            kind = "update" if d.ran else "watch"
            summary = {"kind": kind, "error": d.line.split(": ", 1)[1]}
            notify(project, summary, ok=False, folder=None)
        except Exception as exc:  # a broken notifier must not stop the watcher
            self.say(self._stamp(f"notification failed: {_one_line(exc)}"))

    def _stamp(self, line: str) -> str:
        return f"{self.now():%Y-%m-%d %H:%M:%S} {line}"


def describe(changes: Changes) -> str:
    """One line for a :class:`~tiledelta.change.Changes`."""
    d = changes.as_dict()
    if d["rebuild"]:
        return f"full rebuild needed ({d['rebuild']})"
    parts = []
    for name, c in d["layers"].items():
        bits = [f"{c[k]} {k}" for k in ("added", "modified", "deleted", "reordered") if c.get(k)]
        if bits:
            parts.append(f"{name} {', '.join(bits)}")
    if d["new_levels"]:
        parts.append(f"new levels {d['new_levels']}")
    if d["dropped_levels"]:
        parts.append(f"dropped levels {d['dropped_levels']}")
    if d["unfinished_run"]:
        parts.append("an unfinished run")
    return "; ".join(parts) or "changes"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def watch(
    project_dir: Path | str,
    *,
    every: float,
    window: str | None = None,
    max_runs: int | None = None,
    target: str = "local",
    max_workers: int | None = None,
    max_tiles_per_second: float | None = None,
    max_polls: int | None = None,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], dt.datetime] = dt.datetime.now,
    on_failure: Callable[[Path, str], None] | None = None,
) -> dict:
    """Poll every ``every`` seconds and update when the data changed; return counts.

    Stops after ``max_runs`` runs (checks of the data inside the window, whether or not
    they updated the cache: ``max_runs=1`` is one check-and-update) or ``max_polls``
    polls, or on Ctrl-C or SIGTERM (``runs`` in the result counts the updates).
    ``window`` ("HH:MM-HH:MM", may wrap past midnight) limits when updates run; with
    ``target="arcgis"`` it defaults to ``[arcgis] quiet_hours``.
    """
    if not every > 0:
        raise UsageError("--every: the interval must be longer than zero")
    if target not in ("local", "arcgis"):
        raise UsageError(f"--target {target!r}: use local or arcgis")
    if max_workers is not None and max_workers < 1:
        raise UsageError(f"--max-workers {max_workers}: must be 1 or more")
    if max_tiles_per_second is not None:
        Throttle(max_tiles_per_second)  # validates
    Project.load(Path(project_dir))  # no tiledelta.toml: one error now, not one per poll
    w = Watcher(
        Path(project_dir),
        window=check_window(window),
        target=target,
        max_workers=max_workers,
        max_tiles_per_second=max_tiles_per_second,
        now=now,
        on_failure=on_failure,
        say=say,
    )
    limits = []
    if max_workers:
        limits.append(f"at most {max_workers} render process(es)")
    if max_tiles_per_second:
        limits.append(f"at most {max_tiles_per_second:g} tiles/s")
    say(
        w._stamp(
            f"watching {w.project_dir} every {_human(every)}"
            + (f", window {window}" if window else "")
            + f", target {target}"
            + (f", {', '.join(limits)}" if limits else "")
            + " (Ctrl-C stops)"
        )
    )
    polls = runs = checks = 0
    try:
        while True:
            d = w.poll()
            polls += 1
            say(w._stamp(d.line))
            runs += d.ran
            # A check that found the data current counts too: --max-runs 1 always ends.
            checks += d.kind != "outside-window"
            if max_runs is not None and checks >= max_runs:
                say(w._stamp(f"stopping after {checks} run(s) ({runs} updated the cache)"))
                break
            if max_polls is not None and polls >= max_polls:
                say(w._stamp(f"stopping after {polls} poll(s)"))
                break
            sleep(every)
    except KeyboardInterrupt:
        say(w._stamp("stopped (Ctrl-C)"))
    return {"polls": polls, "runs": runs, "checks": checks, "decisions": dict(w.counts)}


def _human(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
