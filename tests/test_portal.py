"""Portal work against the emulator's emulated Portal (``Emulator(..., portal=True)``).

Federated tokens (a portal token exchanged for a server token), their renewal, and the
portal item: its thumbnail, a locally rendered tile package as its data, and run
summaries in its description.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import gdal_open
from support.emulator import Emulator, make_service_definition
from support.published import publish_on_emulator

from tiledelta import sample
from tiledelta.api import init_project, load_project
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import connect
from tiledelta.publish.arcgis.client import ArcGISError
from tiledelta.publish.arcgis.publish import (
    describe_run,
    publish,
    run_summary,
    set_item_thumbnail,
    upload_package,
)
from tiledelta.publish.package import write_tpkx
from tiledelta.publish.thumbnail import render_thumbnail

USER, PASSWORD = "publisher", "s3cret-Portal-Pa55!"


@pytest.fixture
def site(tmp_path: Path):
    """The sample county published on an emulated server federated with an emulated portal."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True).start()
    item_id = emu.portal_add_item(USER, "Compact Tile Package", "County basemap")
    publish_on_emulator(county, emu, USER, PASSWORD, portal=emu.portal_url, item_id=item_id)
    yield county, emu, item_id
    emu.stop()


def _portal_token_requests(emu: Emulator) -> list:
    return [r for r in emu.requests if r.path.endswith("/sharing/rest/generateToken")]


def _no_secret_anywhere(emu: Emulator, *texts: str) -> None:
    logged = json.dumps([[r.method, r.path, r.params] for r in emu.requests])
    for text in (logged, *texts):
        assert PASSWORD not in text


def test_federated_token_exchange(site) -> None:
    county, emu, _item = site
    n = len(emu.requests)
    with connect(load_project(county)) as client:
        info = client.service_info("Tests/County")
        assert "tileInfo" in info
        server_token = client.token().get()
        portal_token = client.portal_token().get()
    new = emu.requests[n:]
    # Signed in at the portal, then exchanged the portal token for a server token;
    # the server's own generateToken was never called.
    gen = [r for r in new if r.path.endswith("generateToken")]
    assert [r.path for r in gen] == ["/portal/sharing/rest/generateToken"] * 2
    assert gen[0].params["username"] == USER and gen[0].params["password"] == "***"
    assert gen[1].params["token"] == "***" and gen[1].params["serverUrl"] == emu.url
    assert "password" not in gen[1].params
    served = [r for r in new if r.path.startswith("/arcgis/rest/services/")]
    assert served and all(r.token_via == "header" for r in served)
    # The server accepts the exchanged token and refuses the portal token, and vice versa.
    assert server_token != portal_token
    headers = {"Referer": emu.url}
    url = f"{emu.url}/rest/services/Tests/County/MapServer?f=json"
    ok = httpx.get(url, headers={**headers, "X-Esri-Authorization": f"Bearer {server_token}"})
    assert "tileInfo" in ok.json()
    refused = httpx.get(url, headers={**headers, "X-Esri-Authorization": f"Bearer {portal_token}"})
    assert refused.json()["error"]["code"] == 498
    item_url = f"{emu.portal_url}/sharing/rest/content/items/{_item}?f=json"
    auth = {**headers, "X-Esri-Authorization": f"Bearer {server_token}"}
    assert httpx.get(item_url, headers=auth).json()["error"]["code"] == 498
    assert httpx.get(item_url, headers=headers).json()["error"]["code"] == 499
    # The exchange needs a valid portal token and this portal's federated server.
    gen_url = f"{emu.portal_url}/sharing/rest/generateToken"
    bad = httpx.post(gen_url, data={"token": "nope", "serverUrl": emu.url, "f": "json"})
    assert bad.json()["error"]["code"] == 498
    other = httpx.post(
        gen_url,
        data={"token": portal_token, "serverUrl": "http://127.0.0.1:1/arcgis", "f": "json"},
        headers=headers,
    )
    assert "not a server federated" in json.dumps(other.json())
    _no_secret_anywhere(emu)


def test_tokens_are_renewed_before_expiry_and_after_rejection(site) -> None:
    county, emu, _item = site
    with connect(load_project(county)) as client:
        client.service_info("Tests/County")
        before = len(_portal_token_requests(emu))
        # Every token revoked (as after a restart): the server answers 498, the client
        # exchanges again, the portal refuses its old token, the client signs in again.
        emu.expire_tokens_now()
        assert "tileInfo" in client.service_info("Tests/County")
        assert len(_portal_token_requests(emu)) == before + 3  # exchange, sign-in, exchange
        # A server token close to its expiry is renewed before it is sent: one exchange,
        # one server request, no refusal and retry.
        client._token.expires = time.time() + 30
        n, before = len(emu.requests), len(_portal_token_requests(emu))
        client.service_info("Tests/County")
        new = emu.requests[n:]
        assert len(_portal_token_requests(emu)) == before + 1
        assert len([r for r in new if "/rest/services/" in r.path]) == 1
        # A portal token close to expiry is renewed before an item request.
        client._portal_token.expires = time.time() + 30
        before = len(_portal_token_requests(emu))
        assert client.get_item(_item)["title"] == "County basemap"
        assert len(_portal_token_requests(emu)) == before + 1


