"""``tiledelta watch``: polls, decisions, windows, failures and the tile-rate throttle.

Real sample county data edited with pyogrio between polls (the fake ``sleep`` does
the edits); no mocks of tiledelta itself.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import shapely.affinity
from conftest import set_processes

from tiledelta.api import init_project, load_project, seed
from tiledelta.change import detect_changes
from tiledelta.config import NotifyConfig, WebhookConfig
from tiledelta.errors import ConfigError
from tiledelta.ops import watch as W
from tiledelta.project import Project
from tiledelta.sample import _read, _write

NOON = dt.datetime(2026, 3, 2, 12, 0)
NIGHT = dt.datetime(2026, 3, 2, 23, 30)


@pytest.fixture
def county(sample_template: Path, tmp_path: Path) -> Path:
    """The sample county at levels 13-16, one render process, seeded."""
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="13-16", force=True)
    set_processes(root, 1)
    seed(load_project(root))
    return root


def move_building(root: Path, dx: float = 30.0) -> None:
    gpkg = root / "data" / "county.gpkg"
    geoms, f = _read(gpkg, "buildings")
    geoms[5] = shapely.affinity.translate(geoms[5], dx, 0)
    _write(gpkg, "buildings", geoms, f, "Polygon")


def edit_unused_attribute(root: Path) -> None:
    """year_built is not used by the style: the file changes, no tile can."""
    gpkg = root / "data" / "county.gpkg"
    geoms, f = _read(gpkg, "buildings")
    f["year_built"][3] = int(f["year_built"][3]) + 1
    _write(gpkg, "buildings", geoms, f, "Polygon")


class Script:
    """A fake ``sleep`` that runs one action per call, then stops the watcher (Ctrl-C)."""

    def __init__(self, *actions) -> None:
        self.actions = list(actions)
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if not self.actions:
            raise KeyboardInterrupt
        action = self.actions.pop(0)
        if action:
            action()


def run_watch(root: Path, script: Script, **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    kw.setdefault("now", lambda: NOON)
    result = W.watch(root, every=0.01, say=lines.append, sleep=script, **kw)
    return result, lines


def decisions(lines: list[str]) -> list[str]:
    """The poll decisions, without the timestamps and the start/stop lines."""
    out = []
    for line in lines:
        text = line.split(" ", 2)[2]
        if text.startswith(("watching ", "stopped", "stopping", "changes:")):
            continue
        out.append(text)
    return out


# --- durations and windows -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("90", 90),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("2 min", 120),
        (45, 45),
    ],
)
def test_parse_every(text, seconds) -> None:
    assert W.parse_every(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "m", "0s", "-5m", "1h-2m"])
def test_parse_every_rejects(text) -> None:
    with pytest.raises(ConfigError, match="--every"):
        W.parse_every(text)


def test_bad_window_is_one_config_error(county: Path) -> None:
    with pytest.raises(ConfigError, match="--window '25:00-06:00': use HH:MM-HH:MM"):
        W.watch(county, every=1, window="25:00-06:00", sleep=Script())


def test_a_folder_without_a_project_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no project file"):
        W.watch(tmp_path, every=1, sleep=Script())


# --- polling -------------------------------------------------------------------------------


def test_updates_run_exactly_when_data_changed(county: Path) -> None:
    script = Script(
        lambda: move_building(county),  # -> update
        None,  # -> nothing
        lambda: edit_unused_attribute(county),  # file changed, no tile can -> nothing
        lambda: move_building(county, -30),  # -> update
    )
    result, lines = run_watch(county, script)
    got = decisions(lines)
    assert [g.split(":")[0].split(" (")[0] for g in got] == [
        "no change in the data",
        "updated",
        "no change in the data",
        "no change in the data",
        "updated",
    ], lines
    assert result["runs"] == 2 and result["polls"] == 5
    assert lines[-1].endswith("stopped (Ctrl-C)")
    changed = [x for x in lines if " changes: " in x]
    assert len(changed) == 2 and all(
        "changes: buildings 1 " in x and x.endswith("; updating (local)") for x in changed
    ), changed
    assert " tiles rendered: " in got[1] and " written, " in got[1] and "tiles/s" in got[1]
    assert not detect_changes(load_project(county)).any
    assert script.calls == [0.01] * 5


def test_untouched_files_skip_detection(county: Path, monkeypatch) -> None:
    monkeypatch.setattr(W, "SETTLE_SECONDS", 0.0)
    script = Script(None, None, lambda: move_building(county), None)
    result, lines = run_watch(county, script)
    assert decisions(lines) == [
        "no change in the data",
        "no change (source files untouched)",
        "no change (source files untouched)",
        decisions(lines)[3],
        "no change (source files untouched)",
    ]
    assert decisions(lines)[3].startswith("updated:")
    assert result["decisions"] == {"no-change": 1, "untouched": 3, "updated": 1}


def test_recent_files_are_not_trusted_for_skipping(county: Path, monkeypatch) -> None:
    monkeypatch.setattr(W, "SETTLE_SECONDS", 3600.0)
    _result, lines = run_watch(county, Script(None), max_polls=2)
    assert decisions(lines) == ["no change in the data"] * 2


def test_max_runs_stops_the_watcher(county: Path) -> None:
    result, lines = run_watch(
        county, Script(lambda: move_building(county), lambda: move_building(county)), max_runs=1
    )
    # The first check finds the data current: --max-runs counts it, so the watcher ends.
    assert result["runs"] == 0 and result["polls"] == 1 and result["checks"] == 1
    assert lines[-1].endswith("stopping after 1 run(s) (0 updated the cache)")
    move_building(county)
    result, lines = run_watch(county, Script(), max_runs=1)
    assert result["runs"] == 1 and result["polls"] == 1
    assert lines[-1].endswith("stopping after 1 run(s) (1 updated the cache)")


def test_outside_the_window_nothing_runs(county: Path) -> None:
    clock = {"now": NOON}
    script = Script(lambda: move_building(county), None)
    _r, lines = run_watch(county, script, window="22:00-06:00", now=lambda: clock["now"])
    got = decisions(lines)
    assert len(got) == 3 and all(g.startswith("outside the window 22:00-06:00") for g in got[1:])
    assert detect_changes(load_project(county)).any  # the change is still waiting
    # Night falls (the window wraps past midnight): the waiting change is applied.
    clock["now"] = NIGHT
    result, lines = run_watch(county, Script(), window="22:00-06:00", now=lambda: clock["now"])
    assert decisions(lines)[0].startswith("updated:") and result["runs"] == 1
    clock["now"] = dt.datetime(2026, 3, 3, 5, 59)
    assert W.Watcher(county, window="22:00-06:00", now=lambda: clock["now"]).poll().kind in (
        "no-change",
        "untouched",
    )


def test_failures_are_reported_and_the_watcher_goes_on(county: Path) -> None:
    style = county / "style.xml"
    good_style = style.read_text()
    conf = county / "cache" / "conf.xml"
    good_conf = conf.read_text()
    other_conf = good_conf.replace("<TileCols>256</TileCols>", "<TileCols>512</TileCols>")
    assert other_conf != good_conf

    def break_style() -> None:
        style.write_text("<Map><Layer", encoding="utf-8")

    def fix_style_break_cache() -> None:
        style.write_text(good_style, encoding="utf-8")
        move_building(county)
        conf.write_text(other_conf, encoding="utf-8")

    def fix_cache() -> None:
        conf.write_text(good_conf, encoding="utf-8")

    notified: list[str] = []
    script = Script(break_style, None, fix_style_break_cache, fix_cache)
    result, lines = run_watch(
        county, script, on_failure=lambda _d, msg: notified.append(msg), max_polls=5
    )
    got = decisions(lines)
    assert got[0] == "no change in the data"
    assert got[1].startswith("check failed: ") and "style.xml" in got[1] and "XML" in got[1]
    assert got[2] == got[1]  # reported again, notified once
    assert got[3].startswith("update failed: ")
    assert got[4].startswith("updated:"), lines
    assert notified == [got[1], got[3]]
    assert result["runs"] == 2 and result["decisions"]["failed"] == 3
    assert all("\n" not in x for x in lines)
    assert not detect_changes(load_project(county)).any


def test_max_workers_maps_onto_render_processes(county: Path) -> None:
    w = W.Watcher(county, max_workers=3)
    assert w.load().config.render.processes == 3
    assert load_project(county).config.render.processes == 1  # the file is left alone


@pytest.fixture
def webhook():
    """A local JSON webhook receiver: (url, posts)."""
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posts
    finally:
        server.shutdown()
        server.server_close()


def test_notifications_go_out_once_per_distinct_failure(county: Path, webhook) -> None:
    url, posts = webhook
    p = Project.load(county)
    p = p.updated(notify=NotifyConfig(on="always", webhook=WebhookConfig(url=url, kind="json")))
    p.save()
    style = county / "style.xml"
    good = style.read_text()

    def fix_and_edit() -> None:
        style.write_text(good, encoding="utf-8")
        move_building(county)

    script = Script(
        lambda: move_building(county),  # -> updated: a success message
        lambda: style.write_text("<Map", encoding="utf-8"),  # -> failed: a failure message
        None,  # -> the same failure: logged, no second message
        fix_and_edit,  # -> updated
    )
    result, lines = run_watch(county, script)
    assert result["decisions"] == {"no-change": 1, "updated": 2, "failed": 2}, lines
    assert [m["ok"] for m in posts] == [True, False, True]
    assert posts[0]["summary"]["tiles_written"] > 0
    assert posts[1]["summary"]["kind"] == "watch" and "style.xml" in posts[1]["summary"]["error"]
    assert posts[1]["title"].endswith("watch failed")


# --- throttle ------------------------------------------------------------------------------


def test_throttle_arithmetic() -> None:
    t = {"now": 100.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        t["now"] += s

    th = W.Throttle(10, clock=lambda: t["now"], sleep=sleep)
    th.wait(5)  # the first chunk waits its own share
    assert slept == [pytest.approx(0.5)]
    t["now"] += 2.0  # slow work: no sleep needed
    th.wait(10)
    assert len(slept) == 1
    th.wait(20)  # 35 tiles need 3.5 s since the start; 2.5 s have passed
    assert slept[-1] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        W.Throttle(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_throttle_keeps_a_real_job_under_the_rate(county: Path, workers: int) -> None:
    rate = 100.0
    move_building(county)
    w = W.Watcher(county, max_tiles_per_second=rate, max_workers=workers, say=lambda _m: None)
    t0 = time.monotonic()
    d = w.poll()
    elapsed = time.monotonic() - t0
    assert d.kind == "updated", d.line
    tiles = d.result["tiles_rendered"]
    assert tiles >= 50
    assert tiles / elapsed <= rate * 1.1
    assert tiles / d.result["watch_seconds"] <= rate * 1.1
    assert elapsed >= 0.8 * tiles / rate  # it did slow down (unthrottled: ~500 tiles/s)
    assert not detect_changes(load_project(county)).any
