"""ArcGIS publishing and server-side cache updates, end to end against the emulator.

The emulator (tiledelta.arcgis.emulator) is a real HTTP server on 127.0.0.1 that follows
the ArcGIS REST contract and re-renders with Mapnik the tiles its cache jobs cover.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.emulator import Emulator, make_service_definition
from support.published import publish_on_emulator

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.change import detect_changes
from tiledelta.errors import Interrupted
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import in_window, update_server
from tiledelta.publish.arcgis.client import ArcGISError
from tiledelta.publish.arcgis.publish import advise, publish
from tiledelta.stores import read_compact_cache

USER, PASSWORD = "publisher", "s3cret-Pa55!"


def tiles_of(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        return store.get_many(list(store.iter_tiles()))


def fresh_seed_tiles(project_dir: Path, tmp: Path) -> dict:
    copy = tmp / "fresh"
    shutil.copytree(
        project_dir, copy, ignore=shutil.ignore_patterns("cache", ".tiledelta", "*.sd", ".env")
    )
    seed(load_project(copy))
    return tiles_of(copy / "cache")


@pytest.fixture
def site(tmp_path: Path):
    """The sample county published on an emulated server whose cache matches the data."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-16", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    # The emulated server stores no background-only tile, so neither does the local seed
    # it is compared with.
    publish_on_emulator(county, emu, USER, PASSWORD, cache={"blank_tiles": "skip"})
    yield county, emu
    emu.stop()


def edit_data(county: Path, emu: Emulator) -> None:
    """Edit the county's data; the server reads the same (registered) data."""
    sample.apply_edits(county)
    served = emu.service("Tests", "County").path / "data" / "county.gpkg"
    shutil.copy2(county / "data" / "county.gpkg", served)


def test_server_update_rebuilds_exactly_the_dirty_area(site, tmp_path: Path) -> None:
    county, emu = site
    server_cache = emu.service("Tests", "County").cache_path
    before = tiles_of(server_cache)
    edit_data(county, emu)
    lines: list[str] = []
    result = update_server(load_project(county), say=lines.append)

    assert result["jobs"] and all(j["status"] == "esriJobSucceeded" for j in result["jobs"])
    scheme = load_project(county).scheme
    jobs = [j for j in emu.jobs.values() if j.record.get("aoi")]
    assert len(jobs) == len(result["jobs"])
    for job in jobs:
        rec = job.record
        # One level per job, sent as its scale; the area is a polygon FeatureSet in 102100.
        assert len(rec["scales"]) == 1
        assert rec["levels"] == [
            lv for lv in scheme.levels if abs(scheme.lod(lv).scale - rec["scales"][0]) < 1e-6
        ]
        aoi = rec["aoi"] if isinstance(rec["aoi"], dict) else json.loads(rec["aoi"])
        assert aoi["geometryType"] == "esriGeometryPolygon"
        assert aoi["spatialReference"]["wkid"] == 102100
        assert rec["update_mode"] == "RECREATE_ALL_TILES"
    # Tokens went in the header, never as a parameter; no secret in the request log.
    authed = [r for r in emu.requests if r.token_via]
    assert authed and {r.token_via for r in authed} == {"header"}
    assert PASSWORD not in json.dumps([r.params for r in emu.requests])
    # The server cache now equals a full rebuild of the edited data...
    after = tiles_of(server_cache)
    assert after == fresh_seed_tiles(county, tmp_path)
    # ...and only tiles inside the jobs' areas were touched.
    touched = {tuple(t) for j in jobs for t in j.record["tiles"]}
    changed = {a for a in set(before) | set(after) if before.get(a) != after.get(a)}
    assert changed and changed <= touched
    assert any("server:" in line for line in lines)
    assert not detect_changes(load_project(county), target="arcgis").any


def test_failed_job_keeps_the_snapshot_and_a_rerun_completes(site, tmp_path: Path) -> None:
    county, emu = site
    edit_data(county, emu)
    emu.faults.fail_next_jobs = 1
    with pytest.raises(ArcGISError, match="ended esriJobFailed") as err:
        update_server(load_project(county), say=lambda m: None)
    assert "snapshot was not advanced" in str(err.value)
    assert detect_changes(load_project(county), target="arcgis").any
    update_server(load_project(county), say=lambda m: None)
    assert not detect_changes(load_project(county), target="arcgis").any
    assert tiles_of(emu.service("Tests", "County").cache_path) == fresh_seed_tiles(county, tmp_path)


def test_http_500s_expired_tokens_and_busy_server_are_weathered(site) -> None:
    county, emu = site
    edit_data(county, emu)
    emu.faults.http_500 = 2
    emu.expire_tokens_now()
    emu.faults.busy = 2
    result = update_server(load_project(county), say=lambda m: None)
    assert result["jobs"]
    stats = [r for r in emu.requests if r.path.endswith("/statistics")]
    assert len(stats) >= 3


