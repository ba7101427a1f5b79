"""GP job polling against the emulator: every terminal state ends the poll at once with
its own one-line message, cancelling and unknown states are followed for a bounded time,
messages are asked for, sites without CachingControllers fall back to CachingTools, and
an admin POST refused for its token is retried once with the token in the form body."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.emulator import Emulator

from tiledelta.credentials import Secret
from tiledelta.publish.arcgis.client import CACHE_TASKS, JOB_END, ArcGISClient, ArcGISError

USER, PASSWORD = "publisher", "s3cret-Jobs-Pa55!"
CACHE = CACHE_TASKS[0]


@pytest.fixture
def emu(tmp_path: Path):
    with Emulator(tmp_path / "server", username=USER, password=PASSWORD) as e:
        yield e


@pytest.fixture
def client(emu: Emulator):
    with ArcGISClient(emu.url, USER, Secret(PASSWORD), warn=lambda m: None) as c:
        yield c


def _submit(client: ArcGISClient, task: str = CACHE) -> str:
    # The service does not exist: a job that really ran would fail; injected ends skip work.
    return client.submit(task, service_url="Tests/None:MapServer", levels="1", thread_count="1")


@pytest.mark.parametrize(
    "state",
    [
        "esriJobFailed",
        "esriJobTimedOut",
        "esriJobCancelled",
        "esriJobDeleting",
        "esriJobDeleted",
        "expectedFailure",
    ],
)
def test_each_terminal_state_ends_the_poll_with_its_message(emu, client, state) -> None:
    emu.faults.end_next_jobs = [state]
    job = _submit(client)
    t0 = time.monotonic()
    status = client.wait_job(CACHE, job, poll=0.05, timeout=600, settle=600)
    took = time.monotonic() - t0
    assert took < 5, f"{state} was polled for {took:.1f} s"
    assert status["jobStatus"] == state
    summary = status["summary"]
    assert "\n" not in summary
    assert f"ended {state} ({JOB_END[state]})" in summary
    assert "injected" in summary.lower()  # the server's own last message is shown
    polls = [r for r in emu.requests if r.path.endswith(f"/jobs/{job}")]
    assert polls and all(r.params.get("returnMessages") == "true" for r in polls)


def test_cancelling_is_followed_until_cancelled(emu, client) -> None:
    emu.faults.end_next_jobs = ["esriJobCancelling"]
    emu.faults.cancelling_seconds = 0.5
    job = _submit(client)
    seen: list[str] = []
    status = client.wait_job(CACHE, job, poll=0.05, timeout=600, settle=30, on_message=seen.append)
    assert status["jobStatus"] == "esriJobCancelled"
    assert any("Cancelling" in m for m in seen)
    assert "ended esriJobCancelled" in status["summary"]


@pytest.mark.parametrize("state", ["esriJobCancelling", "esriJobNoSuchState"])
def test_a_job_stuck_in_cancelling_or_an_unknown_state_is_left_after_settle(
    emu, client, state
) -> None:
    emu.faults.end_next_jobs = [state]
    emu.faults.cancelling_seconds = -1  # for ever
    job = _submit(client)
    t0 = time.monotonic()
    status = client.wait_job(CACHE, job, poll=0.05, timeout=600, settle=0.5)
    assert time.monotonic() - t0 < 5
    assert status["jobStatus"] == state
    assert "settle_seconds" in status["summary"] and state in status["summary"]


def test_the_client_timeout_cancels_the_job(emu, client) -> None:
    emu.faults.end_next_jobs = ["esriJobExecutingForEver"]
    job = _submit(client)
    status = client.wait_job(CACHE, job, poll=0.05, timeout=0.3, settle=600)
    assert status["timedOutLocally"] and "job_timeout_minutes" in status["summary"]
    assert any(r.path.endswith(f"/jobs/{job}/cancel") for r in emu.requests)


def test_a_site_without_caching_controllers_uses_caching_tools(emu, client) -> None:
    emu.faults.no_caching_controllers = True
    task = client.cache_task(CACHE)
    assert task == "System/CachingTools/GPServer/Manage Map Cache Tiles"
    emu.faults.end_next_jobs = ["esriJobFailed"]
    job = _submit(client, task)
    assert emu.jobs[job].service == "CachingTools"
    assert client.wait_job(task, job, poll=0.05)["jobStatus"] == "esriJobFailed"
    # With both gone, one clear line.
    with pytest.raises(ArcGISError, match="has no Manage Map Cache Tiles x task under"):
        client.cache_task("System/CachingControllers/GPServer/Manage Map Cache Tiles x")


def test_an_admin_post_refused_for_its_token_is_retried_with_the_token_in_the_body(
    emu, client
) -> None:
    client.token()  # signed in
    signins = sum(r.path.endswith("generateToken") for r in emu.requests)
    emu.faults.admin_header_token_498 = 1
    body = client.post("admin/uploads/register", itemName="County.sd")
    assert body["status"] == "success"
    posts = [r for r in emu.requests if r.path.endswith("/admin/uploads/register")]
    assert [r.token_via for r in posts] == ["header", "param"]
    assert sum(r.path.endswith("generateToken") for r in emu.requests) == signins + 1
    fresh = client.token().get()
    assert all(fresh not in r.path for r in emu.requests)  # never in a URL
    assert posts[1].params["token"] == "***"  # it went as a form field (redacted in the log)
    # Refused again with the fresh token in the body: one line, no third try.
    emu.faults.reject_tokens = True
    with pytest.raises(ArcGISError, match="refused a fresh token"):
        client.post("admin/uploads/register", itemName="County.sd")
    assert PASSWORD not in repr([r.params for r in emu.requests])


@pytest.mark.needs_mapnik  # seeds the local cache first
def test_a_server_update_ends_with_the_job_state_line_and_falls_back_to_caching_tools(
    tmp_path: Path,
) -> None:
    from support.emulator import make_service_definition

    from tiledelta import sample
    from tiledelta.api import init_project, load_project, seed
    from tiledelta.change import detect_changes
    from tiledelta.config import ArcGISConfig
    from tiledelta.project import Project
    from tiledelta.publish.arcgis.cache import update_server
    from tiledelta.publish.arcgis.publish import publish

    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-14", force=True)
    with Emulator(tmp_path / "server", username=USER, password=PASSWORD) as emu:
        project = Project.load(county).updated(render={"processes": 1})
        cfg = ArcGISConfig(
            server=emu.url, service="Tests/County", sd="County.sd", poll_seconds=0.05
        )
        project.updated(arcgis=cfg).save()
        (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
        seed(load_project(county))
        make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=True)
        publish(load_project(county), say=lambda m: None, update_cache=False)
        update_server(load_project(county), mark_current=True)
        sample.apply_edits(county)
        served = emu.service("Tests", "County").path / "data" / "county.gpkg"
        served.write_bytes((county / "data" / "county.gpkg").read_bytes())
        emu.faults.no_caching_controllers = True
        emu.faults.end_next_jobs = ["esriJobTimedOut"]
        t0 = time.monotonic()
        with pytest.raises(ArcGISError) as err:
            update_server(load_project(county), say=lambda m: None)
        assert time.monotonic() - t0 < 30
        line = str(err.value)
        assert "\n" not in line and "ended esriJobTimedOut" in line and "snapshot" in line
        assert detect_changes(load_project(county), target="arcgis").any
        update_server(load_project(county), say=lambda m: None)  # the rerun completes
        assert not detect_changes(load_project(county), target="arcgis").any
        cache_jobs = [j for j in emu.jobs.values() if j.task == "Manage Map Cache Tiles"]
        assert cache_jobs and {j.service for j in cache_jobs} == {"CachingTools"}
        assert all("wait_for_job_completion" not in j.params for j in cache_jobs)
