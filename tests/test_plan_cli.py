"""`tiledelta status` and `tiledelta plan` on the command line: JSON shapes and the dirty area."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import shapely

from tiledelta import sample
from tiledelta.api import load_project, seed, update


def cli(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", *args], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.needs_mapnik  # seeds the local cache first
def test_status_plan_and_aoi_match_what_update_does(sample_project: Path, tmp_path: Path) -> None:
    seed(load_project(sample_project))
    status = cli("status", "--project", str(sample_project), "--json")
    assert all(v == {"added": 0, "modified": 0, "deleted": 0} for v in status["layers"].values())
    sample.apply_edits(sample_project)
    status = cli("status", "--project", str(sample_project), "--json")
    assert status["layers"]["parcels"] == {"added": 3, "modified": 0, "deleted": 0}
    assert status["layers"]["buildings"]["deleted"] == 1
    aoi = tmp_path / "dirty.geojson"
    plan = cli("plan", "--project", str(sample_project), "--json", "--aoi", str(aoi))
    # plan writes nothing to the cache or the snapshot
    assert cli("status", "--project", str(sample_project), "--json") == status

    gj = json.loads(aoi.read_text())
    esri = json.loads((tmp_path / "dirty.esri.json").read_text())
    assert esri["geometryType"] == "esriGeometryPolygon"
    assert esri["spatialReference"]["wkid"] == 102100
    area = shapely.from_geojson(json.dumps(gj["features"][0]["geometry"]))
    rings = [shapely.Polygon(f["geometry"]["rings"][0]) for f in esri["features"]]
    assert abs(shapely.union_all(rings).area - area.area) < 1e-6 * area.area
    # The dirty area covers the new parcels (east of town).
    x = sample.X0 + sample.NX * (sample.BLOCK + sample.STREET) + 2 * sample.STREET
    assert area.contains(shapely.Point(x + 40, sample.Y0 + sample.STREET + 20))

    result = update(load_project(sample_project))
    assert {k: v["tiles"] for k, v in plan["levels"].items()} == {
        k: v["tiles"] for k, v in result["levels"].items()
    }
    assert plan["tiles"] == result["tiles_rendered"]
