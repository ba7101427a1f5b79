"""``tiledelta doctor``: a healthy project passes; each broken thing fails its own line."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import set_processes
from support.emulator import Emulator

from tiledelta.api import init_project, load_project, seed
from tiledelta.config import ArcGISConfig
from tiledelta.ops.doctor import Check, exit_code, report, run_checks
from tiledelta.project import Project

USER, PASSWORD = "doctor-user", "Sup3r-s3cret-pw!"
LAYERS = ("water", "parcels", "buildings", "roads")


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch) -> None:
    monkeypatch.delenv("ARCGIS_USERNAME", raising=False)
    monkeypatch.delenv("ARCGIS_PASSWORD", raising=False)


@pytest.fixture
def county(sample_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="13-15", force=True)
    set_processes(root, 1)
    return root


@pytest.fixture
def seeded(county: Path) -> Path:
    seed(load_project(county))
    return county


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failed(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if not c.ok]


def configure_arcgis(root: Path, server: str) -> None:
    p = Project.load(root)
    p = p.updated(arcgis=ArcGISConfig(server=server, service="Tests/County"))
    p.save()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_each(checks: list[Check]) -> None:
    for c in checks:
        assert "\n" not in c.line() and c.detail.strip(), c


# --- healthy -------------------------------------------------------------------------------


def test_healthy_sample_project(seeded: Path) -> None:
    checks = run_checks(seeded)
    assert failed(checks) == [], [c.line() for c in checks]
    names = [c.name for c in checks]
    assert names == [
        "mapnik",
        "project",
        "style",
        "fonts",
        *[f"datasource {n}" for n in LAYERS],
        "scheme",
        "cache",
        "cache files",
        "state",
    ]
    got = by_name(checks)
    assert "Mapnik 4" in got["mapnik"].detail and "ogr" in got["mapnik"].detail
    assert "DejaVu Sans Book" in got["fonts"].detail
    assert "fields used: kind" in got["datasource buildings"].detail
    assert "holds this scheme and is writable" in got["cache"].detail
    assert exit_code(checks) == 0 and report(checks)["ok"] is True
    assert_one_line_each(checks)


def test_unbuilt_cache_is_fine(county: Path) -> None:
    checks = run_checks(county)
    assert failed(checks) == []
    assert "not built yet" in by_name(checks)["cache"].detail


def test_healthy_arcgis_settings(seeded: Path, tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    try:
        configure_arcgis(seeded, emu.url)
        (seeded / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
        checks = run_checks(seeded)
    finally:
        emu.stop()
    got = by_name(checks)
    assert failed(checks) == [], [c.line() for c in checks]
    assert "values not shown" in got["arcgis credentials"].detail
    assert "reachable (ArcGIS Server" in got["arcgis server"].detail
    text = json.dumps(report(checks)) + "\n".join(c.line() for c in checks)
    assert PASSWORD not in text and USER not in text


# --- broken things -------------------------------------------------------------------------


def test_missing_font(county: Path) -> None:
    style = county / "style.xml"
    style.write_text(
        style.read_text().replace(
            'face-name="DejaVu Sans Book" size="11"', 'face-name="Nope Sans" size="11"'
        ),
        encoding="utf-8",
    )
    checks = run_checks(county)
    got = by_name(checks)
    assert not got["fonts"].ok
    assert "'Nope Sans'" in got["fonts"].detail and "install" in got["fonts"].detail
    assert "DejaVu Sans Book" not in got["fonts"].detail.split("(Mapnik has")[0]
    # Mapnik refuses the style too; the data and cache checks still ran and passed
    assert set(failed(checks)) <= {"fonts", "style"}
    assert all(got[f"datasource {n}"].ok for n in LAYERS)
    assert got["cache"].ok and exit_code(checks) == 1
    assert_one_line_each(checks)


def test_missing_datasource(county: Path) -> None:
    (county / "data" / "county.gpkg").rename(county / "data" / "moved.gpkg")
    checks = run_checks(county)
    assert failed(checks) == [f"datasource {n}" for n in LAYERS]
    d = by_name(checks)["datasource roads"].detail
    assert d.startswith("data/county.gpkg does not exist") and "'file' parameter" in d
    assert exit_code(checks) == 1


def test_unreadable_layer_name(county: Path) -> None:
    style = county / "style.xml"
    style.write_text(
        style.read_text().replace(
            '<Parameter name="layer">buildings</Parameter>',
            '<Parameter name="layer">buildingz</Parameter>',
        ),
        encoding="utf-8",
    )
    checks = run_checks(county)
    assert failed(checks) == ["datasource buildings"]
    d = by_name(checks)["datasource buildings"].detail
    assert "cannot read data/county.gpkg layer 'buildingz'" in d
    assert "layers there: " in d and "buildings" in d.split("layers there: ")[1]
    assert_one_line_each(checks)


def test_missing_field(county: Path) -> None:
    style = county / "style.xml"
    style.write_text(style.read_text().replace("[kind]", "[kindz]"), encoding="utf-8")
    checks = run_checks(county)
    assert failed(checks) == ["datasource buildings"]
    assert "field(s) kindz" in by_name(checks)["datasource buildings"].detail


def test_cache_of_another_scheme(seeded: Path) -> None:
    conf = seeded / "cache" / "conf.xml"
    conf.write_text(
        conf.read_text().replace("<TileCols>256</TileCols>", "<TileCols>512</TileCols>")
    )
    checks = run_checks(seeded)
    assert failed(checks) == ["cache"]
    assert "different tiling scheme" in by_name(checks)["cache"].detail


def test_bad_levels(county: Path) -> None:
    toml = county / "tiledelta.toml"
    toml.write_text(toml.read_text().replace('levels = "13-15"', 'levels = "13-45"'))
    checks = run_checks(county)
    assert "scheme" in failed(checks)
    assert all(by_name(checks)[f"datasource {n}"].ok for n in LAYERS)


def test_broken_project_file_is_one_line(county: Path) -> None:
    (county / "tiledelta.toml").write_text("style = \n", encoding="utf-8")
    checks = run_checks(county)
    assert [c.name for c in checks] == ["mapnik", "project"]
    assert failed(checks) == ["project"] and "not valid TOML" in checks[1].detail


def test_missing_credentials_and_unreachable_server(seeded: Path) -> None:
    port = closed_port()
    configure_arcgis(seeded, f"http://127.0.0.1:{port}/arcgis")
    checks = run_checks(seeded)
    assert failed(checks) == ["arcgis credentials", "arcgis server"]
    got = by_name(checks)
    assert "ARCGIS_USERNAME and ARCGIS_PASSWORD" in got["arcgis credentials"].detail
    assert f"cannot reach http://127.0.0.1:{port}/arcgis/rest/info" in got["arcgis server"].detail
    assert exit_code(checks) == 1
    assert_one_line_each(checks)


def test_secrets_are_never_printed(seeded: Path, monkeypatch) -> None:
    configure_arcgis(seeded, f"http://127.0.0.1:{closed_port()}/arcgis")
    monkeypatch.setenv("ARCGIS_USERNAME", USER)
    monkeypatch.setenv("ARCGIS_PASSWORD", PASSWORD)
    # a database password in the style, on a layer that cannot be read
    style = seeded / "style.xml"
    style.write_text(
        style.read_text().replace(
            '<Parameter name="file">data/county.gpkg</Parameter>\n'
            '      <Parameter name="layer">water</Parameter>',
            f'<Parameter name="file">PG:host=127.0.0.1 password={PASSWORD}</Parameter>\n'
            '      <Parameter name="layer">water</Parameter>',
        ),
        encoding="utf-8",
    )
    checks = run_checks(seeded)
    assert by_name(checks)["arcgis credentials"].ok
    assert not by_name(checks)["datasource water"].ok
    text = json.dumps(report(checks)) + "\n".join(c.line() for c in checks)
    assert PASSWORD not in text and USER not in text


def test_app_credentials_are_a_way_to_sign_in(seeded: Path, monkeypatch) -> None:
    """A project that signs in with OAuth app credentials (no built-in account) passes
    the credentials check, and the secret is not shown."""
    monkeypatch.delenv("ARCGIS_CLIENT_ID", raising=False)
    monkeypatch.delenv("ARCGIS_CLIENT_SECRET", raising=False)
    secret = "app-S3cret-value"
    (seeded / ".env").write_text(
        f"ARCGIS_CLIENT_ID=tiledelta-app\nARCGIS_CLIENT_SECRET={secret}\n", encoding="utf-8"
    )
    base = f"http://127.0.0.1:{closed_port()}"
    p = Project.load(seeded)
    cfg = ArcGISConfig(server=f"{base}/server", service="Tests/County", portal=f"{base}/portal")
    p.updated(arcgis=cfg).save()
    checks = run_checks(seeded)
    got = by_name(checks)["arcgis credentials"]
    assert got.ok, got.detail
    assert "OAuth app credentials" in got.detail
    assert secret not in json.dumps(report(checks))
