"""The ways tiledelta signs in to ArcGIS Enterprise, against the emulator over HTTP:
a built-in account, ArcGIS Pro's active sign-in (stand-in arcpy), OAuth app credentials,
and the one-line message for a portal that uses Windows (IWA) logins."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.emulator import Emulator

from tiledelta.config import ArcGISConfig
from tiledelta.credentials import CredentialsError, Secret, SignIn, sign_in_for
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import connect
from tiledelta.publish.arcgis.client import ArcGISClient, ArcGISError
from tiledelta.publish.arcgis.publish import describe_run

USER, PASSWORD = "publisher", "s1gn-in-Pa55!"
APP_ID, APP_SECRET = "tiledelta-app", "app-s3cret-value"


@pytest.fixture
def emu(tmp_path: Path):
    e = Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True).start()
    yield e
    e.stop()


@pytest.fixture
def project(tmp_path: Path, emu: Emulator) -> Project:
    """A project folder that only names the server and portal (no data needed here)."""
    root = tmp_path / "county"
    root.mkdir()
    (root / "style.xml").write_text('<Map srs="epsg:3857"></Map>')
    cfg = ArcGISConfig(
        server=emu.url, portal=emu.portal_url, service="Tests/County", poll_seconds=0.05
    )
    (root / "tiledelta.toml").write_text('style = "style.xml"\nlevels = "13-14"\n')
    p = Project.load(root).updated(arcgis=cfg)
    p.save()
    return Project.load(root)


def clear_env(monkeypatch) -> None:
    for k in ("ARCGIS_USERNAME", "ARCGIS_PASSWORD", "ARCGIS_CLIENT_ID", "ARCGIS_CLIENT_SECRET"):
        monkeypatch.delenv(k, raising=False)


def test_built_in_account_is_the_default(project, emu, monkeypatch) -> None:
    clear_env(monkeypatch)
    (project.root / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    way = sign_in_for(project.root, emu.portal_url)
    assert way.kind == "password" and PASSWORD not in repr(way) + way.describe()
    with connect(project) as client:
        assert client.get("rest/services")["folders"] is not None
    assert [r.path for r in emu.requests if "generateToken" in r.path] == [
        "/portal/sharing/rest/generateToken",  # portal sign-in
        "/portal/sharing/rest/generateToken",  # federated exchange
    ]


def test_no_way_to_sign_in_names_all_three(project, monkeypatch) -> None:
    clear_env(monkeypatch)
    with pytest.raises(CredentialsError) as err:
        sign_in_for(project.root, "https://gis.example.org/portal")
    msg = str(err.value)
    assert "ARCGIS_USERNAME" in msg and "ARCGIS_CLIENT_ID" in msg and "ArcGIS Pro" in msg
    assert "\n" not in msg
    (project.root / ".env").write_text(f"ARCGIS_CLIENT_ID={APP_ID}\nARCGIS_CLIENT_SECRET=x\n")
    with pytest.raises(CredentialsError, match=r"\[arcgis\] portal"):
        sign_in_for(project.root, None)  # app credentials need a portal


def test_pros_active_sign_in_needs_no_password(project, emu, arcpy, monkeypatch) -> None:
    clear_env(monkeypatch)
    referer = "https://pro.example/ArcGISPro"
    token = emu.issue_portal_token(referer)
    arcpy.standin.configure(portal_url=emu.portal_url, token=token, referer=referer)
    way = sign_in_for(project.root, emu.portal_url)
    assert way.kind == "pro" and way.referer == referer
    with connect(project) as client:
        info = client.get("rest/services")
        assert "folders" in info
    assert not [r for r in emu.requests if r.params.get("username")]
    exchange = [r for r in emu.requests if r.path.endswith("generateToken")]
    assert len(exchange) == 1 and exchange[0].params["serverUrl"] == emu.url
    # Pro signed in to another portal: not used for this one.
    arcpy.standin.configure(portal_url="https://other.example/portal", token=token)
    with pytest.raises(CredentialsError):
        sign_in_for(project.root, emu.portal_url)


def test_pro_sign_in_through_arcpy_against_the_emulator(emu, arcpy) -> None:
    with pytest.raises(ValueError, match="Invalid username or password") as err:
        arcpy.SignInToPortal(emu.portal_url, USER, "not-it")
    assert "not-it" not in str(err.value)
    assert arcpy.GetSigninToken() is None
    arcpy.SignInToPortal(emu.portal_url, USER, PASSWORD)
    tok = arcpy.GetSigninToken()
    assert tok and set(tok) == {"token", "referer", "expires"}
    assert arcpy.GetActivePortalURL().rstrip("/") == emu.portal_url


def test_oauth_app_credentials_reach_portal_items_only(project, emu, monkeypatch, caplog) -> None:
    clear_env(monkeypatch)
    emu.add_oauth_app(APP_ID, APP_SECRET)
    item = emu.portal_add_item(USER, "Map Service", "County", description="<p>first</p>")
    (project.root / ".env").write_text(
        f"ARCGIS_USERNAME={USER}\nARCGIS_CLIENT_ID={APP_ID}\nARCGIS_CLIENT_SECRET={APP_SECRET}\n"
    )
    cfg = project.config.arcgis.model_copy(update={"item_id": item})
    project = project.updated(arcgis=cfg)
    caplog.set_level(logging.DEBUG)
    describe_run(project, "a run", say=lambda m: None)
    assert emu.portal_item(item).info()["description"] == "<p>first</p><p>a run</p>"
    oauth = [r for r in emu.requests if r.path.endswith("/oauth2/token")]
    assert len(oauth) == 1 and oauth[0].params["grant_type"] == "client_credentials"
    assert oauth[0].params["client_secret"] == "***"  # never in the request log
    with connect(project) as client, pytest.raises(ArcGISError, match="acts for no user") as err:
        client.service_info("Tests/County")
    assert "\n" not in str(err.value)
    assert APP_SECRET not in caplog.text and APP_SECRET not in str(err.value)
    # the emulator refuses to turn an app token into a server token, as a check
    token = emu.__dict__["_app_token_values"].copy().pop()
    import httpx

    body = httpx.post(
        f"{emu.portal_url}/sharing/rest/generateToken",
        data={"token": token, "serverUrl": emu.url, "f": "json"},
    ).json()
    assert body["error"]["code"] == 403


def test_wrong_app_secret_is_refused_without_echoing_it(project, emu, monkeypatch) -> None:
    clear_env(monkeypatch)
    emu.add_oauth_app(APP_ID, APP_SECRET)
    way = SignIn("app", username=USER, client_id=APP_ID, client_secret=Secret("wrong-secret-x"))
    client = ArcGISClient(emu.url, USER, Secret(""), portal=emu.portal_url, sign_in=way)
    with client, pytest.raises(ArcGISError) as err:
        client.get_item("0" * 32)
    assert "wrong-secret-x" not in str(err.value)
    assert "Invalid client_id or client_secret" in str(err.value)


def test_a_windows_login_portal_gets_one_line_pointing_to_pro(
    project, emu, arcpy, monkeypatch
) -> None:
    clear_env(monkeypatch)
    emu.portal_auth = "iwa"
    (project.root / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    with connect(project) as client, pytest.raises(ArcGISError) as err:
        client.get("rest/services")
    msg = str(err.value)
    assert "IWA" in msg and "ArcGIS Pro" in msg and "GetSigninToken" in msg
    assert "\n" not in msg and PASSWORD not in msg
    with pytest.raises(ValueError, match="Windows"):
        arcpy.SignInToPortal(emu.portal_url, USER, PASSWORD)
    # Pro signed in with Windows logins: its token works where the password cannot.
    referer = "https://pro.example/ArcGISPro"
    arcpy.standin.configure(
        portal_url=emu.portal_url, token=emu.issue_portal_token(referer), referer=referer
    )
    with connect(project) as client:
        assert "folders" in client.get("rest/services")


def test_a_portal_without_arcgis_tokens_is_named_too(project, emu, monkeypatch) -> None:
    """``isTokenBasedSecurity: false`` in ``info`` (web-tier or SAML logins)."""
    clear_env(monkeypatch)
    emu.portal_auth = "web-tier"
    (project.root / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    with connect(project) as client, pytest.raises(ArcGISError, match="IWA.*SAML") as err:
        client.get("rest/services")
    assert "\n" not in str(err.value)


def test_pros_renewed_token_is_picked_up_after_a_rejection(project, emu, arcpy, monkeypatch):
    clear_env(monkeypatch)
    referer = "https://pro.example/ArcGISPro"
    arcpy.standin.configure(
        portal_url=emu.portal_url, token=emu.issue_portal_token(referer), referer=referer
    )
    with connect(project) as client:
        assert "folders" in client.get("rest/services")
        emu.expire_tokens_now()  # e.g. the server restarted; Pro signs in again by itself
        arcpy.standin.configure(
            portal_url=emu.portal_url, token=emu.issue_portal_token(referer), referer=referer
        )
        assert "folders" in client.get("rest/services")
        arcpy.standin.reset()  # Pro signed out
        emu.expire_tokens_now()
        with pytest.raises(ArcGISError, match="no longer signed in"):
            client.get("rest/services")
