"""Local updates of a cache built from a Pro map (needs the render extra: the preview is
drawn with Mapnik). After a symbology edit, a layer removed from the map, or a data edit,
``update`` re-renders only the restyled layer's meta-tiles and the cache equals a fresh
``seed``, tile for tile."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_pro_maps import LEVELS, write_aprx, write_parcels, write_roads

from tiledelta.api import init_project, load_project, seed, update
from tiledelta.change import detect_changes
from tiledelta.stores import read_compact_cache

pytest.importorskip("mapnik", reason="the local preview is drawn with Mapnik (render extra)")


def tiles_of(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        return store.get_many(list(store.iter_tiles()))


def fresh_seed(project_dir: Path, tmp: Path) -> dict:
    copy = tmp / "fresh"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(project_dir, copy, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    seed(load_project(copy))
    return tiles_of(copy / "cache")


@pytest.fixture(params=["2.x", "3.x"])
def built(request, tmp_path: Path) -> tuple[Path, str]:
    """A project folder holding County.aprx and its data, seeded."""
    county = tmp_path / "county"
    (county / "data").mkdir(parents=True)
    write_parcels(county / "data" / "county.gdb")
    write_roads(county / "data" / "roads.gpkg")
    write_aprx(county / "County.aprx", request.param)
    init_project(county, map_path=county / "County.aprx", levels=LEVELS, force=True)
    seed(load_project(county))
    return county, request.param


def test_symbology_edit_updates_like_a_seed(built, tmp_path: Path) -> None:
    county, gen = built
    before = tiles_of(county / "cache")
    write_aprx(county / "County.aprx", gen, road_width=5.0)
    result = update(load_project(county))
    assert result["kind"] == "update"  # not a full rebuild
    after = tiles_of(county / "cache")
    assert after == fresh_seed(county, tmp_path)
    changed = {a for a in set(before) | set(after) if before.get(a) != after.get(a)}
    assert changed and {lv for lv, _r, _c in changed} <= {14, 15, 16}  # Roads' levels only
    assert not detect_changes(load_project(county)).any


def test_removing_a_layer_clears_its_tiles(built, tmp_path: Path) -> None:
    county, gen = built

    def drop_transport(docs: dict, ext: str) -> None:
        m = docs[f"map/map.{ext}"]
        m["layers"] = [u for u in m["layers"] if "transport" not in u]

    write_aprx(county / "County.aprx", gen, edit=drop_transport)
    project = load_project(county)
    ch = detect_changes(project)
    assert ch.rebuild is None and sorted(ch.restyled) == ["Roads"]
    update(project)
    assert tiles_of(county / "cache") == fresh_seed(county, tmp_path)


def test_data_edit_updates_like_a_seed(built, tmp_path: Path) -> None:
    county, _gen = built
    zoning = ["R1", "R2", "C1"] * 3
    zoning[4] = "C1"
    write_parcels(county / "data" / "county.gdb", zoning=zoning)
    write_roads(county / "data" / "roads.gpkg", speed=[1, 2, 3])  # SPEED is not drawn
    ch = detect_changes(load_project(county))
    assert ch.layers["Parcels"].changed and not ch.layers["Roads"].changed
    update(load_project(county))
    assert tiles_of(county / "cache") == fresh_seed(county, tmp_path)
