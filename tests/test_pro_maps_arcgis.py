"""A project from a Pro map, published on the ArcGIS Server emulator: the server-side update
sends areas of interest for an edit to a field the map draws, and none for another field.

The emulator (tests/support/emulator, docs/emulator.md) renders its cache jobs with
tiledelta's local renderer, so this needs the render extra (Mapnik).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import shapely
from support.emulator import Emulator
from support.published import publish_on_emulator
from test_core_without_mapnik import run_cli
from test_pro_maps import LEVELS, X0, Y0, write_aprx, write_parcels, write_roads

from tiledelta.api import init_project, load_project
from tiledelta.change import detect_changes
from tiledelta.publish.arcgis.cache import update_server

USER, PASSWORD = "publisher", "s3cret-Pa55!"


@pytest.fixture
def pro_site(tmp_path: Path):
    pytest.importorskip("mapnik", reason="the emulator renders its cache jobs with Mapnik")
    county = tmp_path / "county"
    (county / "data").mkdir(parents=True)
    write_parcels(county / "data" / "county.gdb")
    write_roads(county / "data" / "roads.gpkg")
    write_aprx(county / "County.aprx", "2.x")
    init_project(county, map_path=county / "County.aprx", levels=LEVELS, force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    publish_on_emulator(county, emu, USER, PASSWORD, cache={"blank_tiles": "skip"})
    yield county, emu
    emu.stop()


def serve_edit(county: Path, emu: Emulator) -> None:
    """The server reads its own (registered) copy of the data: give it the edit."""
    served = emu.service("Tests", "County").path / "data" / "county.gdb"
    shutil.rmtree(served)
    shutil.copytree(county / "data" / "county.gdb", served)


def aoi_shape(record: dict) -> shapely.Geometry:
    aoi = record["aoi"] if isinstance(record["aoi"], dict) else json.loads(record["aoi"])
    assert aoi["spatialReference"]["wkid"] == 102100
    rings = [r for f in aoi["features"] for r in f["geometry"]["rings"]]
    return shapely.union_all([shapely.Polygon(r) for r in rings])


def test_server_update_follows_the_fields_the_map_draws(pro_site) -> None:
    county, emu = pro_site
    # an edit to NOTES, which the map neither draws nor labels: nothing is sent
    write_parcels(county / "data" / "county.gdb", notes=[f"edited {i}" for i in range(9)])
    serve_edit(county, emu)
    before = len(emu.jobs)
    result = update_server(load_project(county), say=lambda m: None)
    assert result["jobs"] == [] and len(emu.jobs) == before

    # parcel 4's ZONING (the unique value field): one job per level, each area covers it
    zoning = ["R1", "R2", "C1"] * 3
    zoning[4] = "C1"
    write_parcels(
        county / "data" / "county.gdb", zoning=zoning, notes=[f"edited {i}" for i in range(9)]
    )
    serve_edit(county, emu)
    result = update_server(load_project(county), say=lambda m: None)
    assert result["jobs"] and all(j["status"] == "esriJobSucceeded" for j in result["jobs"])
    jobs = [j for j in list(emu.jobs.values())[before:] if j.record.get("aoi")]
    project = load_project(county)
    assert sorted(lv for j in jobs for lv in j.record["levels"]) == project.levels
    edited = shapely.box(X0 + 400, Y0 + 400, X0 + 700, Y0 + 700)
    for job in jobs:
        assert aoi_shape(job.record).covers(edited)
    assert not detect_changes(project, target="arcgis").any

    # parcel 7's OWNER (labelled, from 1:20,000 in): the label field is drawn too
    owner = [f"Owner {i}" for i in range(9)]
    owner[7] = "New Owner"
    write_parcels(
        county / "data" / "county.gdb",
        zoning=zoning,
        owner=owner,
        notes=[f"edited {i}" for i in range(9)],
    )
    serve_edit(county, emu)
    n = len(emu.jobs)
    result = update_server(load_project(county), say=lambda m: None)
    assert result["jobs"]
    label_edit = shapely.box(X0 + 400, Y0 + 800, X0 + 700, Y0 + 1100)
    for job in list(emu.jobs.values())[n:]:
        if job.record.get("aoi"):
            assert aoi_shape(job.record).covers(label_edit)


def test_the_server_path_needs_no_mapnik(pro_site, tmp_path: Path) -> None:
    """init, status, plan and update --target arcgis from the .aprx with Mapnik blocked."""
    county, emu = pro_site
    out = run_cli("init", str(tmp_path / "again"), "--map", str(county / "County.aprx"))
    assert out.returncode == 0, out.stderr
    assert "layer 'Parcels'" in out.stdout and "not used for change detection" in out.stdout

    zoning = ["R1", "R2", "C1"] * 3
    zoning[4] = "C1"
    write_parcels(county / "data" / "county.gdb", zoning=zoning)
    serve_edit(county, emu)
    out = run_cli("plan", "--project", str(county), "--target", "arcgis", "--json")
    assert out.returncode == 0, out.stderr
    planned = json.loads(out.stdout)
    assert planned["jobs"] == len(load_project(county).levels)
    out = run_cli("update", "--project", str(county), "--target", "arcgis", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobs"]
    out = run_cli("status", "--project", str(county))
    assert out.returncode == 0, out.stderr
    assert "Parcels" in out.stdout
