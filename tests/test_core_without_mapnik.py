"""The core runs where Mapnik is not installed (ArcGIS Pro on Windows has no Mapnik wheel).

Each check runs tiledelta in a fresh interpreter whose import system refuses ``mapnik``:
change detection, planning, ``info``, the server-side update against the emulator and
serving must work, no module may have imported Mapnik, and asking to render must give
one line naming the ``render`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.emulator import Emulator, make_service_definition

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.config import ArcGISConfig
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.publish.arcgis.publish import publish
from tiledelta.render import mapnik_installed

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


def write_tiles(project: Project, level: int) -> int:
    """A cache of flat PNG tiles over the data (the no-Mapnik venv cannot seed one)."""
    import io

    from PIL import Image

    from tiledelta.grid import tile_range
    from tiledelta.sources import data_extent, read_layers
    from tiledelta.stores import open_project_store

    ext = data_extent(read_layers(project))
    r0, r1, c0, c1 = tile_range(project.scheme, level, ext)
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 180, 140)).save(buf, "PNG")
    tiles = [(level, r, c, buf.getvalue()) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
    with open_project_store(project, create=True) as store:
        store.put_many(tiles)
    return len(tiles)


@pytest.fixture
def site(tmp_path: Path):
    """The sample county published on the emulator, the server marked current.

    With Mapnik (the main venv) the county is seeded and the service carries that cache;
    without it (``.ci/run``'s core venv) nothing can be drawn locally: the local cache
    holds flat tiles (:func:`write_tiles`), the service is published without a cache and
    the emulator draws stand-in tiles.
    """
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    arcgis = ArcGISConfig(server=emu.url, service="Tests/County", sd="County.sd", poll_seconds=0.05)
    Project.load(county).updated(render={"processes": 1}, arcgis=arcgis).save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seeded = mapnik_installed()
    if seeded:
        seed(load_project(county))
    else:  # a local cache to package, serve and count (flat tiles at level 14)
        write_tiles(load_project(county), 14)
    make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=seeded)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    update_server(load_project(county), mark_current=True)
    yield county, emu, seeded
    emu.stop()


def test_detection_planning_and_info_without_mapnik(site) -> None:
    county, _emu, seeded = site
    sample.apply_edits(county)
    status = run_cli("status", "--project", str(county), "--json")
    assert status.returncode == 0, status.stderr
    changes = json.loads(status.stdout)
    if seeded:  # the local cache was built: the edits are found
        assert changes["rebuild"] is None
        assert sum(sum(c.values()) for c in changes["layers"].values()) > 0
    else:  # nothing was ever built locally
        assert changes["rebuild"] == "no build yet"

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
    county, emu, _seeded = site
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


@pytest.mark.parametrize(
    "command",
    [
        ["update"],
        ["update", "--target", "local"],
        ["seed"],
        ["thumbnail", "--out", "thumb.png"],  # without a local cache
        ["demo", "demo-county"],
    ],
    ids=lambda c: "-".join(c),
)
def test_rendering_names_the_extra_and_writes_nothing(site, command: list[str]) -> None:
    county, _emu, _seeded = site
    sample.apply_edits(county)
    if command[0] == "thumbnail":  # with a local cache it is put together from the tiles
        shutil.rmtree(county / "cache", ignore_errors=True)
    before = sorted(p.relative_to(county) for p in county.rglob("*"))
    args = command if command[0] == "demo" else [*command, "--project", str(county)]
    out = run_cli(*args, cwd=county)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "tiledelta[render]"' in lines[0], out.stderr
    assert sorted(p.relative_to(county) for p in county.rglob("*")) == before  # nothing new


def test_doctor_names_the_extra_once(site) -> None:
    county, _emu, _seeded = site
    out = run_cli("doctor", "--project", str(county))
    assert out.returncode == 1
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL  mapnik:"), out.stdout
    assert "tiledelta[render]" in failed[0]
    assert any(line.startswith("ok    style:") for line in out.stdout.splitlines()), out.stdout


def test_plan_for_the_server_without_mapnik(site) -> None:
    county, emu, _seeded = site
    sample.apply_edits(county)
    jobs = len(emu.jobs)
    out = run_cli("plan", "--project", str(county), "--target", "arcgis", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["supertile"]["px"] == 2048 and plan["tiles"] >= plan["dirty_tiles"] > 0
    assert plan["supertiles"] > 0 and len(emu.jobs) == jobs  # nothing sent


def test_publish_and_package_without_mapnik(site, tmp_path: Path) -> None:
    county, emu, _seeded = site
    sample.apply_edits(county)
    served = emu.service("Tests", "County").path / "data" / "county.gpkg"
    out = run_cli("publish", "--project", str(county), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["published"] == "Tests/County"
    assert served.is_file()
    pkg = tmp_path / "county.tpkx"
    out = run_cli("package", "--project", str(county), "--out", str(pkg), "--json")
    assert out.returncode == 0, out.stderr
    with zipfile.ZipFile(pkg) as zf:
        names = zf.namelist()
    assert "root.json" in names and any(n.endswith(".bundle") for n in names)


def test_serving_without_mapnik(site) -> None:
    county, _emu, _seeded = site
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
