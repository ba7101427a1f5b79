"""The ArcGIS Pro toolbox (toolbox/TileDelta.pyt), run with the stand-in arcpy.

Each tool runs in a fresh interpreter whose import system refuses ``mapnik`` (as in Pro's
Python on Windows, which has no Mapnik wheel) and which finds the stand-in ``arcpy``
in ``tests/support``. The .pyt is Python: it is loaded with importlib machinery, and its
tools' ``getParameterInfo``/``updateMessages``/``execute`` are called as Pro calls them,
against the ArcGIS Server emulator (running in this process) over HTTP.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.arcpy.standin import make_aprx
from support.emulator import Emulator, make_service_definition
from test_core_without_mapnik import NO_MAPNIK

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.change import detect_changes
from tiledelta.config import ArcGISConfig
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import update_server
from tiledelta.publish.arcgis.publish import publish
from tiledelta.stores import read_compact_cache

HERE = Path(__file__).parent
PYT = HERE.parent / "toolbox" / "TileDelta.pyt"
USER, PASSWORD = "publisher", "t00lbox-Pa55!"

RUNNER = (
    NO_MAPNIK
    + """
import json
args = json.loads(sys.argv[1])
sys.path.insert(0, args["support"])

import importlib.machinery, importlib.util
loader = importlib.machinery.SourceFileLoader("TileDelta", args["pyt"])
spec = importlib.util.spec_from_loader("TileDelta", loader)
pyt = importlib.util.module_from_spec(spec)
loader.exec_module(pyt)

import arcpy, arcpy.standin
arcpy.standin.configure(echo=False, **args["pro"])
toolbox = pyt.Toolbox()
tools = [t() for t in toolbox.tools]
out = {"labels": [t.label for t in tools]}
tool = next(t for t in tools if t.label == args["tool"])
params = tool.getParameterInfo()
out["params"] = [[p.name, p.datatype, p.parameterType, p.direction] for p in params]
by_name = {p.name: p for p in params}
for name, value in args["values"].items():
    by_name[name].value = value
tool.updateParameters(params)
tool.updateMessages(params)
for p in params:
    p.check()
out["param_errors"] = {p.name: p.message for p in params if p.hasError()}
out["error"] = None
if not out["param_errors"]:
    try:
        tool.execute(params, None)
    except arcpy.ExecuteError as exc:
        out["error"] = str(exc)
out["messages"] = arcpy.standin.messages()
out["errors"] = arcpy.standin.messages("2")
out["progress"] = arcpy.standin.progress_log()
out["mapnik_imported"] = "mapnik" in sys.modules
print("RESULT" + json.dumps(out))
"""
)


def run_tool(tool: str, values: dict, pro: dict | None = None) -> dict:
    args = {
        "support": str(HERE / "support"),
        "pyt": str(PYT),
        "tool": tool,
        "values": values,
        "pro": pro or {},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCGIS_")}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT") :])
    assert out["mapnik_imported"] is False
    return out


def tiles_of(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        return store.get_many(list(store.iter_tiles()))


@pytest.fixture
def site(tmp_path: Path):
    """The sample county and its .aprx, seeded, published (cache included) on an emulator
    with a portal; the server's cache is marked current."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-14", force=True)
    make_aprx(county / "County.aprx", {"County": ["buildings", "roads"], "Overview": []})
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True).start()
    arcgis = ArcGISConfig(
        server=emu.url,
        portal=emu.portal_url,
        service="Tests/County",
        sd="County.sd",
        poll_seconds=0.05,
    )
    Project.load(county).updated(
        render={"processes": 1}, cache={"blank_tiles": "skip"}, arcgis=arcgis
    ).save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seed(load_project(county))
    make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=True)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    update_server(load_project(county), mark_current=True)
    (county / "County.sd").unlink()
    (county / ".env").unlink()  # inside Pro, the sign-in is Pro's
    yield county, emu
    emu.stop()


def pro_signed_in(emu: Emulator, county: Path) -> dict:
    referer = "https://pro.example/ArcGISPro"
    return {
        "current_project": str(county / "County.aprx"),
        "portal_url": emu.portal_url,
        "token": emu.issue_portal_token(referer),
        "referer": referer,
    }


def edit_data(county: Path, emu: Emulator) -> None:
    sample.apply_edits(county)
    served = emu.service("Tests", "County").path / "data" / "county.gpkg"
    shutil.copy2(county / "data" / "county.gpkg", served)


def test_the_toolbox_lists_its_tools_with_pro_parameter_types(site) -> None:
    county, emu = site
    out = run_tool("Check changes", {"project": str(county)}, pro_signed_in(emu, county))
    assert out["labels"] == ["Check changes", "Update server cache", "Publish", "Make tile package"]
    params = {p[0]: p[1:] for p in out["params"]}
    assert params["project"] == ["DEFolder", "Required", "Input"]
    assert params["map"] == ["GPMap", "Optional", "Input"]
    assert params["aprx"] == ["DEFile", "Optional", "Input"]
    assert out["error"] is None, out


