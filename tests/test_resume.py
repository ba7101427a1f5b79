"""A seed that is stopped resumes where it stopped, and ends byte-identical.

Each test runs the real ``tiledelta`` command in its own process group and stops it by
progress (the seed journal's finished meta-tiles against the dry run's total) with
SIGKILL, SIGTERM or SIGINT (what Ctrl-C sends to the terminal's process group), then runs
``tiledelta seed`` again. The oracle is an uninterrupted seed of the same data in another
folder: every file of a compact or XYZ cache byte for byte, every tile row and the
metadata of an MBTiles file; GDAL opens the resumed compact cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from conftest import gdal_open

from tiledelta.api import init_project, load_project, seed, seed_dry_run
from tiledelta.change import detect_changes
from tiledelta.change.journal import SEED_JOURNAL, SeedJournal

TILEDELTA = str(Path(sys.executable).with_name("tiledelta"))
STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857"{background}>
  <Style name="squares"><Rule>
    <PolygonSymbolizer fill="{fill}"/><LineSymbolizer stroke="#a27652" stroke-width="0.5"/>
  </Rule></Style>
  <Layer name="squares" srs="epsg:3857"><StyleName>squares</StyleName>
    <Datasource><Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/squares.gpkg</Parameter>
      <Parameter name="layer">squares</Parameter></Datasource>
  </Layer>
</Map>
"""
WORLD = 20037508.34


def write_squares(root: Path, n: int = 40, spread: float = 0.95, seed_: int = 7) -> None:
    """``n`` small squares at random over ``spread`` of the Web Mercator world: many
    bundles at levels 7-10, few meta-tiles each, so a seed takes seconds."""
    rng = np.random.default_rng(seed_)
    r = WORLD * spread
    x, y = rng.uniform(-r, r, n), rng.uniform(-r * 0.8, r * 0.8, n)
    s = rng.uniform(5e3, 4e4, n)
    path = root / "data" / "squares.gpkg"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    pyogrio.raw.write(
        str(path),
        shapely.to_wkb(shapely.box(x, y, x + s, y + s)),
        field_data=[np.arange(n)],
        fields=["id"],
        geometry_type="Polygon",
        crs="EPSG:3857",
        layer="squares",
        driver="GPKG",
    )


def make_project(
    root: Path, kind: str = "compact", *, opaque: bool = False, fill: str = "#d6a77a"
) -> Path:
    """A project at levels 7-10 over the squares, two render processes."""
    write_squares(root, spread=0.2 if opaque else 0.95)
    write_style(root, opaque=opaque, fill=fill)
    init_project(root, style=root / "style.xml", levels="7-10", cache_kind=kind, force=True)
    load_project(root).updated(render={"processes": 2}).save()
    return root


def write_style(root: Path, *, opaque: bool = False, fill: str = "#d6a77a") -> None:
    background = ' background-color="#f4f1ea"' if opaque else ""
    (root / "style.xml").write_text(STYLE.format(background=background, fill=fill))


def copy_project(src: Path, dst: Path) -> Path:
    """The project's files without its cache or state (same folder name: MBTiles ``name``)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache*", ".tiledelta"))
    return dst


def cache_content(project: Path) -> dict:
    """Every file of a compact / XYZ cache; an MBTiles file's tile rows and metadata."""
    p = load_project(project)
    path = p.cache_path
    if p.config.cache.kind == "mbtiles":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tiles = con.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles ORDER BY 1, 2, 3"
            ).fetchall()
            meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            con.close()
        return {"tiles": tiles, "metadata": meta}
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TILEDELTA, *args, "--project", str(project)], capture_output=True, text=True, timeout=300
    )


def dry_run_total(project: Path) -> int:
    """The meta-tiles the seed will render, from its dry run."""
    return seed_dry_run(load_project(project))["metatiles"]


def journal_done(project: Path) -> int:
    """Meta-tiles the running seed has journaled as finished (read only)."""
    _signature, done = SeedJournal.peek(project / ".tiledelta" / SEED_JOURNAL)
    return sum(done.values())


