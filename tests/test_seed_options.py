"""``seed`` and ``update`` with --levels, --processes, --extent, --aoi and --dry-run.

Oracles: meta-tile extents from the Web Mercator formulas written out here (not the grid
module); pyproj for the AOI's coordinates; an uninterrupted full seed of the same data
for the tiles a partial run refreshes; and the real runs' own counts for the dry runs
(the dry run must print the plan the run executes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyproj
import pytest
import shapely
import shapely.affinity
from click.testing import CliRunner

from tiledelta.api import load_project, seed, update
from tiledelta.change import detect_changes, read_journal
from tiledelta.cli import main
from tiledelta.sample import _read, _write
from tiledelta.sources import data_extent, read_layers
from tiledelta.stores import open_project_store

HALF = 20037508.342789244
META = 4


def cli(project: Path, *args: str):
    """``tiledelta ARGS --project PROJECT`` in this process: (exit code, stdout, stderr)."""
    res = CliRunner().invoke(main, [*args, "--project", str(project)])
    return res.exit_code, res.stdout, res.stderr


def read_cache(project: Path) -> dict[tuple[int, int, int], bytes]:
    with open_project_store(load_project(project), create=False) as store:
        return {a: store.get(*a) for a in store.iter_tiles()}  # type: ignore[misc]


def tree(project: Path) -> dict[str, tuple[int, int]]:
    """Every file under the project with its size and mtime (what "nothing written" means;
    the run lock names its holder)."""
    out = {}
    for root, _dirs, files in os.walk(project):
        for f in files:
            if f == "run.lock":
                continue
            st = os.stat(os.path.join(root, f))
            out[os.path.relpath(os.path.join(root, f), project)] = (st.st_size, st.st_mtime_ns)
    return out


def move_buildings(project: Path, dx: float = 25.0) -> None:
    """Move every building ``dx`` metres east: tiles change all over the county."""
    gpkg = project / "data" / "county.gpkg"
    geoms, fields = _read(gpkg, "buildings")
    _write(gpkg, "buildings", [shapely.affinity.translate(g, dx) for g in geoms], fields, "Polygon")


def fresh_seed(project: Path) -> dict[tuple[int, int, int], bytes]:
    """The tiles of an uninterrupted full seed of ``project``'s current data and style."""
    with tempfile.TemporaryDirectory(prefix="fresh-") as tmp:
        copy = Path(tmp) / project.name
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("cache*", ".tiledelta"))
        seed(load_project(copy), notify=False)
        return read_cache(copy)


def metatile_box(level: int, row: int, col: int) -> shapely.Polygon:
    """The extent of the meta-tile holding tile (row, col), from the Web Mercator formulas."""
    size = 2 * HALF / 2**level * META
    mrow, mcol = row // META, col // META
    x0, y1 = -HALF + mcol * size, HALF - mrow * size
    return shapely.box(x0, y1 - size, x0 + size, y1)


def west_half(project: Path) -> shapely.Polygon:
    """The western half of the data's extent (EPSG:3857)."""
    e = data_extent(read_layers(load_project(project)))
    assert e is not None
    return shapely.box(e.xmin, e.ymin, (e.xmin + e.xmax) / 2, e.ymax)


def to_wgs84(geom: shapely.Geometry) -> shapely.Geometry:
    tr = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda x, y: tr.transform(x, y), interleaved=False)


def changed(project) -> int:
    """Buildings added, modified or deleted since the snapshot."""
    c = detect_changes(project).as_dict()["layers"]["buildings"]
    return c["added"] + c["modified"] + c["deleted"]


@pytest.fixture
def built(sample_project: Path) -> Path:
    seed(load_project(sample_project), notify=False)
    return sample_project


def test_levels_outside_the_configured_ones_is_one_line_and_writes_nothing(built: Path) -> None:
    before = tree(built)
    for args in (["seed", "--levels", "12-14"], ["update", "--levels", "16-19"]):
        code, out, err = cli(built, *args)
        assert code == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "--levels" in lines[0] and "13-17" in lines[0], err
    assert tree(built) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["seed", "--aoi", "missing.geojson"], "no such file"),
        (["update", "--aoi", "{bad}"], "not a GeoJSON or Esri JSON"),
        (["seed", "--aoi", "{lines}"], "holds no polygon"),
        (["seed", "--aoi", "{far}"], "nothing to seed"),
        (["seed", "--extent", "1,2,3"], "four numbers"),
        (["update", "--extent", "3e7,3e7,4e7,4e7"], "outside the tiling scheme"),
        (["seed", "--extent", "0,0,1,1", "--extent-crs", "EPSG:99999"], "EPSG:99999"),
    ],
)
def test_bad_areas_are_one_line_and_write_nothing(
    built: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "Topology"}')
    lines = tmp_path / "lines.geojson"
    lines.write_text(
        json.dumps({"type": "LineString", "coordinates": [[-123.9, 46.1], [-123.8, 46.2]]})
    )
    far = tmp_path / "far.geojson"  # a square in the Indian Ocean: no feature there
    far.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [[[70, -30], [71, -30], [71, -29], [70, -30]]]}
        )
    )
    args = [a.format(bad=bad, lines=lines, far=far) for a in args]
    before = tree(built)
    code, out, err = cli(built, *args)
    assert code in (1, 2), (out, err)
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert tree(built) == before


