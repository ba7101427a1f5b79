"""One set of conventions across commands (issue 12): -v anywhere, --json errors, exit
codes, the same tile counts in every reader, and stage times that cover the run.

Every command runs as a real subprocess (``python -m tiledelta.cli``): exit codes, stdout
and stderr are what a shell sees. The oracles are independent of our code where they can
be: SQLite reads the MBTiles file, the bundle index is parsed from raw bytes here, the
report's HTML is parsed with the standard library.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tiledelta import api
from tiledelta.cli import main
from tiledelta.errors import (
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Busy,
    ConfigError,
    Interrupted,
    LockedError,
    PortInUse,
    TileDeltaError,
    UsageError,
    exit_code_of,
)
from tiledelta.project import Project

CLI = [sys.executable, "-m", "tiledelta.cli"]
LEVELS = "13-16"


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def built(sample_template, tmp_path_factory) -> Path:
    """The sample county seeded at levels 13-16 (one process); copy it before changing it."""
    root = tmp_path_factory.mktemp("conventions") / "county"
    shutil.copytree(sample_template, root)
    api.init_project(root, style=root / "style.xml", levels=LEVELS, force=True)
    Project.load(root).updated(render={"processes": 1}).save()
    api.seed(api.load_project(root), notify=False)
    return root


def copy_of(built: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "county"
    shutil.copytree(built, dst)
    return dst


# --- the exit-code table ------------------------------------------------------------------


def test_one_exit_code_table() -> None:
    assert exit_code_of(ConfigError("x")) == 1
    assert exit_code_of(TileDeltaError("x")) == 1
    assert exit_code_of(UsageError("x")) == EXIT_USAGE == 2
    assert exit_code_of(LockedError("x")) == exit_code_of(PortInUse("x")) == EXIT_BUSY == 3
    assert isinstance(LockedError("x"), Busy) and isinstance(PortInUse("x"), Busy)
    assert exit_code_of(Interrupted("x")) == exit_code_of(KeyboardInterrupt()) == 130
    assert exit_code_of(ValueError("x")) == 1
    assert LockedError("x").kind == "locked" and ConfigError("x").kind == "config"
    assert TileDeltaError("x", hint="do y").hint == "do y"


def _commands_with(param: str) -> list[str]:
    return sorted(
        name for name, cmd in main.commands.items() if any(p.name == param for p in cmd.params)
    )


# --- flags ----------------------------------------------------------------------------------


def test_verbose_before_or_after_the_command_and_vv_shows_more(built: Path) -> None:
    quiet = cli("status", "--project", str(built))
    before = cli("-v", "status", "--project", str(built))
    after = cli("status", "--project", str(built), "-v")
    debug = cli("status", "-vv", "--project", str(built))
    split = cli("-v", "status", "--project", str(built), "-v")  # counts add up: -vv
    for out in (quiet, before, after, debug, split):
        assert out.returncode == 0, out.stderr
        assert out.stdout == quiet.stdout  # logs never go to stdout
    assert "INFO tiledelta" not in quiet.stderr and "DEBUG" not in quiet.stderr
    for out in (before, after):
        assert "INFO tiledelta.sources: read buildings" in out.stderr
        assert "DEBUG" not in out.stderr
    for out in (debug, split):
        assert "DEBUG tiledelta.api: project " in out.stderr
        assert len(out.stderr.splitlines()) > len(before.stderr.splitlines())


# --- --json errors --------------------------------------------------------------------------


@pytest.mark.parametrize("command", _commands_with("as_json"))
def test_json_errors_are_one_object_on_stdout(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    args = [command, "--json"]
    if command == "demo":  # demo's argument is a folder to create: give it a file instead
        (tmp_path / "afile").write_text("x")
        args.append(str(tmp_path / "afile"))
    else:
        args += ["--project", str(missing)]
        if command == "package":
            args += ["--out", str(tmp_path / "p.tpkx")]
    out = cli(*args)
    assert out.returncode != 0, out
    obj = json.loads(out.stdout)  # the whole of stdout is one JSON object
    assert set(obj) >= {"error", "kind", "hint"}
    assert obj["exit_code"] == out.returncode
    assert "\n" not in obj["error"] and obj["error"]
    assert out.stderr.strip() == "" or "Traceback" not in out.stderr
    # a usage error with --json is JSON too, with exit code 2
    usage = cli(command, "--json", "--no-such-option")
    assert usage.returncode == 2
    obj = json.loads(usage.stdout)
    assert obj["kind"] == "usage" and "--no-such-option" in obj["error"]
    assert obj["hint"] == f"see 'tiledelta {command} --help'"


def test_global_json_flag(tmp_path: Path) -> None:
    out = cli("--json", "status", "--project", str(tmp_path / "nowhere"))
    assert out.returncode == 1
    assert json.loads(out.stdout)["kind"] == "config"


# --- exit codes: ok, error, usage -----------------------------------------------------------


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_usage_error_is_one_line_exit_2(command: str) -> None:
    out = cli(command, "--no-such-option")
    assert out.returncode == EXIT_USAGE
    line = one_line(out)
    assert line.startswith(f"tiledelta {command}: error: No such option")
    assert out.stdout == ""


@pytest.mark.parametrize("command", _commands_with("project_dir"))
def test_every_command_error_is_one_line_exit_1(command: str, tmp_path: Path) -> None:
    args = [command, "--project", str(tmp_path / "nowhere")]
    if command == "package":
        args += ["--out", str(tmp_path / "p.tpkx")]
    out = cli(*args)
    assert out.returncode == 1, out
    if command == "doctor":  # doctor reports on stdout, one line per check
        assert any(ln.startswith("FAIL  project: ") for ln in out.stdout.splitlines())
        assert "nowhere" in out.stdout and out.stderr == ""
        return
    line = one_line(out)
    assert line.startswith("tiledelta: error: ") and "nowhere" in line


def test_ok_exit_codes(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    p = str(root)
    for args in (
        ["status", "-p", p],
        ["info", "-p", p],
        ["plan", "-p", p],
        ["update", "-p", p],
        ["report", "-p", p],
        ["doctor", "-p", p],
        ["thumbnail", "-p", p, "--out", str(tmp_path / "t.png"), "--size", "60x40"],
        ["package", "-p", p, "--out", str(tmp_path / "p.tpkx")],
        ["watch", "-p", p, "--max-runs", "1", "--every", "1h"],
        ["init", str(tmp_path / "new"), "--style", str(root / "style.xml"), "--levels", "3-5"],
    ):
        out = cli(*args)
        assert out.returncode == 0, (args, out.stderr)


def test_path_usage_errors_are_one_line(built: Path, tmp_path: Path) -> None:
    afile = built / "tiledelta.toml"
    for args in (
        ["status", "--project", str(afile)],
        ["init", str(afile), "--style", "x.xml"],
        ["plan", "--project", str(built), "--aoi", str(tmp_path)],
    ):
        out = cli(*args)
        assert out.returncode == EXIT_USAGE, out
        line = one_line(out)
        assert "error: Invalid value for" in line and "--help" in line


# --- exit codes: locked, interrupted ----------------------------------------------------------

HOLD_LOCK = """
import sys, time
from tiledelta.project import Project, project_lock
with project_lock(Project.load(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_locked_project_exits_3(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for command in ("seed", "update"):
            out = cli(command, "--project", str(root))
            assert out.returncode == EXIT_BUSY, out
            assert "lock" in one_line(out)
            js = cli(command, "--project", str(root), "--json")
            assert js.returncode == EXIT_BUSY
            assert json.loads(js.stdout)["kind"] == "locked"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_seed_exits_130(built: Path, tmp_path: Path, sig: signal.Signals) -> None:
    root = copy_of(built, tmp_path)
    # Paced to a few tiles a second, so the seed is surely running when the signal lands.
    Project.load(root).updated(render={"max_tiles_per_second": 4.0}).save()
    proc = subprocess.Popen(
        [*CLI, "-v", "seed", "--project", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it renders
            if "rendering" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "the seed ended before the signal"
        t0 = time.monotonic()
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tiledelta: error: "), err
    assert "interrupted" in lines[0]
    assert (root / "cache" / "conf.xml").is_file()  # the old cache still serves


# --- counts -------------------------------------------------------------------------------


def assert_identity(summary: dict) -> None:
    """rendered = written + unchanged + blank, in all and per level."""
    s = summary
    assert s["tiles_rendered"] == s["tiles_written"] + s["tiles_unchanged"] + s["tiles_blank"]
    per = s["levels"].values()
    for key in ("rendered", "written", "unchanged", "blank", "removed", "blank_stored"):
        assert sum(d[key] for d in per) == s[f"tiles_{key}"], key
    for d in per:
        assert d["rendered"] == d["written"] + d["unchanged"] + d["blank"] == d["tiles"]


def bundle_records(cache: Path) -> int:
    """Tile records in every bundle, read from the raw index (16384 uint64 after 64 bytes)."""
    n = 0
    for bundle in cache.glob("_alllayers/L*/*.bundle"):
        index = np.frombuffer(bundle.read_bytes()[64 : 64 + 131072], dtype="<u8")
        n += int(np.count_nonzero(index >> np.uint64(40)))
    return n


def test_seed_and_update_counts_add_up(built: Path, tmp_path: Path) -> None:
    from tiledelta.sample import apply_edits

    root = copy_of(built, tmp_path)
    seeded = json.loads(cli("seed", "--project", str(root), "--json").stdout)
    assert_identity(seeded)
    assert seeded["tiles_blank_stored"] > 0  # compact + opaque background: blank copies
    # a seed stores its written tiles and the blank copies
    assert bundle_records(root / "cache") == seeded["tiles_written"] + seeded["tiles_blank_stored"]
    apply_edits(root)
    out = cli("update", "--project", str(root), "--json")
    assert out.returncode == 0, out.stderr
    upd = json.loads(out.stdout)
    assert_identity(upd)
    assert upd["tiles_written"] > 0
    folder = Path(upd["run_folder"])
    tiles = json.loads((folder / "tiles.json").read_text())["levels"]
    changed = sum(len(v) for v in tiles.values())
    assert changed == upd["tiles_written"] + upd["tiles_blank_stored"] + upd["tiles_removed"]
    # the same figures in the CLI's text, the report's text and HTML, and summary.json
    assert (
        json.loads((folder / "summary.json").read_text())["tiles_written"] == upd["tiles_written"]
    )
    text = cli("report", "--project", str(root)).stdout
    assert (
        f"tiles: {upd['tiles_rendered']:,} rendered, {upd['tiles_written']:,} written, "
        f"{upd['tiles_unchanged']:,} unchanged, {upd['tiles_blank']:,} blank, "
        f"{upd['tiles_removed']:,} removed"
    ) in text
    cells = report_cells(folder / "report.html")
    assert cells["tiles rendered"] == f"{upd['tiles_rendered']:,}"
    assert cells["tiles written"] == f"{upd['tiles_written']:,}"
    assert cells["tiles blank"] == f"{upd['tiles_blank']:,}"
    # the viewer uses the same words for the same fields of summary.json
    js = (Path(api.__file__).parent / "serve" / "static" / "viewer.js").read_text()
    for field, word in (
        ("tiles_rendered", "rendered"),
        ("tiles_written", "written"),
        ("tiles_unchanged", "unchanged"),
        ("tiles_blank", "blank"),
        ("tiles_removed", "removed"),
    ):
        assert f'["{field}", "{word}"]' in js
    assert "re-rendered" not in js.lower()


def test_cli_update_line_uses_the_words(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    out = cli("update", "--project", str(root))
    line = out.stdout.strip().splitlines()[-1]
    m = re.match(
        r"updated: ([\d,]+) tiles rendered: ([\d,]+) written, ([\d,]+) unchanged, "
        r"([\d,]+) blank; ([\d,]+) removed",
        line,
    )
    assert m, line
    r, w, u, b, _rm = (int(x.replace(",", "")) for x in m.groups())
    assert r == w + u + b


def test_demo_summaries_add_up(tmp_path: Path) -> None:
    lines: list[str] = []
    result = api.run_demo(tmp_path / "demo", levels="10-14", say=lines.append, verify=False)
    for summary in (result["seed"], result["update"]):
        assert_identity(summary)
    upd = result["update"]
    line = next(x for x in lines if x.startswith("update: "))
    assert (
        f"{upd['tiles_rendered']:,} tiles rendered: {upd['tiles_written']:,} written, "
        f"{upd['tiles_unchanged']:,} unchanged, {upd['tiles_blank']:,} blank; "
        f"{upd['tiles_removed']:,} removed"
    ) in line


def test_mbtiles_counts_match_sqlite(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    Project.load(root).updated(cache={"kind": "mbtiles", "path": "cache.mbtiles"}).save()
    res = json.loads(cli("seed", "--project", str(root), "--json").stdout)
    assert_identity(res)
    with sqlite3.connect(root / "cache.mbtiles") as con:
        stored = con.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
    assert stored == res["tiles_written"] + res["tiles_blank_stored"]


# --- stage times --------------------------------------------------------------------------


def test_stage_times_cover_the_run(built: Path, tmp_path: Path) -> None:
    from tiledelta.sample import apply_edits

    root = copy_of(built, tmp_path)
    seeded = api.seed(api.load_project(root), notify=False)
    assert list(seeded["stages"]) == ["read", "plan", "render", "write", "record", "report"]
    apply_edits(root)
    upd = api.update(api.load_project(root), notify=False)
    assert {"read", "detect", "plan", "render", "write", "record", "report"} <= set(upd["stages"])
    for s in (seeded, upd):
        total = sum(s["stages"].values())
        assert s["stages"]["render"] > 0 and s["stages"]["write"] > 0
        assert total <= s["seconds"] + 0.01
        assert total >= 0.85 * s["seconds"] - 0.05, (total, s["seconds"], s["stages"])
        on_disk = json.loads((Path(s["run_folder"]) / "summary.json").read_text())
        assert on_disk["stages"] == s["stages"] and on_disk["seconds"] == s["seconds"]


class _Cells(HTMLParser):
    """The Summary table of report.html: {row heading: cell text}."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self._th: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self._in = tag

    def handle_data(self, data):
        if self._in == "th":
            self._th = data.strip()
        elif self._in == "td" and self._th is not None and self._th not in self.cells:
            self.cells[self._th] = data.strip()

    def handle_endtag(self, tag):
        if tag == "tr":
            self._th = None
        self._in = None


def report_cells(page: Path) -> dict[str, str]:
    p = _Cells()
    p.feed(page.read_text(encoding="utf-8"))
    return p.cells


def test_readme_documents_the_exit_codes() -> None:
    readme = (Path(api.__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in readme, code


def test_log_lines_are_scrubbed_of_credentials() -> None:
    import logging

    from tiledelta.cli import _Redact

    def shown(msg: str, *args: object) -> str:
        rec = logging.LogRecord("smtplib", logging.DEBUG, __file__, 1, msg, args, None)
        _Redact().filter(rec)
        return rec.getMessage()

    plain = "AGJvYgBzM2NyZXQ="  # base64 of "\0bob\0s3cret"
    assert shown("send: 'AUTH PLAIN %s\\r\\n'", plain) == "send: 'AUTH PLAIN ***'"
    assert plain not in shown("send: 'AUTH PLAIN %s'", plain)
    assert shown("GET https://h/rest?f=json&token=abc.def") == "GET https://h/rest?f=json&token=***"
    assert shown("334 VXNlcm5hbWU6") == "334 ***"
    assert shown("rendered 334 meta-tiles") == "rendered 334 meta-tiles"  # not a credential