def test_busy_server_with_stop_policy_refuses(site) -> None:
    county, emu = site
    project = Project.load(county)
    project = project.updated(arcgis={"when_busy": "stop"})
    project.save()
    edit_data(county, emu)
    emu.faults.busy = -1
    with pytest.raises(ArcGISError, match="busy"):
        update_server(load_project(county), say=lambda m: None)
    assert detect_changes(load_project(county), target="arcgis").any


def _cli(county: Path, *args: str, env_password: str | None = None):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCGIS_")}
    if env_password is not None:
        env["ARCGIS_USERNAME"], env["ARCGIS_PASSWORD"] = USER, env_password
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tiledelta.cli",
            "update",
            "--target",
            "arcgis",
            "--project",
            str(county),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_credentials_service_and_server_give_one_clean_line(site) -> None:
    county, emu = site
    edit_data(county, emu)
    wrong = "WRONG-pw-123"
    cases = []
    cases.append(("password", _cli(county, env_password=wrong)))
    project = Project.load(county)
    project = project.updated(arcgis={"service": "Tests/Nope"})
    project.save()
    cases.append(("not found", _cli(county)))
    project = project.updated(arcgis={"service": "Tests/County"})
    project = project.updated(arcgis={"server": f"http://127.0.0.1:{_free_port()}/arcgis"})
    project.save()
    cases.append(("cannot reach", _cli(county)))
    project = project.updated(arcgis={"server": emu.url})
    project.save()
    emu.faults.reject_tokens = True
    cases.append(("token", _cli(county)))
    for expect, out in cases:
        assert out.returncode == 1, (expect, out.stdout, out.stderr)
        err = out.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tiledelta: error:"), (expect, out.stderr)
        assert expect.lower() in err[0].lower(), (expect, err[0])
        for secret in (PASSWORD, wrong):
            assert secret not in out.stdout + out.stderr
    assert detect_changes(load_project(county), target="arcgis").any


def test_quiet_hours_window() -> None:
    assert in_window("22:00-06:00", dt.time(23, 30))
    assert in_window("22:00-06:00", dt.time(5, 59))
    assert not in_window("22:00-06:00", dt.time(12, 0))
    assert in_window("09:00-17:00", dt.time(9, 0))
    assert not in_window("09:00-17:00", dt.time(17, 0))
    assert in_window(None)
    with pytest.raises(ArcGISError, match="HH:MM"):
        in_window("late at night")


def test_outside_quiet_hours_nothing_is_sent(site) -> None:
    county, emu = site
    now = dt.datetime.now()
    start = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=3)).strftime("%H:%M")
    project = Project.load(county)
    project = project.updated(arcgis={"quiet_hours": f"{start}-{end}"})
    project.save()
    edit_data(county, emu)
    n = len(emu.jobs)
    with pytest.raises(ArcGISError, match="quiet hours"):
        update_server(load_project(county), say=lambda m: None)
    assert len(emu.jobs) == n


def test_publish_overwrites_and_keeps_the_cache(site) -> None:
    county, emu = site
    cache = emu.service("Tests", "County").cache_path
    before = tiles_of(cache)
    make_service_definition(county, county / "County.sd", "Tests", "County", keep_cache=True)
    result = publish(load_project(county), say=lambda m: None, update_cache=False)
    assert result["published"] == "Tests/County"
    assert tiles_of(cache) == before


def test_field_failures_get_advice() -> None:
    assert "Description" in advise("ERROR 001117: Map has no description")
    assert "register" in advise("00231: Layer's data source is not registered with the server")
    assert "delete it" in advise("Output .sd file already exists")


def test_ctrl_c_while_waiting_cancels_the_server_job(site) -> None:
    county, emu = site
    edit_data(county, emu)
    emu.faults.slow_job_seconds = 10

    def interrupt(message: str) -> None:
        if "server:" in message:  # the job is running on the server: press Ctrl-C
            raise KeyboardInterrupt

    # The run lifecycle turns Ctrl-C into Interrupted (exit code 130) after the job's
    # cancel went out.
    with pytest.raises(Interrupted):
        update_server(load_project(county), say=interrupt)
    jobs = [j for j in emu.jobs.values() if "Manage Map Cache Tiles" in j.task]
    assert jobs
    assert jobs[-1].wait(timeout=15)
    assert jobs[-1].status == "esriJobCancelled"
    # Nothing advanced: the next run plans the same work again.
    assert detect_changes(load_project(county), target="arcgis").any