def stop_seed_at(project: Path, fraction: float, sig: int, total: int) -> tuple[int, str, int]:
    """Start ``tiledelta seed`` in its own process group, send ``sig`` to the group once
    ``fraction`` of the ``total`` meta-tiles are journaled; return (exit code, stderr,
    meta-tiles journaled at the signal).

    The stopped run is held to about 6 s by a rate cap (not part of the seed's signature,
    so the resume is the same plan): on a fast machine the last groups would otherwise be
    journaled in one go, past ``fraction``, and the seed would finish before the signal."""
    cfg = load_project(project)
    rate = max(1.0, total * cfg.settings.metatile**2 / 6.0)
    cfg.updated(render={"max_tiles_per_second": rate}).save()
    proc = subprocess.Popen(
        [TILEDELTA, "seed", "--project", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    done = 0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            done = journal_done(project)
            if done >= fraction * total:
                os.killpg(proc.pid, sig)
                break
            time.sleep(0.02)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    load_project(project).updated(render={"max_tiles_per_second": None}).save()
    assert 0 < done < total, f"the seed was not stopped part-way ({done} of {total} done)"
    return proc.returncode, err, done


def resume(project: Path) -> dict:
    """Run ``tiledelta seed --json`` to the end; a run that hangs fails the test with the
    Python stacks of its processes (faulthandler on SIGABRT)."""
    proc = subprocess.Popen(
        [TILEDELTA, "seed", "--json", "--project", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        ps = subprocess.run(
            ["ps", "-o", "pid,ppid,stat,etime,cmd", "-g", str(proc.pid)],
            capture_output=True,
            text=True,
        ).stdout
        os.killpg(proc.pid, signal.SIGABRT)
        out, err = proc.communicate()
        pytest.fail(f"the resuming seed hung:\n{ps}\n{err[-8000:]}")
    assert proc.returncode == 0, err + out
    return json.loads(out)


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Per (kind, opaque), seeded once: a project whose cache holds older data and whose
    data has since changed, and the reference: a fresh seed of the new data."""
    made: dict[tuple[str, bool], tuple[Path, Path, dict]] = {}

    def get(kind: str, opaque: bool) -> tuple[Path, Path, dict]:
        if (kind, opaque) not in made:
            base = tmp_path_factory.mktemp(f"{kind}-{'opaque' if opaque else 'clear'}")
            project = make_project(base / "a" / "county", kind, opaque=opaque)
            seed(load_project(project), notify=False)
            old = cache_content(project)
            write_squares(project, n=44, spread=0.2 if opaque else 0.95, seed_=8)  # new data
            reference = copy_project(project, base / "b" / "county")
            seed(load_project(reference), notify=False)
            made[(kind, opaque)] = (project, reference, old)
        return made[(kind, opaque)]

    return get


@pytest.fixture
def pair(templates, tmp_path: Path):
    """(project, reference, old cache content) of one kind; the project is a fresh copy
    (cache and state included) that the test may stop and resume."""

    def make(kind: str, opaque: bool = False) -> tuple[Path, Path, dict]:
        template, reference, old = templates(kind, opaque)
        project = tmp_path / "county"
        shutil.copytree(template, project)
        return project, reference, old

    return make


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_compact_seed_killed_and_resumed_is_byte_identical(pair, fraction: float) -> None:
    project, reference, old = pair("compact", opaque=True)
    total = dry_run_total(project)
    code, _err, _done = stop_seed_at(project, fraction, signal.SIGKILL, total)
    assert code == -signal.SIGKILL
    p = load_project(project)
    assert (p.cache_path.parent / "cache.building").is_dir()
    assert cache_content(project) == old  # the old cache kept serving, untouched
    summary = resume(project)
    before = summary["resumed"]["metatiles_done_before"]
    assert 0 < before < total
    # the resumed run drew only what was left: fewer meta-tiles than a fresh seed
    assert summary["metatiles_rendered"] == total - before < total
    assert cache_content(project) == cache_content(reference)
    assert not (p.cache_path.parent / "cache.building").exists()
    assert not (p.state_dir / SEED_JOURNAL).exists()
    assert gdal_open(p.cache_path / "conf.xml")["driver"] == "ESRIC"
    assert detect_changes(load_project(project)).as_dict()["layers"]["squares"] == {
        "added": 0,
        "modified": 0,
        "deleted": 0,
    }


@pytest.mark.parametrize("kind", ["mbtiles", "xyz"])
def test_mbtiles_and_xyz_seed_killed_and_resumed_are_identical(pair, kind: str) -> None:
    project, reference, old = pair(kind)
    total = dry_run_total(project)
    code, _err, _done = stop_seed_at(project, 0.5, signal.SIGKILL, total)
    assert code == -signal.SIGKILL
    assert cache_content(project) == old
    summary = resume(project)
    assert summary["metatiles_rendered"] == total - summary["resumed"]["metatiles_done_before"]
    assert summary["metatiles_rendered"] < total
    assert cache_content(project) == cache_content(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_exit_130_record_the_run_and_resume(pair, sig: int) -> None:
    project, reference, old = pair("compact")
    total = dry_run_total(project)
    code, err, done = stop_seed_at(project, 0.5, sig, total)
    assert code == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], err
    assert cache_content(project) == old
    # the run record: history and run folder, status interrupted, where it stopped
    p = load_project(project)
    con = sqlite3.connect(p.state_dir / "state.sqlite")
    run_id, kind, status = con.execute(
        "SELECT id, kind, status FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    con.close()
    assert (kind, status) == ("seed", "interrupted")
    record = json.loads((p.state_dir / "runs" / f"{run_id:06d}" / "summary.json").read_text())
    assert record["kind"] == "seed" and record["status"] == "interrupted"
    stopped = record["stopped_at"]
    assert stopped["metatiles_total"] == total
    assert done <= stopped["metatiles_done"] < total
    assert set(stopped["levels_done"]) <= {7, 8, 9, 10}
    summary = resume(project)
    assert summary["resumed"]["metatiles_done_before"] >= stopped["metatiles_done"] > 0
    assert summary["metatiles_rendered"] < total
    assert cache_content(project) == cache_content(reference)


def test_a_changed_style_discards_the_partial_build(pair) -> None:
    project, reference, _old = pair("compact")
    total = dry_run_total(project)
    stop_seed_at(project, 0.5, signal.SIGKILL, total)
    write_style(project, fill="#3a7bd5")
    restyled = copy_project(project, project.parent / "restyled" / "county")
    seed(load_project(restyled), notify=False)
    dry = json.loads(cli(project, "seed", "--dry-run", "--json").stdout)
    assert dry["discard"] == "the style changed" and "resume" not in dry
    out = cli(project, "seed", "--json")
    assert out.returncode == 0, out.stderr
    assert "discarding the unfinished seed in cache.building (the style changed)" in out.stderr
    summary = json.loads(out.stdout)
    assert "resumed" not in summary and summary["metatiles_rendered"] == total
    assert cache_content(project) == cache_content(restyled) != cache_content(reference)


def test_restart_starts_over(pair) -> None:
    project, reference, _old = pair("xyz")
    total = dry_run_total(project)
    stop_seed_at(project, 0.25, signal.SIGKILL, total)
    out = cli(project, "seed", "--restart", "--json")
    assert out.returncode == 0, out.stderr
    assert "(--restart)" in out.stderr
    summary = json.loads(out.stdout)
    assert "resumed" not in summary and summary["metatiles_rendered"] == total
    assert cache_content(project) == cache_content(reference)


def test_a_kill_between_the_swap_renames_leaves_a_cache(pair, monkeypatch) -> None:
    """The state a kill after ``cache → cache.old`` and before ``cache.building → cache``
    leaves: the next run puts the old cache back, and the next seed only swaps."""
    from tiledelta.build import seed as seed_module

    project, reference, old = pair("compact")

    class Killed(BaseException):
        pass

    def half_swap(_project, new: Path, final: Path) -> None:
        final.rename(final.with_name(final.name + ".old"))
        raise Killed

    monkeypatch.setattr(seed_module, "_swap_in", half_swap)
    with pytest.raises(Killed):
        seed(load_project(project), notify=False)
    monkeypatch.undo()
    p = load_project(project)
    assert not p.cache_path.exists() and (project / "cache.old").is_dir()
    # any run recovers first: here the next update (the snapshot still describes the old)
    out = cli(project, "update", "--json")
    assert out.returncode == 0, out.stderr
    assert "restored" in out.stderr and not (project / "cache.old").exists()
    summary = resume(project)
    assert summary["metatiles_rendered"] == 0  # all was built: only the swap was left
    assert cache_content(project) == cache_content(reference)
    assert old != cache_content(reference)