def test_thumbnail_is_set_on_the_item_with_the_portal_token(site) -> None:
    county, emu, item_id = site
    project = load_project(county)
    lines: list[str] = []
    n = len(emu.requests)
    set_item_thumbnail(project, say=lines.append)
    item = emu.portal_item(item_id)
    assert item.thumbnail == render_thumbnail(project, (600, 400))
    assert item.thumbnail.startswith(b"\x89PNG")
    assert item.info()["thumbnail"] == "thumbnail/thumbnail.png"
    assert item.updates[-1]["thumbnail"] == {"name": "thumbnail.png", "size": len(item.thumbnail)}
    update = [r for r in emu.requests[n:] if r.path.endswith("/update")]
    assert len(update) == 1 and update[0].token_via == "header"
    assert update[0].path == f"/portal/sharing/rest/content/users/{USER}/items/{item_id}/update"
    assert update[0].params["thumbnail"].startswith("<file thumbnail.png")
    # The update went through the portal: no server token was needed for it.
    assert not [r for r in emu.requests[n:] if r.path.startswith("/arcgis/")]
    _no_secret_anywhere(emu, "\n".join(lines))


def test_tile_package_is_uploaded_to_the_item(site, tmp_path: Path) -> None:
    county, emu, item_id = site
    project = load_project(county)
    tpkx = tmp_path / "County.tpkx"
    write_tpkx(project, tpkx)
    lines: list[str] = []
    result = upload_package(project, tpkx, say=lines.append)
    assert result == {"item": item_id, "package": str(tpkx), "bytes": tpkx.stat().st_size}
    item = emu.portal_item(item_id)
    assert item.data == tpkx.read_bytes()
    info = item.info()
    assert (info["name"], info["size"]) == ("County.tpkx", tpkx.stat().st_size)
    assert item.updates[-1]["file"] == {"name": "County.tpkx", "size": tpkx.stat().st_size}
    # Download it back from the portal and open it with GDAL's ESRIC driver.
    with connect(project) as client:
        token = client.portal_token().get()
    resp = httpx.get(
        f"{emu.portal_url}/sharing/rest/content/items/{item_id}/data",
        headers={"Referer": emu.url, "X-Esri-Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200 and resp.content == tpkx.read_bytes()
    downloaded = tmp_path / "downloaded.tpkx"
    downloaded.write_bytes(resp.content)
    info = gdal_open(downloaded)
    assert info["driver"] == "ESRIC" and info["crs"] == "EPSG:3857"
    _no_secret_anywhere(emu, "\n".join(lines))
    with pytest.raises(ArcGISError, match="must end in .tpkx"):
        upload_package(project, county / "County.sd")


def test_publish_sets_thumbnail_and_describes_the_run(site) -> None:
    county, emu, item_id = site
    project = Project.load(county)
    project = project.updated(arcgis={"describe_runs": True})
    project.save()
    make_service_definition(county, county / "County.sd", "Tests", "County", keep_cache=True)
    lines: list[str] = []
    result = publish(load_project(county), say=lines.append)
    assert result["thumbnail"] == item_id and result["described"] == item_id
    item = emu.portal_item(item_id)
    assert item.thumbnail == render_thumbnail(load_project(county), (600, 400))
    description = item.info()["description"]
    assert description.count("<p>") == 1 and "tiledelta published Tests/County" in description
    assert "cache already current" in description
    # A second summary is appended, the first kept.
    describe_run(load_project(county), "second run", say=lines.append)
    description = emu.portal_item(item_id).info()["description"]
    assert description.count("<p>") == 2 and description.endswith("<p>second run</p>")
    assert emu.portal_item(item_id).updates[-1]["fields"]["description"] == description
    _no_secret_anywhere(emu, "\n".join(lines), json.dumps(result, default=str))


def test_run_summary_names_levels_and_jobs() -> None:
    line = run_summary(
        {"published": "Tests/County", "cache": {"jobs": [{"level": 14}, {"level": 13}]}}
    )
    assert "tiledelta published Tests/County" in line
    assert line.endswith("cache rebuilt at levels 13, 14 (2 jobs)")


def test_portal_refuses_other_owners_and_bad_credentials(site, monkeypatch) -> None:
    county, emu, _item = site
    other = emu.portal_add_item("someone_else", "Compact Tile Package", "Not mine")
    project = load_project(county)
    with connect(project) as client:
        with pytest.raises(ArcGISError, match="permissions") as err:
            client.update_item(other, description="x")
        assert err.value.code == 403
        with pytest.raises(ArcGISError, match="does not exist"):
            client.get_item("0" * 32)
    assert emu.portal_item(other).updates == []
    monkeypatch.delenv("ARCGIS_USERNAME", raising=False)
    monkeypatch.delenv("ARCGIS_PASSWORD", raising=False)
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD=WRONG-pw-1\n")
    with pytest.raises(ArcGISError, match="Invalid username or password") as err:
        set_item_thumbnail(load_project(county))
    assert "WRONG-pw-1" not in str(err.value)
    gen = _portal_token_requests(emu)[-1]
    assert gen.params["password"] == "***"
    _no_secret_anywhere(emu)
