"""Detection skips the layers whose files are proven unchanged since the last build.

Evidence is observed, not patched: which layers were read (``tiledelta.sources`` logs one
"read NAME" line per layer it reads), how many files were hashed
(``sources.files.HASHED``), the run history in ``state.sqlite``, and after every case the
cache equals a fresh seed of the data byte for byte.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from click.testing import CliRunner
from test_update import assert_cache_equals_fresh_seed

from tiledelta import api
from tiledelta.api import changes_summary, describe_changes, init_project, seed, update
from tiledelta.cli import main
from tiledelta.sources import files
from tiledelta.style import LayerSource

STYLE = """<Map srs="epsg:3857" background-color="#f2efe9">
  <Style name="lots">
    <Rule><Filter>[kind] = 'aaaa'</Filter><PolygonSymbolizer fill="#d04040"/></Rule>
    <Rule><ElseFilter/><PolygonSymbolizer fill="#4040d0"/></Rule>
  </Style>
  <Layer name="lots" srs="epsg:3857">
    <StyleName>lots</StyleName>
    <Datasource>
      <Parameter name="type">shape</Parameter>
      <Parameter name="file">data/lots.shp</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


@pytest.fixture(autouse=True)
def _no_racy_wait(monkeypatch):
    """Files written a moment ago get a proof (the tests write and then update at once);
    ``test_a_file_written_just_now_gets_no_proof`` keeps the real guard."""
    monkeypatch.setattr(files, "RACY_SECONDS", 0.0)


def _shapefile_project(root: Path) -> Path:
    """Forty squares near (0, 0) in a shapefile; the style colours them by ``kind``."""
    data = root / "data"
    data.mkdir(parents=True)
    squares = [
        shapely.box(x * 300.0, y * 300.0, x * 300.0 + 200, y * 300.0 + 200)
        for x in range(8)
        for y in range(5)
    ]
    kinds = np.array(["aaaa" if i % 3 else "bbbb" for i in range(len(squares))], dtype=object)
    pyogrio.raw.write(
        str(data / "lots.shp"),
        np.asarray(shapely.to_wkb(squares), dtype=object),
        [kinds],
        ["kind"],
        driver="ESRI Shapefile",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )
    (root / "style.xml").write_text(STYLE, encoding="utf-8")
    init_project(root, style=root / "style.xml", levels="12-14", force=True)
    project = api.load_project(root).updated(render={"processes": 1})
    project.save()
    return root


@pytest.fixture
def shp_project(tmp_path) -> Path:
    root = _shapefile_project(tmp_path / "lots")
    seed(api.load_project(root), notify=False)
    return root


@pytest.fixture
def gpkg_project(sample_template, tmp_path) -> Path:
    """The sample county (a GeoPackage, four layers), seeded at levels 13-14."""
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="13-14", force=True)
    api.load_project(root).updated(render={"processes": 1}).save()
    return root


def _read_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("read ")]


def _runs(root: Path) -> int:
    with sqlite3.connect(root / ".tiledelta" / "state.sqlite") as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_untouched_files_are_neither_read_nor_diffed(shp_project, caplog):
    root = shp_project
    caplog.set_level(logging.INFO, logger="tiledelta")
    changes = changes_summary(api.load_project(root))
    assert changes["unchanged_files"] == ["lots"]
    assert changes["layers"]["lots"] == {"added": 0, "modified": 0, "deleted": 0}
    assert _read_lines(caplog) == [], "a proven layer was read"
    assert describe_changes(changes) == [
        "lots: 0 added, 0 modified, 0 deleted; unchanged (files)",
        "nothing to do",
    ]
    # update: nothing read, nothing recorded, no lock taken, no run folder.
    runs = _runs(root)
    result = update(api.load_project(root), notify=False)
    assert result["nothing_to_do"] is True and result["tiles_written"] == 0
    project = api.load_project(root)
    # The same shape as any update's summary: every configured level, all counts 0.
    assert sorted(result["levels"], key=int) == [str(lv) for lv in project.levels]
    assert all(set(row.values()) == {0} for row in result["levels"].values())
    assert _read_lines(caplog) == []
    assert _runs(root) == runs
    assert_cache_equals_fresh_seed(root)


