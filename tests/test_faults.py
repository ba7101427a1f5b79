"""Faults from the fault campaign (issue 12): each test reproduces what was observed, then
checks the fix: one line, a non-zero exit, nothing written, the snapshot not advanced.

Sources read incompletely (a truncated shapefile, NULL geometries, mass deletions) and
coordinates that cannot be right (metres declared as degrees, NaN, infinity).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from conftest import set_processes, shared_path

from tiledelta import api
from tiledelta.errors import MassDeleteError, SourceError

TILEDELTA = [sys.executable, "-m", "tiledelta.cli"]

SHP_STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="buildings"><Rule>
    <PolygonSymbolizer fill="#d9d0c9"/><LineSymbolizer stroke="#8a7f75" stroke-width="0.5"/>
  </Rule></Style>
  <Layer name="buildings" srs="epsg:3857">
    <StyleName>buildings</StyleName>
    <Datasource>
      <Parameter name="type">shape</Parameter>
      <Parameter name="file">data/clatsop_buildings.shp</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) by relative name -> blake2b of its bytes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p.relative_to(path.parent)): hashlib.blake2b(p.read_bytes()).hexdigest() for p in files
    }


def runs_recorded(project_dir: Path) -> int:
    with sqlite3.connect(Path(project_dir) / ".tiledelta" / "state.sqlite") as con:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TILEDELTA, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def clatsop(tmp_path: Path) -> Path:
    """The Clatsop buildings shapefile (copied) as a project at levels 12-13."""
    src = shared_path("data", "clatsop_buildings")
    d = tmp_path / "clatsop"
    (d / "data").mkdir(parents=True)
    for f in src.glob("clatsop_buildings.*"):
        shutil.copyfile(f, d / "data" / f.name)
    (d / "style.xml").write_text(SHP_STYLE, encoding="utf-8")
    api.init_project(d, style=d / "style.xml", levels="12-13", force=True)
    set_processes(d, 1)
    return d


# --- 1. a source read incompletely is an error, never a deletion ------------------------------


def test_truncated_shapefile_is_an_error_not_a_deletion(clatsop: Path) -> None:
    api.seed(api.load_project(clatsop))
    shp = clatsop / "data" / "clatsop_buildings.shp"
    whole = shp.read_bytes()
    # GDAL itself reads the cut file without a word: most records come back without geometry.
    os.truncate(shp, 50_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _meta, _fids, geoms, _values = pyogrio.raw.read(str(shp), return_fids=True)
    assert len(geoms) == 23953 and sum(g is None for g in geoms) > 20000 and not caught

    cache, state = tree_digest(clatsop / "cache"), runs_recorded(clatsop)
    out = cli("update", "--project", str(clatsop))
    assert_one_line_error(out, "clatsop_buildings.shp", "buildings", "incomplete")
    out = cli("status", "--project", str(clatsop))
    assert_one_line_error(out, "clatsop_buildings.shp")
    assert tree_digest(clatsop / "cache") == cache
    assert runs_recorded(clatsop) == state
    assert (
        not (clatsop / ".tiledelta" / "runs").exists()
        or len(list((clatsop / ".tiledelta" / "runs").iterdir())) == 1
    )

    shp.write_bytes(whole)  # the copy finished: nothing changed
    result = api.update(api.load_project(clatsop))
    assert result["changes"]["layers"]["buildings"] == {"added": 0, "modified": 0, "deleted": 0}


def test_shx_listing_records_past_the_end_of_the_shp(clatsop: Path) -> None:
    """A .shp whose header was rewritten to its cut length still lacks what the .shx lists."""
    shp = clatsop / "data" / "clatsop_buildings.shp"
    data = bytearray(shp.read_bytes()[:60_000])
    data[24:28] = (len(data) // 2).to_bytes(4, "big")
    shp.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"lacks records its index clatsop_buildings\.shx"):
        api.seed(api.load_project(clatsop))
    assert not (clatsop / "cache").exists()


def _set_null_geometry(gpkg: Path, layer: str, rows: list[int]) -> None:
    meta, _fids, geoms, values = pyogrio.raw.read(str(gpkg), layer=layer, return_fids=True)
    geoms = np.asarray(geoms, dtype=object)
    geoms[rows] = None
    pyogrio.raw.write(
        str(gpkg),
        geoms,
        values,
        meta["fields"],
        layer=layer,
        driver="GPKG",
        geometry_type=meta["geometry_type"],
        crs=meta["crs"],
    )


def test_null_geometry_where_the_snapshot_had_one(sample_project: Path) -> None:
    api.seed(api.load_project(sample_project))
    cache, state = tree_digest(sample_project / "cache"), runs_recorded(sample_project)
    gpkg = sample_project / "data" / "county.gpkg"
    _set_null_geometry(gpkg, "buildings", [3])
    with pytest.raises(SourceError, match=r"layer 'buildings'.*county\.gpkg.*have none now"):
        api.update(api.load_project(sample_project))
    assert tree_digest(sample_project / "cache") == cache
    assert runs_recorded(sample_project) == state


def _delete_rows(gpkg: Path, layer: str, share: float) -> int:
    meta, fids, geoms, values = pyogrio.raw.read(str(gpkg), layer=layer, return_fids=True)
    keep = np.arange(len(geoms)) >= int(len(geoms) * share)
    pyogrio.raw.write(
        str(gpkg),
        geoms[keep],
        [v[keep] for v in values],
        meta["fields"],
        layer=layer,
        driver="GPKG",
        geometry_type=meta["geometry_type"],
        crs=meta["crs"],
    )
    return int((~keep).sum())


def test_mass_delete_stops_unless_allowed(sample_project: Path) -> None:
    api.seed(api.load_project(sample_project))
    cache, state = tree_digest(sample_project / "cache"), runs_recorded(sample_project)
    gone = _delete_rows(sample_project / "data" / "county.gpkg", "buildings", 0.5)
    assert gone >= 10
    out = cli("update", "--project", str(sample_project))
    line = assert_one_line_error(out, "'buildings'", f"delete {gone:,} of", "--allow-mass-delete")
    assert "20%" in line
    with pytest.raises(MassDeleteError):
        api.update(api.load_project(sample_project))
    assert tree_digest(sample_project / "cache") == cache
    assert runs_recorded(sample_project) == state

    # A per-layer share lets it through; so does the flag.
    toml = sample_project / "tiledelta.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text + "\n[layers.buildings]\nmax_delete_share = 0.6\n", encoding="utf-8")
    assert api.load_project(sample_project).config.layers["buildings"].max_delete_share == 0.6
    toml.write_text(text, encoding="utf-8")
    out = cli("update", "--project", str(sample_project), "--allow-mass-delete", "--json")
    assert out.returncode == 0, out.stderr
    assert runs_recorded(sample_project) == state + 1


# --- 3. coordinates that cannot be right ---------------------------------------------------------


def test_metres_declared_as_degrees_is_an_error(sample_project: Path) -> None:
    api.seed(api.load_project(sample_project))
    cache, state = tree_digest(sample_project / "cache"), runs_recorded(sample_project)
    style = sample_project / "style.xml"
    text = style.read_text(encoding="utf-8")
    style.write_text(
        text.replace(
            '<Layer name="buildings" srs="epsg:3857">', '<Layer name="buildings" srs="epsg:4326">'
        ),
        encoding="utf-8",
    )
    for args in (("update",), ("seed",)):
        out = cli(*args, "--project", str(sample_project))
        assert_one_line_error(out, "'buildings'", "EPSG:4326", "not degrees")
    assert tree_digest(sample_project / "cache") == cache
    assert runs_recorded(sample_project) == state


def _write_points(path: Path, xy: list[tuple[float, float]], crs: str) -> None:
    pyogrio.raw.write(
        str(path),
        np.asarray(shapely.to_wkb(shapely.points(np.asarray(xy))), dtype=object),
        [np.asarray(["a"] * len(xy), dtype=object)],
        ["kind"],
        layer="buildings",
        driver="GPKG",
        geometry_type="Point",
        crs=crs,
    )


@pytest.mark.parametrize(
    ("xy", "crs", "match"),
    [
        ([(-13_760_000.0, 5_780_000.0), (float("nan"), 5_780_000.0)], "EPSG:3857", "NaN or inf"),
        ([(-13_760_000.0, 5_780_000.0), (float("inf"), 0.0)], "EPSG:3857", "NaN or inf"),
        ([(-123.8, 46.1), (100.0, 89.0)], "EPSG:4326", "outside the tiling scheme's extent"),
        ([(-123.8, 46.1), (-123.8, 90.0)], "EPSG:4326", "outside the tiling scheme"),
    ],
)
def test_bad_coordinates_name_the_layer_and_crs(
    tmp_path: Path, xy: list, crs: str, match: str
) -> None:
    from tiledelta.sources import read_layer

    gpkg = tmp_path / "p.gpkg"
    _write_points(gpkg, xy, crs)
    style = tmp_path / "style.xml"
    style.write_text(
        SHP_STYLE.replace('<Parameter name="type">shape</Parameter>', "")
        .replace('<Layer name="buildings" srs="epsg:3857">', '<Layer name="buildings">')
        .replace(
            '<Parameter name="file">data/clatsop_buildings.shp</Parameter>',
            '<Parameter name="type">ogr</Parameter><Parameter name="file">p.gpkg</Parameter>'
            '<Parameter name="layer">buildings</Parameter>',
        ),
        encoding="utf-8",
    )
    api.init_project(tmp_path, style=style, levels="10-12", force=True)
    project = api.load_project(tmp_path)
    src = project.style.layer("buildings")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        with pytest.raises(SourceError, match=match) as err:
            read_layer(src, project.scheme.crs, valid=project.scheme.extent)
    assert "layer 'buildings'" in str(err.value) and "p.gpkg" in str(err.value)
    assert crs in str(err.value)


# --- 6. serve reads no file outside its folders ---------------------------------------------------


def test_serve_follows_no_symlink_out_of_the_run_folders(sample_project: Path, tmp_path: Path):
    from conftest import LiveServer

    from tiledelta.serve.app import create_app

    api.seed(api.load_project(sample_project))
    secret = tmp_path / "outside.json"
    secret.write_text('{"secret": "do-not-serve"}', encoding="utf-8")
    runs = sample_project / ".tiledelta" / "runs"
    (latest,) = sorted(p for p in runs.iterdir() if p.is_dir())
    with LiveServer(create_app(api.load_project(sample_project))) as srv:
        status, body = srv.raw("/runs/latest/summary.json")
        assert status == 200 and b'"kind"' in body  # the real file is served
        (latest / "summary.json").unlink()
        (latest / "summary.json").symlink_to(secret)
        status, body = srv.raw("/runs/latest/summary.json")
        assert status == 404 and b"do-not-serve" not in body
        (latest / "summary.json").unlink()
        (latest / "summary.json").symlink_to("/etc/passwd")
        status, body = srv.raw("/runs/latest/summary.json")
        assert status == 404 and b"root:" not in body
        # A newer run folder that is a symlink to a folder elsewhere.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shutil.copyfile(secret, elsewhere / "summary.json")
        shutil.copyfile(secret, elsewhere / "tiles.json")
        (runs / "99999999").symlink_to(elsewhere, target_is_directory=True)
        for name in ("summary.json", "tiles.json", "before.json"):
            status, body = srv.raw(f"/runs/latest/{name}")
            assert status == 404 and b"do-not-serve" not in body, name
        # before.sqlite linked out of the run folder is not opened either.
        (runs / "99999999").unlink()
        other = tmp_path / "before.sqlite"
        with sqlite3.connect(other) as con:
            con.execute("CREATE TABLE tiles (level, row, col, data)")
        (latest / "before.sqlite").symlink_to(other)
        status, _body = srv.raw("/runs/latest/before.json")
        assert status == 404


# --- 4. render workers die with their run; the lock never outlives it ---------------------------


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


HEAVY_STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="heavy"><Rule>
    <PolygonSymbolizer fill="#d9d0c9"/><LineSymbolizer stroke="#8a7f75" stroke-width="3"/>
  </Rule></Style>
  <Layer name="heavy" srs="epsg:3857">
    <StyleName>heavy</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">heavy.gpkg</Parameter>
      <Parameter name="layer">heavy</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


def heavy_project(d: Path, vertices: int = 1_200_000) -> Path:
    """A project whose one polygon (a ring of ``vertices`` spikes) takes Mapnik seconds
    per meta-tile: a heavy render, with real data."""
    d.mkdir(parents=True, exist_ok=True)
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = 3000 + 1500 * np.sin(t * 4000)
    ring = np.column_stack([-13_760_000 + r * np.cos(t), 5_780_000 + r * np.sin(t)])
    pyogrio.raw.write(
        str(d / "heavy.gpkg"),
        np.asarray([shapely.to_wkb(shapely.Polygon(ring))], dtype=object),
        [np.asarray(["a"], dtype=object)],
        ["kind"],
        layer="heavy",
        driver="GPKG",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )
    (d / "style.xml").write_text(HEAVY_STYLE, encoding="utf-8")
    api.init_project(d, style=d / "style.xml", levels="13-16", force=True)
    set_processes(d, 2)
    return d


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_of_the_run_ends_its_workers_and_frees_the_lock(tmp_path: Path) -> None:
    import signal

    from tiledelta.project import project_lock

    d = heavy_project(tmp_path / "heavy")
    run = subprocess.Popen(
        [*TILEDELTA, "seed", "--project", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2:
            assert run.poll() is None, "the seed ended before its workers started"
            assert time.monotonic() < deadline, "no render workers appeared"
            time.sleep(0.05)
            workers = _children(run.pid)
        time.sleep(1.5)  # rendering: each meta-tile takes seconds
        assert all(_running(w) for w in workers)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        t0 = time.monotonic()
        while any(_running(w) for w in workers) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        gone_after = time.monotonic() - t0
        assert gone_after < 2.0, f"workers alive {gone_after:.1f} s after their run was killed"
        # The next run is not refused: the lock died with its holder.
        with project_lock(api.load_project(d)):
            pass
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for w in _children(run.pid):
            os.kill(w, signal.SIGKILL)


def test_a_10_mb_label_is_cut_with_a_warning_and_the_run_finishes(
    sample_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.seed(api.load_project(sample_project))
    gpkg = sample_project / "data" / "county.gpkg"
    meta, _fids, geoms, values = pyogrio.raw.read(str(gpkg), layer="roads", return_fids=True)
    names = dict(zip(meta["fields"], values, strict=True))["name"].astype(object)
    names[0] = "Main Street " * 900_000  # 10.8 MB
    pyogrio.raw.write(
        str(gpkg),
        geoms,
        [names if f == "name" else v for f, v in zip(meta["fields"], values, strict=True)],
        meta["fields"],
        layer="roads",
        driver="GPKG",
        geometry_type=meta["geometry_type"],
        crs=meta["crs"],
    )
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="tiledelta.sources.types"):
        result = api.update(api.load_project(sample_project))
    assert time.monotonic() - t0 < 60
    assert (
        result["changes"]["layers"]["roads"]["deleted"]
        + result["changes"]["layers"]["roads"]["modified"]
        >= 1
    )
    (warning,) = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert "layer 'roads'" in warning and "'name'" in warning and "10800000" in warning


def test_a_meta_tile_over_its_timeout_stops_the_run_naming_it(tmp_path: Path) -> None:
    d = heavy_project(tmp_path / "heavy", vertices=600_000)
    api.load_project(d).updated(render={"metatile_timeout": 0.2}).save()
    assert api.load_project(d).config.render.metatile_timeout == 0.2
    out = cli("seed", "--project", str(d))
    assert_one_line_error(out, "level 1", "meta-tile row", "metatile_timeout = 0.2 s")
    assert not (d / "cache").exists()  # (cache.building may stay: the seed resumes from it)