def test_dry_run_writes_nothing_and_says_when_it_has_no_measurement(sample_project: Path) -> None:
    before = tree(sample_project)
    code, out, err = cli(sample_project, "seed", "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["estimated_seconds"] is None and "no measurement yet" in dry["estimate_basis"]
    assert tree(sample_project) == before
    code, out, _err = cli(sample_project, "seed", "--dry-run")
    assert "no measurement yet" in out and "nothing written" in out
    summary = seed(load_project(sample_project), notify=False)
    dry = json.loads(cli(sample_project, "seed", "--dry-run", "--json")[1])
    assert dry["estimated_seconds"] > 0 and "measured" in dry["estimate_basis"]
    # the same plan as the run it estimates
    assert dry["metatiles"] == summary["metatiles_rendered"]
    assert dry["estimated_bytes"] > 0


@pytest.mark.parametrize("area", ["levels", "extent", "geojson", "esri"])
def test_dry_run_counts_equal_the_real_run(built: Path, tmp_path: Path, area: str) -> None:
    west = west_half(built)
    if area == "levels":
        args = ["--levels", "14-16"]
    elif area == "extent":
        b = to_wgs84(west).bounds
        args = ["--extent", ",".join(f"{v:.6f}" for v in b), "--extent-crs", "EPSG:4326"]
    elif area == "geojson":
        f = tmp_path / "west.geojson"
        f.write_text(shapely.to_geojson(to_wgs84(west)))
        args = ["--aoi", str(f)]
    else:
        f = tmp_path / "west.json"
        ring = [list(xy) for xy in west.exterior.coords]
        ring = ring if not shapely.LinearRing(ring).is_ccw else ring[::-1]  # Esri: clockwise
        f.write_text(
            json.dumps(
                {
                    "geometryType": "esriGeometryPolygon",
                    "spatialReference": {"wkid": 102100, "latestWkid": 3857},
                    "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID"}],
                    "features": [{"attributes": {"OBJECTID": 1}, "geometry": {"rings": [ring]}}],
                }
            )
        )
        args = ["--aoi", str(f)]
    move_buildings(built)
    for command in ("seed", "update"):
        code, out, err = cli(built, command, *args, "--dry-run", "--json")
        assert code == 0, err
        dry = json.loads(out)
        code, out, err = cli(built, command, *args, "--json")
        assert code == 0, err
        real = json.loads(out)
        assert real["partial"] and dry["partial"] == real["partial"]
        assert dry["metatiles"] == real["metatiles_rendered"] > 0
        for lv, d in dry["levels"].items():
            assert d["tiles"] == real["levels"][lv]["rendered"], (command, lv)
        assert sum(d["tiles"] for d in dry["levels"].values()) == real["tiles_rendered"]


def test_partial_seed_refreshes_only_its_area_and_keeps_the_snapshot(
    built: Path, tmp_path: Path
) -> None:
    old = read_cache(built)
    move_buildings(built)
    want = fresh_seed(built)
    west = west_half(built)
    f = tmp_path / "west.geojson"
    f.write_text(shapely.to_geojson(to_wgs84(west)))
    code, _out, err = cli(built, "seed", "--aoi", str(f), "--levels", "15-17")
    assert code == 0, err
    got = read_cache(built)
    inside = {
        a
        for a in set(got) | set(want) | set(old)
        if a[0] >= 15 and metatile_box(*a).intersection(west).area > 0
    }
    assert inside and {a: got.get(a) for a in inside} == {a: want.get(a) for a in inside}
    outside = (set(got) | set(old)) - inside
    assert {a: got.get(a) for a in outside} == {a: old.get(a) for a in outside}
    assert any(old.get(a) != want.get(a) for a in outside)  # there was more to do
    # the snapshot stayed: the next update still sees every change, and finishes the job
    assert changed(load_project(built)) > 0
    update(load_project(built), notify=False)
    assert read_cache(built) == want


def test_partial_update_leaves_the_rest_pending(built: Path) -> None:
    old = read_cache(built)
    move_buildings(built)
    want = fresh_seed(built)
    code, out, err = cli(built, "update", "--levels", "16-17", "--processes", "2", "-v", "--json")
    assert code == 0, err
    assert "with 2 process(es)" in err
    summary = json.loads(out)
    assert summary["partial"] == {"levels": [16, 17]}
    got = read_cache(built)
    for a in set(got) | set(want) | set(old):
        assert got.get(a) == (want.get(a) if a[0] >= 16 else old.get(a)), a
    project = load_project(built)
    assert read_journal(project)  # the dirty area is still journaled
    assert changed(project) > 0
    summary = update(project, notify=False)
    assert "partial" not in summary
    assert read_cache(built) == want
    assert not read_journal(project)


def test_update_checks_the_cache_before_it_journals_or_writes(built: Path) -> None:
    """Fault 7: a truncated bundle at the last level made update rewrite the levels above
    it, and journal, before failing; now it fails first and changes nothing."""
    project = load_project(built)
    move_buildings(built)
    bundle = next((project.cache_path / "_alllayers" / "L17").glob("*.bundle"))
    with open(bundle, "r+b") as fh:
        fh.truncate(bundle.stat().st_size // 2)
    before = tree(built)
    state_before = (project.state_dir / "state.sqlite").read_bytes()
    code, out, err = cli(built, "update")
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and bundle.name in lines[0], err
    assert tree(built) == before
    assert not read_journal(project)
    assert (project.state_dir / "state.sqlite").read_bytes() == state_before
    changes = detect_changes(project).as_dict()
    assert not changes["unfinished_run"]