def test_check_changes_per_layer_and_level(site) -> None:
    county, emu = site
    edit_data(county, emu)
    expected = detect_changes(load_project(county), target="arcgis").as_dict()
    out = run_tool(
        "Check changes", {"project": str(county), "map": "County"}, pro_signed_in(emu, county)
    )
    assert out["error"] is None, out
    for name, c in expected["layers"].items():
        if any(c.values()):
            assert any(m.startswith(f"{name}: {c['added']} added") for m in out["messages"])
    levels = [m for m in out["messages"] if m.startswith("level ")]
    assert levels and all("supertiles" in m for m in levels)
    assert out["messages"][-1].startswith("total: ")
    assert out["progress"][0]["call"] == "SetProgressor"
    assert out["progress"][-1]["call"] == "ResetProgressor"


def test_update_server_cache_with_pros_sign_in(site) -> None:
    county, emu = site
    edit_data(county, emu)
    n = len(emu.requests)
    out = run_tool(
        "Update server cache", {"project": str(county), "map": "County"}, pro_signed_in(emu, county)
    )
    assert out["error"] is None, out
    jobs = [j for j in emu.jobs.values() if "Manage Map Cache Tiles" in j.task]
    assert jobs and all(j.status == "esriJobSucceeded" for j in jobs)
    assert any("cache job(s) on the server" in m for m in out["messages"])
    labels = [p for p in out["progress"] if p["call"] == "SetProgressorLabel"]
    assert labels  # the progressor followed the server's messages
    assert not [r for r in emu.requests[n:] if r.params.get("username")]  # no password used
    # the server's snapshot advanced: nothing left to send
    assert not detect_changes(load_project(county), target="arcgis").any


def test_publish_from_the_current_map_keeps_the_cache(site) -> None:
    county, emu = site
    cache = emu.service("Tests", "County").cache_path
    before = tiles_of(cache)
    out = run_tool(
        "Publish",
        {"project": str(county), "map": "County", "update_cache": False},
        pro_signed_in(emu, county),
    )
    assert out["error"] is None, out
    assert any("through ArcGIS Pro" in m for m in out["messages"])
    assert any(m.startswith("draft: ") for m in out["messages"])
    assert tiles_of(cache) == before
    job = [j for j in emu.jobs.values() if "Publish" in j.task][-1]
    assert job.status == "esriJobSucceeded" and job.record["isCached"] is True


def test_publish_unsigned_or_to_a_missing_map_fails_in_one_line(site) -> None:
    county, emu = site
    aprx = str(county / "County.aprx")
    out = run_tool("Publish", {"project": str(county), "aprx": aprx}, {})
    assert len(out["errors"]) == 1 and "several maps" in out["errors"][0]
    out = run_tool("Publish", {"project": str(county), "aprx": aprx, "map_name": "County"}, {})
    assert out["error"] is not None  # not signed in, no password: nothing to sign in with
    assert len(out["errors"]) == 1 and "\n" not in out["errors"][0]
    assert "not signed in" in out["errors"][0] and "ARCGIS_USERNAME" in out["errors"][0]
    out = run_tool("Publish", {"project": str(county), "map": "County"}, {})  # not in Pro
    assert len(out["errors"]) == 1 and "current project" in out["errors"][0]
    out = run_tool(
        "Publish",
        {"project": str(county), "aprx": aprx, "map_name": "Nope"},
        pro_signed_in(emu, county),
    )
    assert len(out["errors"]) == 1 and "no map 'Nope'" in out["errors"][0]
    assert "County" in out["errors"][0]  # the maps it has are named


def test_make_tile_package_without_mapnik(site, tmp_path: Path) -> None:
    county, _emu = site
    out_file = tmp_path / "county.tpkx"
    out = run_tool(
        "Make tile package",
        {"project": str(county), "out": str(out_file), "levels": "13-14"},
        {"current_project": str(county / "County.aprx")},
    )
    assert out["error"] is None, out
    with zipfile.ZipFile(out_file) as zf:  # an independent reader: the package is a zip
        names = zf.namelist()
        root = json.loads(zf.read("p12/root.json")) if "p12/root.json" in names else None
        thumb = zf.read("thumbnail.png")
    assert any(n.endswith(".bundle") for n in names), names
    assert root is None or root.get("tileInfo")
    assert any("tiles written" in m for m in out["messages"])
    # Without Mapnik the thumbnail comes from the cached tiles: it shows the same map as
    # Mapnik's own drawing of the data (compared here, where Mapnik is installed).
    from PIL import Image, ImageChops, ImageStat

    from tiledelta.publish.thumbnail import render_thumbnail

    drawn = Image.open(io.BytesIO(render_thumbnail(load_project(county), (200, 133))))
    mosaic = Image.open(io.BytesIO(thumb))
    assert mosaic.size == drawn.size == (200, 133)
    diff = ImageChops.difference(mosaic.convert("RGB"), drawn.convert("RGB"))
    assert max(ImageStat.Stat(diff).mean) < 6, ImageStat.Stat(diff).mean
    assert max(ImageStat.Stat(mosaic.convert("L")).stddev) > 5  # not a blank picture


def test_bad_parameters_are_caught_before_execute(site, tmp_path: Path) -> None:
    county, emu = site
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_tool("Check changes", {"project": str(empty)}, pro_signed_in(emu, county))
    assert "tiledelta.toml" in out["param_errors"]["project"]
    out = run_tool(
        "Check changes",
        {"project": str(county), "target": "everywhere"},
        pro_signed_in(emu, county),
    )
    assert "target" in out["param_errors"]
