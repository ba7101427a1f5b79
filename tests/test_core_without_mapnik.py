"""The core runs where Mapnik is not installed (ArcGIS Pro on Windows has no Mapnik wheel).

Each check runs tiledelta in a fresh interpreter whose import system refuses ``mapnik``:
change detection, planning, ``info``, the server-side update against the emulator and
serving must work, no module may have imported Mapnik, and asking to render must give
one line naming the ``render`` extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.emulator import Emulator, make_service_definition

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.config import ArcGISConfig
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.publish.arcgis.publish import publish

USER, PASSWORD = "publisher", "no-mapnik-Pa55"

#: Put in front of every import: ``import mapnik`` fails as if it were not installed.
NO_MAPNIK = """
import sys

class _NoMapnik:
    def find_spec(self, name, path=None, target=None):
        if name == "mapnik" or name.startswith("mapnik."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoMapnik())
"""

CLI = (
    NO_MAPNIK
    + """
from tiledelta.cli import main
try:
    main(sys.argv[1:], standalone_mode=True)
finally:
    assert "mapnik" not in sys.modules, "mapnik was imported"
"""
)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA")}
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def site(tmp_path: Path):
    """The sample county, seeded, published on the emulator, the server marked current."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    arcgis = ArcGISConfig(server=emu.url, service="Tests/County", sd="County.sd", poll_seconds=0.05)
    Project.load(county).updated(render={"processes": 1}, arcgis=arcgis).save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seed(load_project(county))
    make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=True)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    update_server(load_project(county), mark_current=True)
    yield county, emu
    emu.stop()


def test_detection_planning_and_info_without_mapnik(site) -> None:
    county, _emu = site
    sample.apply_edits(county)
    status = run_cli("status", "--project", str(county), "--json")
    assert status.returncode == 0, status.stderr
    changes = json.loads(status.stdout)
    assert changes["rebuild"] is None
    assert sum(sum(c.values()) for c in changes["layers"].values()) > 0

    plan = run_cli("plan", "--project", str(county), "--json", "--aoi", str(county / "aoi.json"))
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["metatiles"] > 0 and planned["tiles"] > 0
    assert [Path(f).name for f in planned["aoi_files"]] == ["aoi.json", "aoi.esri.json"]
    assert all(Path(f).is_file() for f in planned["aoi_files"])

    info = run_cli("info", "--project", str(county), "--json")
    assert info.returncode == 0, info.stderr
    assert sum(d["tiles"] for d in json.loads(info.stdout)["levels"].values()) > 0


def test_server_update_without_mapnik(site) -> None:
    county, emu = site
    sample.apply_edits(county)
    served = emu.service("Tests", "County").path / "data" / "county.gpkg"
    served.write_bytes((county / "data" / "county.gpkg").read_bytes())
    out = run_cli("update", "--project", str(county), "--target", "arcgis", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["kind"] == "arcgis" and result["target"] == "arcgis"
    assert result["jobs"] and all(j["status"] == "esriJobSucceeded" for j in result["jobs"])
    # The server's snapshot advanced: nothing is left to send.
    again = run_cli("status", "--project", str(county), "--json")
    assert again.returncode == 0, again.stderr
    assert PASSWORD not in out.stdout + out.stderr


def test_local_rendering_names_the_extra(site) -> None:
    county, _emu = site
    sample.apply_edits(county)
    out = run_cli("update", "--project", str(county))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tiledelta[render]" in lines[0], out.stderr


def test_serving_without_mapnik(site) -> None:
    county, _emu = site
    code = (
        NO_MAPNIK
        + f"""
from starlette.testclient import TestClient
from tiledelta.project import Project
from tiledelta.serve.app import create_app
with TestClient(create_app(Project.load({str(county)!r}))) as client:
    info = client.get("/arcgis/rest/services/county/MapServer?f=json")
    assert info.status_code == 200, info.text
    assert "tileInfo" in info.json()
assert "mapnik" not in sys.modules
print("ok")
"""
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
