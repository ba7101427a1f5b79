"""Stage times from the process's first instant (issue 13): ``startup``, ``imports`` and
``load`` of a command line run, before the build's stages, and nothing paid that the run
does not need (no HTTP client, server, progress bar or Pillow on the way in)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiledelta
from tiledelta import api
from tiledelta.project import Project
from tiledelta.sample import apply_edits

CLI = [sys.executable, "-m", "tiledelta"]
#: where the platform gives a process's start time (tiledelta.process_age)
HAS_START = sys.platform.startswith("linux") or sys.platform == "win32"
BEFORE_RUN = ("startup", "imports", "load")


@pytest.fixture(scope="module")
def county(sample_template, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stages") / "county"
    shutil.copytree(sample_template, root)
    api.init_project(root, style=root / "style.xml", levels="13-15", force=True)
    Project.load(root).updated(render={"processes": 1}).save()
    return root


def _timed(*args: str) -> tuple[dict, float]:
    """Run the CLI in a fresh process; its --json object and the wall time around it."""
    t = time.perf_counter()
    out = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout), wall


def _check(summary: dict, wall: float, build: tuple[str, ...], recorded: bool = True) -> None:
    stages = summary["stages"]
    names = list(stages)
    first = BEFORE_RUN if HAS_START else BEFORE_RUN[1:]
    assert names[: len(first)] == list(first), names  # the process's own stages come first
    assert set(build) <= set(names), names
    assert "notify" not in names  # no [notify]: nothing sent, nothing timed
    assert all(v >= 0 for v in stages.values()), stages
    assert sum(stages.values()) <= wall, (stages, wall)
    before = sum(stages[k] for k in BEFORE_RUN if k in stages)
    assert before + summary["seconds"] <= wall, (stages, summary["seconds"], wall)
    assert stages["imports"] > 0 and stages["load"] > 0
    if recorded:
        assert {"record", "report"} <= set(names), names
        on_disk = json.loads((Path(summary["run_folder"]) / "summary.json").read_text())
        assert on_disk["stages"] == stages


def test_cli_runs_time_startup_imports_and_load(county: Path, tmp_path: Path) -> None:
    root = tmp_path / "county"
    shutil.copytree(county, root)
    seeded, wall = _timed("seed", "--project", str(root))
    _check(seeded, wall, ("read", "plan", "render", "write"))
    apply_edits(root)
    updated, wall = _timed("update", "--project", str(root))
    assert updated["tiles_written"] > 0
    _check(updated, wall, ("read", "detect", "plan", "render", "write"))
    # Nothing changed: the same stages, and the process's own are still there.
    idle, wall = _timed("update", "--project", str(root))
    assert idle.get("metatiles_rendered", 0) == 0
    if idle.get("nothing_to_do"):  # files proven unchanged: nothing read, nothing recorded
        _check(idle, wall, ("detect",), recorded=False)
    else:
        _check(idle, wall, ("read", "detect", "plan"))


def test_a_library_call_has_no_process_stages(county: Path, tmp_path: Path) -> None:
    """In an embedding application the process started long before: no startup/imports,
    and the caller loaded the project itself."""
    root = tmp_path / "county"
    shutil.copytree(county, root)
    res = api.seed(api.load_project(root), notify=False)
    assert not set(BEFORE_RUN) & set(res["stages"]), res["stages"]
    given = api.update(api.load_project(root), notify=False, stages={"load": 0.25})
    assert list(given["stages"])[0] == "load" and given["stages"]["load"] == 0.25


@pytest.mark.skipif(not HAS_START, reason="the platform gives no process start time")
def test_process_start_lies_between_spawn_and_first_line() -> None:
    """``process_age`` against the clock of the parent that spawned the process (Linux's
    CLOCK_MONOTONIC and Windows' QueryPerformanceCounter are system-wide)."""
    code = (
        "import time, tiledelta; age = tiledelta.process_age(); now = time.perf_counter();"
        "print(now - age, tiledelta.STARTED)"
    )
    spawned = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    start, first_line = map(float, out.stdout.split())
    # Linux counts process start in clock ticks (10 ms): the start may read up to a tick early.
    assert spawned - 0.02 <= start <= first_line, (spawned, start, first_line)
    ages = tiledelta.startup_stages()
    assert ages["startup"] >= 0 and ages["imports"] >= 0


def test_the_cli_imports_only_what_every_command_needs() -> None:
    code = (
        "import sys, tiledelta.cli;"
        "print(' '.join(m for m in ('httpx', 'rich', 'starlette', 'uvicorn', 'PIL', "
        "'tiledelta.serve', 'tiledelta.publish', 'tiledelta.runs.report', 'webbrowser') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
