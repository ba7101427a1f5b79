"""Full builds end to end: sample county → Mapnik → caches that GDAL and our readers open."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import set_processes
from PIL import Image

from tiledelta.api import init_project, load_project, seed
from tiledelta.grid import tile_bounds
from tiledelta.project import Project
from tiledelta.stores import open_project_store
from tiledelta.stores.compact import scheme_from_conf_xml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_seed_compact_cache_reads_back_in_gdal(sample_project: Path) -> None:
    result = seed(load_project(sample_project))
    assert result["tiles_written"] > 100
    project = Project.load(sample_project)
    with open_project_store(project, create=False) as store:
        counts = store.count()
        assert sorted(counts) == [13, 14, 15, 16, 17]
        # a seed stores its written tiles and the blank copies (render/stats.py: COUNTS)
        assert sum(counts.values()) == result["tiles_written"] + result["tiles_blank_stored"]
        # A tile at the finest level, decoded, equals GDAL's ESRIC read of the same window.
        level = 17
        tiles = sorted(store.iter_tiles(level))
        lv, row, col = tiles[len(tiles) // 2]
        ours = decode(store.get(lv, row, col))
    with rasterio.open(sample_project / "cache" / "conf.xml") as ds:
        assert ds.driver == "ESRIC"
        assert ds.width == 256 * 2**level  # full resolution is the top configured level
        px = ds.read(window=((row * 256, row * 256 + 256), (col * 256, col * 256 + 256)))
    assert np.array_equal(np.moveaxis(px, 0, -1), ours)
    # The tile is not background only: something was drawn.
    assert len(np.unique(ours.reshape(-1, 4), axis=0)) > 1


def test_seed_json_and_info_json(sample_project: Path) -> None:
    out = cli("seed", "--project", str(sample_project), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in ("cache", "levels", "tiles_rendered", "tiles_written", "seconds"):
        assert key in res
    assert set(res["levels"]) == {"13", "14", "15", "16", "17"}
    # per level, the seed's counts: "tiles" are the rendered ones, as in an update
    assert sum(v["tiles"] for v in res["levels"].values()) == res["tiles_rendered"]
    assert sum(v["written"] for v in res["levels"].values()) == res["tiles_written"]
    info = json.loads(cli("info", "--project", str(sample_project), "--json").stdout)
    assert {k: v["tiles"] for k, v in info["levels"].items()} == {
        k: v["written"] + v["blank_stored"] for k, v in res["levels"].items()
    }
    assert set(info["layers"]) == {"water", "parcels", "buildings", "roads"}
    assert info["layers"]["roads"]["attributes"] == ["name"]


@pytest.mark.parametrize("kind", ["mbtiles", "xyz"])
def test_same_seed_into_mbtiles_and_xyz(sample_project: Path, kind: str, tmp_path: Path) -> None:
    # The same tiles in every store: background-only tiles are kept in none of them.
    Project.load(sample_project).updated(cache={"blank_tiles": "skip"}).save()
    seed(load_project(sample_project))
    with open_project_store(Project.load(sample_project), create=False) as compact:
        reference = {a: compact.get(*a) for a in compact.iter_tiles()}
    other = tmp_path / "other"
    import shutil

    shutil.copytree(sample_project, other, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    init_project(other, style=other / "style.xml", levels="13-17", cache_kind=kind, force=True)
    set_processes(other, 2)
    seed(load_project(other))
    project = Project.load(other)
    with open_project_store(project, create=False) as store:
        got = {a: store.get(*a) for a in store.iter_tiles()}
    assert got == reference
    if kind == "mbtiles":
        with rasterio.open(project.cache_path) as ds:
            assert ds.driver == "MBTiles"
            assert ds.count == 4
    else:
        lv, row, col = next(iter(reference))
        f = project.cache_path / str(lv) / str(col) / f"{row}.png"
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_state_plane_scheme_builds_and_conf_xml_round_trips(
    sample_project: Path,
) -> None:
    scheme_file = EXAMPLES / "schemes" / "oregon_north_2913.json"
    init_project(
        sample_project,
        style=sample_project / "style.xml",
        levels="6-9",
        scheme=str(scheme_file),
        force=True,
    )
    project = load_project(sample_project)
    assert project.scheme.crs.upper() in ("EPSG:2913",)
    result = seed(project)
    assert result["tiles_written"] > 0
    conf = project.cache_path / "conf.xml"
    back = scheme_from_conf_xml(conf)
    assert back.same_grid(project.scheme)
    with open_project_store(project, create=False) as store:
        lv, row, col = next(store.iter_tiles(9))
        img = decode(store.get(lv, row, col))
    assert img.shape == (256, 256, 4)
    # The tile's extent is in feet, inside Oregon North's range.
    b = tile_bounds(project.scheme, lv, row, col)
    assert 7_000_000 < b.xmin < 7_600_000


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("tiledelta: error:")
    return lines[0]


def _break(root: Path, old: str, new: str) -> None:
    style = root / "style.xml"
    style.write_text(style.read_text().replace(old, new), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("data/county.gpkg", "data/missing.gpkg"), "does not exist"),
        (
            (
                '<Parameter name="layer">roads</Parameter>',
                '<Parameter name="layer">highways</Parameter>',
            ),
            "highways",
        ),
        (("DejaVu Sans Book", "No Such Font"), "No Such Font"),
        (('fill="#aad3df"', 'fill="not-a-colour"'), "Mapnik cannot load the style"),
        (("<Map ", "<Mapp "), "not valid XML"),
        (("[name]", "[street_label]"), "street_label"),
    ],
)
def test_bad_input_one_line_and_nothing_written(sample_project: Path, edit, expect) -> None:
    _break(sample_project, *edit)
    out = cli("seed", "--project", str(sample_project))
    line = _one_line_error(out)
    assert expect in line
    assert not (sample_project / "cache").exists()
    assert not (sample_project / ".tiledelta" / "state.sqlite").exists()


def test_levels_outside_scheme_and_unknown_crs(sample_project: Path, tmp_path: Path) -> None:
    toml = sample_project / "tiledelta.toml"
    toml.write_text(toml.read_text().replace('levels = "13-17"', 'levels = "20-25"'))
    assert "outside the scheme" in _one_line_error(cli("seed", "--project", str(sample_project)))
    bad = tmp_path / "scheme.json"
    info = json.loads((EXAMPLES / "schemes" / "oregon_north_2913.json").read_text())
    info["tileInfo"]["spatialReference"] = {"wkid": 999999}
    info.pop("fullExtent", None)
    bad.write_text(json.dumps(info))
    toml.write_text(
        toml.read_text()
        .replace('levels = "20-25"', 'levels = "5-6"')
        .replace('scheme = "web-mercator"', f'scheme = "{bad}"')
    )
    assert "999999" in _one_line_error(cli("seed", "--project", str(sample_project)))


def test_cache_with_another_scheme_is_refused(sample_project: Path) -> None:
    seed(load_project(sample_project))
    before = sorted(p.name for p in (sample_project / "cache" / "_alllayers").iterdir())
    init_project(
        sample_project,
        style=sample_project / "style.xml",
        levels="6-9",
        scheme=str(EXAMPLES / "schemes" / "oregon_north_2913.json"),
        force=True,
    )
    line = _one_line_error(cli("seed", "--project", str(sample_project)))
    assert "different tiling scheme" in line
    assert sorted(p.name for p in (sample_project / "cache" / "_alllayers").iterdir()) == before


def test_init_with_sources_writes_a_default_style_that_renders(
    sample_template: Path, tmp_path: Path
) -> None:
    gpkg = sample_template / "data" / "county.gpkg"
    out = cli("init", str(tmp_path / "p"), "--source", str(gpkg), "--levels", "15-16")
    assert out.returncode == 0, out.stderr
    project = load_project(tmp_path / "p")
    names = [lyr.name for lyr in project.style.layers]
    assert names == ["water", "roads", "parcels", "buildings"]
    # Roads and water have a name field, so the default style labels them.
    assert project.style.layer("roads").attributes == ("name",)
    project = project.updated(render={"processes": 1})
    assert seed(project)["tiles_written"] > 0