def test_a_touched_mtime_is_rehashed_and_finds_no_change(shp_project, caplog):
    root = shp_project
    dbf = root / "data" / "lots.dbf"
    st = dbf.stat()
    os.utime(dbf, ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))
    before = files.HASHED["files"]
    changes = changes_summary(api.load_project(root))
    assert files.HASHED["files"] > before, "the touched file was not hashed again"
    assert changes["unchanged_files"] == ["lots"]
    caplog.set_level(logging.INFO, logger="tiledelta")
    assert update(api.load_project(root), notify=False).get("nothing_to_do")
    assert _read_lines(caplog) == []
    assert_cache_equals_fresh_seed(root)


def _edit_dbf_in_place(dbf: Path, old: bytes, new: bytes) -> None:
    """Replace the first ``old`` value by ``new`` (same length), keeping size and mtime."""
    st = dbf.stat()
    raw = bytearray(dbf.read_bytes())
    at = raw.index(old)
    raw[at : at + len(old)] = new
    with open(dbf, "r+b") as f:
        f.write(raw)
    os.utime(dbf, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = dbf.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_same_size_same_mtime_edit_is_caught_by_the_hash(shp_project, caplog):
    root = shp_project
    _edit_dbf_in_place(root / "data" / "lots.dbf", b"bbbb", b"aaaa")
    caplog.set_level(logging.INFO, logger="tiledelta")
    changes = changes_summary(api.load_project(root))
    assert "unchanged_files" not in changes
    c = changes["layers"]["lots"]
    assert (c["added"], c["deleted"]) == (1, 1) or c["modified"] == 1, c  # no key: by content
    assert [m.split(":")[0] for m in _read_lines(caplog)] == ["read lots"]
    result = update(api.load_project(root), notify=False)
    assert "nothing_to_do" not in result and result["tiles_written"] > 0
    assert_cache_equals_fresh_seed(root)
    # The update recorded the new bytes: the next run is proven unchanged again.
    assert changes_summary(api.load_project(root))["unchanged_files"] == ["lots"]


def test_full_compare_reads_and_diffs_every_layer(shp_project, caplog):
    root = shp_project
    caplog.set_level(logging.INFO, logger="tiledelta")
    changes = changes_summary(api.load_project(root), full_compare=True)
    assert "unchanged_files" not in changes
    assert len(_read_lines(caplog)) == 1
    caplog.clear()
    out = CliRunner().invoke(main, ["status", "--project", str(root), "--full-compare"])
    assert out.exit_code == 0, out.output
    assert "unchanged (files)" not in out.output and "lots: 0 added" in out.output
    out = CliRunner().invoke(main, ["status", "--project", str(root)])
    assert (
        out.exit_code == 0
        and "lots: 0 added, 0 modified, 0 deleted; unchanged (files)" in out.output
    )
    runs = _runs(root)
    result = update(api.load_project(root), notify=False, full_compare=True)
    assert "nothing_to_do" not in result and _runs(root) == runs + 1
    assert result["tiles_written"] == 0
    assert_cache_equals_fresh_seed(root)


def test_trust_unchanged_files_false_compares_everything(shp_project, caplog):
    root = shp_project
    toml = root / "tiledelta.toml"
    text = toml.read_text()
    assert "trust_unchanged_files = true" in text  # the default, written by init
    toml.write_text(text.replace("trust_unchanged_files = true", "trust_unchanged_files = false"))
    caplog.set_level(logging.INFO, logger="tiledelta")
    changes = changes_summary(api.load_project(root))
    assert "unchanged_files" not in changes and len(_read_lines(caplog)) == 1


def test_a_file_written_just_now_gets_no_proof(tmp_path, monkeypatch, caplog):
    """A file changed within RACY_SECONDS of its hash might change again in the same
    timestamp tick unseen: the build records no proof, the next detection reads."""
    monkeypatch.setattr(files, "RACY_SECONDS", 3600.0)
    root = _shapefile_project(tmp_path / "lots")
    seed(api.load_project(root), notify=False)
    caplog.set_level(logging.INFO, logger="tiledelta")
    changes = changes_summary(api.load_project(root))
    assert "unchanged_files" not in changes and len(_read_lines(caplog)) == 1


def test_a_geopackage_edited_in_wal_mode_is_caught(gpkg_project, caplog):
    """An edit that sits in the ``-wal`` (the GeoPackage file itself untouched) is found."""
    root = gpkg_project
    gpkg = root / "data" / "county.gpkg"
    with sqlite3.connect(gpkg) as con:
        con.execute("PRAGMA journal_mode=WAL")
    seed(api.load_project(root), notify=False)
    assert changes_summary(api.load_project(root))["unchanged_files"] == [
        "buildings",
        "parcels",
        "roads",
        "water",
    ]
    main_bytes = gpkg.read_bytes()
    con = sqlite3.connect(gpkg)
    try:
        con.execute("PRAGMA wal_autocheckpoint=0")
        # The R-tree triggers name GDAL's SQL functions; they fire only when the geometry
        # or the fid changes, which this edit does not: stand-ins let SQLite prepare them.
        for fn in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
            con.create_function(fn, 1, lambda _g: 0)
        fid, kind = con.execute("SELECT fid, kind FROM buildings ORDER BY fid LIMIT 1").fetchone()
        new = "residential" if kind == "commercial" else "commercial"
        con.execute("UPDATE buildings SET kind=? WHERE fid=?", (new, fid))
        con.commit()
        assert gpkg.read_bytes() == main_bytes, "the edit reached the main file"
        assert Path(f"{gpkg}-wal").stat().st_size > 0
        caplog.set_level(logging.INFO, logger="tiledelta")
        changes = changes_summary(api.load_project(root))
        c = changes["layers"]["buildings"]
        assert (c["added"], c["deleted"]) == (1, 1) or c["modified"] == 1, c
        assert "buildings" not in changes.get("unchanged_files", [])
        result = update(api.load_project(root), notify=False)
        assert result["tiles_written"] > 0
        assert_cache_equals_fresh_seed(root)
    finally:
        con.close()


def test_the_read_signature_covers_how_a_layer_is_read():
    base = LayerSource(name="a", kind="ogr", path="/d/x.gpkg", layer="x", attributes=("k",))
    sig = files.read_signature(base, "EPSG:3857", None, None)
    for other in (
        LayerSource(name="a", kind="ogr", path="/d/x.gpkg", layer="x", attributes=("k", "j")),
        LayerSource(
            name="a", kind="ogr", path="/d/x.gpkg", layer="x", attributes=("k",), where="k=1"
        ),
        LayerSource(name="a", kind="ogr", path="/d/x.gpkg", layer="y", attributes=("k",)),
    ):
        assert files.read_signature(other, "EPSG:3857", None, None) != sig
    assert files.read_signature(base, "EPSG:3857", "id", None) != sig
    assert files.read_signature(base, "EPSG:4326", None, None) != sig
    assert files.read_signature(base, "EPSG:3857", None, None) == sig


def test_dataset_files(tmp_path):
    shp = tmp_path / "a.shp"
    for suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix"):
        (tmp_path / f"a{suffix}").write_bytes(b"x")
    (tmp_path / "ab.shp").write_bytes(b"x")  # another dataset
    got = files.dataset_files(LayerSource(name="a", kind="shape", path=str(shp)))
    assert [p.name for p in got] == ["a.cpg", "a.dbf", "a.prj", "a.qix", "a.shp", "a.shx"]
    gpkg = tmp_path / "b.gpkg"
    gpkg.write_bytes(b"x")
    Path(f"{gpkg}-wal").write_bytes(b"x")
    Path(f"{gpkg}-shm").write_bytes(b"x")  # an index of the WAL: not data
    got = files.dataset_files(LayerSource(name="b", kind="ogr", path=str(gpkg)))
    assert [p.name for p in got] == ["b.gpkg", "b.gpkg-wal"]
    gdb = tmp_path / "c.gdb"
    (gdb / "sub").mkdir(parents=True)
    (gdb / "a00000001.gdbtable").write_bytes(b"x")
    (gdb / "sub" / "x").write_bytes(b"x")
    got = files.dataset_files(LayerSource(name="c", kind="ogr", path=str(gdb)))
    assert [p.name for p in got] == ["a00000001.gdbtable", "x"]
    for path in ("PG:dbname=x", "/vsizip/a.zip/a.shp", str(tmp_path / "d.vrt")):
        assert files.dataset_files(LayerSource(name="d", kind="ogr", path=path)) is None
    assert files.dataset_files(LayerSource(name="e", kind="postgis", path="")) is None
