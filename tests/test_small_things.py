"""Small things that trip people (issue 12): init's key and leftovers, serve's banner,
busy port and blank tiles, watch that ends, doctor's levels and bundle checks, report
--open without a browser, MBTiles metadata, and one-line errors for odd inputs.

Real processes, sockets and files throughout; oracles: SQLite reads the MBTiles file,
pyogrio/pyproj give the data's extent, Pillow decodes served tiles, the style's own
background colour is read from its XML here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path

import pyogrio
import pytest
from conftest import LiveServer
from PIL import Image, ImageColor
from pyproj import Transformer

from tiledelta import api, sample
from tiledelta.change import detect_changes
from tiledelta.grid import tile_bounds, tile_range
from tiledelta.project import Project
from tiledelta.serve.app import create_app

CLI = [sys.executable, "-m", "tiledelta.cli"]


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def built(sample_template, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "county"
    shutil.copytree(sample_template, root)
    api.init_project(root, style=root / "style.xml", levels="13-16", force=True)
    Project.load(root).updated(render={"processes": 1}).save()
    api.seed(api.load_project(root), notify=False)
    return root


def copy_of(built: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "county"
    shutil.copytree(built, dst)
    return dst


# --- init ---------------------------------------------------------------------------------


def test_init_source_proposes_a_unique_integer_key(sample_template, tmp_path: Path) -> None:
    gpkg = sample_template / "data" / "county.gpkg"
    out = cli("init", str(tmp_path / "p"), "--source", f"{gpkg}:roads", "--levels", "13-15")
    assert out.returncode == 0, out.stderr
    toml = (tmp_path / "p" / "tiledelta.toml").read_text()
    assert '[layers.roads]\nkey = "road_id"' in toml
    assert '# init proposed key = "road_id": a unique integer id field of roads' in toml
    # buildings have no id field: no key is made up
    out = cli("init", str(tmp_path / "b"), "--source", f"{gpkg}:buildings", "--levels", "13-15")
    assert out.returncode == 0, out.stderr
    assert "key = " not in (tmp_path / "b" / "tiledelta.toml").read_text()


def test_the_proposed_key_makes_moves_modifications(sample_template, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(sample_template, root)
    gpkg = root / "data" / "county.gpkg"
    api.init_project(root, sources=[f"{gpkg}:roads"], levels="13-14", force=True)
    Project.load(root).updated(render={"processes": 1}).save()
    api.seed(api.load_project(root), notify=False)
    sample.apply_edits(root)  # moves Highway 30, renames Duane St
    roads = detect_changes(api.load_project(root)).as_dict()["layers"]["roads"]
    assert roads["modified"] == 2 and roads["added"] == roads["deleted"] == 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--levels", "19-3"], 2),  # a malformed option: usage
        (["--source", "no-such.gpkg"], 1),
        (["--scheme", "no-such-conf.xml"], 1),
    ],
)
def test_a_failed_init_leaves_nothing(sample_template, tmp_path: Path, args, code) -> None:
    gpkg = sample_template / "data" / "county.gpkg"
    target = tmp_path / "a" / "b"
    base = ["--source", f"{gpkg}:roads"] if "--source" not in args else []
    out = cli("init", str(target), *base, *args)
    assert out.returncode == code
    assert one_line(out).startswith("tiledelta: error: ")
    assert not (tmp_path / "a").exists()
    # into an existing folder: no style.xml, no tiledelta.toml left there
    (tmp_path / "c").mkdir()
    out = cli("init", str(tmp_path / "c"), *base, *args)
    assert out.returncode == code and sorted((tmp_path / "c").iterdir()) == []


def test_conf_xml_without_levels_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf.xml"
    conf.write_text(
        '<CacheInfo xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><TileCacheInfo>'
        "<SpatialReference><WKID>3857</WKID></SpatialReference>"
        "<TileOrigin><X>-20037508.342787</X><Y>20037508.342787</Y></TileOrigin>"
        "<TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI><LODInfos/>"
        "</TileCacheInfo></CacheInfo>"
    )
    style = tmp_path / "style.xml"
    style.write_text('<Map srs="epsg:3857"/>')
    out = cli("init", str(tmp_path / "p"), "--style", str(style), "--scheme", str(conf))
    assert out.returncode == 1
    line = one_line(out)
    assert str(conf) in line and "no levels" in line
    assert not (tmp_path / "p").exists()


# --- one-line errors ------------------------------------------------------------------------


def test_non_utf8_toml_is_one_line(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    toml = root / "tiledelta.toml"
    toml.write_bytes(toml.read_bytes().replace(b"web-mercator", "wéb".encode("latin-1")))
    out = cli("status", "--project", str(root))
    assert out.returncode == 1
    line = one_line(out)
    assert str(toml) in line and "UTF-8" in line


def test_proj_noise_is_silenced(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    style = root / "style.xml"
    style.write_text(style.read_text().replace('srs="epsg:3857"', 'srs="epsg:999999"'))
    out = cli("status", "--project", str(root))
    assert out.returncode == 1
    line = one_line(out)  # no "proj_create: crs not found" before it
    assert "style.xml" in line and "999999" in line


def test_oddly_quoted_env_is_one_line_naming_file_and_line(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    secret = "pa55-Word-very-secret"
    (root / ".env").write_text(f'ARCGIS_USERNAME=bob\nARCGIS_PASSWORD="{secret}\nX=1\n')
    Project.load(root).updated(
        arcgis={"server": "https://127.0.0.1:9/server", "service": "T/County"}
    ).save()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCGIS_")}
    out = cli("doctor", "--project", str(root), env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("FAIL  arcgis credentials")]
    assert len(lines) == 1, out.stdout
    assert f"{root / '.env'}: line 2 cannot be parsed" in lines[0]
    assert "python-dotenv" not in out.stderr and secret not in out.stdout + out.stderr


# --- serve ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_prints_the_viewer_url_and_ends_on_ctrl_c(built: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--project", str(built), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.split() == ["viewer", f"http://127.0.0.1:{port}/"]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # it listens
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0


def test_busy_port_is_one_line_first_exit_3(built: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = cli("serve", "--project", str(built), "--port", str(port))
    assert out.returncode == 3
    assert out.stdout == ""
    line = one_line(out)
    assert line == (
        f"tiledelta: error: 127.0.0.1:{port} is already in use by another program; "
        "stop it or choose another --port"
    )


def test_blank_tiles_inside_the_extent_are_served(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    # MBTiles keeps no background-only tile ("auto"): the server answers them itself.
    Project.load(root).updated(cache={"kind": "mbtiles", "path": "cache.mbtiles"}).save()
    api.seed(api.load_project(root), notify=False)
    project = Project.load(root)
    with sqlite3.connect(root / "cache.mbtiles") as con:
        stored = {
            (z, (1 << z) - 1 - y, x)
            for z, x, y in con.execute("SELECT zoom_level, tile_column, tile_row FROM tiles")
        }
    color = ET.parse(root / "style.xml").getroot().get("background-color")
    background = ImageColor.getcolor(color, "RGBA")
    with LiveServer(create_app(project)) as srv:
        svc_ext = json.loads(srv.raw("/service.json")[1])["extent"]
        level = 16
        from tiledelta.grid import Bounds

        r0, r1, c0, c1 = tile_range(project.scheme, level, Bounds(*svc_ext), touch=False)
        missing = [
            (r, c)
            for r in range(r0, r1 + 1)
            for c in range(c0, c1 + 1)
            if (level, r, c) not in stored
        ]
        assert missing, "the sample has background-only tiles inside its extent"
        row, col = missing[0]
        status, body = srv.raw(f"/tiles/{level}/{col}/{row}.png")
        assert status == 200
        with Image.open(BytesIO(body)) as im:
            assert im.size == (256, 256)
            assert im.convert("RGBA").getcolors() == [(256 * 256, background)]
        status, _ = srv.raw(f"/arcgis/rest/services/county/MapServer/tile/{level}/{row}/{col}")
        assert status == 200
        wmts = f"/wmts/1.0.0/county/default/default028mm/{level}/{row}/{col}.png"
        assert srv.raw(wmts) == (200, body)
        # outside the extent: still a 404
        far = tile_range(project.scheme, level, Bounds(*svc_ext), touch=False)[0] - 50
        b = tile_bounds(project.scheme, level, far, c0)
        assert b.ymin > svc_ext[3]
        assert srv.raw(f"/tiles/{level}/{c0}/{far}.png")[0] == 404


# --- watch ----------------------------------------------------------------------------------


def test_watch_max_runs_1_ends_when_nothing_changed(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    out = cli("watch", "--project", str(root), "--every", "1h", "--max-runs", "1", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stopping after 1 run(s) (0 updated the cache)" in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_stops_promptly_on_a_signal(built: Path, tmp_path: Path, sig) -> None:
    root = copy_of(built, tmp_path)
    proc = subprocess.Popen(
        [*CLI, "watch", "--project", str(root), "--every", "1h"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # "watching", first poll
        assert "watching" in lines[0], lines
        t0 = time.monotonic()
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=20)
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in rest and "Traceback" not in err


# --- doctor ---------------------------------------------------------------------------------


def test_doctor_json_passing_checks_are_ok(built: Path) -> None:
    out = cli("doctor", "--project", str(built), "--json")
    assert out.returncode == 0, out.stdout
    report = json.loads(out.stdout)
    assert report["ok"] and "error" not in report
    assert {c["level"] for c in report["checks"]} == {"ok"}
    names = [c["name"] for c in report["checks"]]
    assert "cache files" in names


def _bundles(root: Path) -> list[Path]:
    return sorted((root / "cache" / "_alllayers").glob("L*/*.bundle"))


def test_doctor_finds_a_truncated_bundle(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    bundle = _bundles(root)[-1]
    size = bundle.stat().st_size
    with bundle.open("r+b") as fh:
        fh.truncate(size - 100)
    out = cli("doctor", "--project", str(root), "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["cache files"] and bad[0]["level"] == "error"
    assert f"{bundle.parent.name}/{bundle.name} is truncated" in bad[0]["detail"]
    assert report["kind"] == "doctor" and "cache files" in report["error"]


def test_doctor_finds_a_corrupt_bundle_index(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    bundle = _bundles(root)[-1]
    data = bytearray(bundle.read_bytes())
    # point the first used index record 3 bytes further: the size prefix no longer matches
    import numpy as np

    index = np.frombuffer(bytes(data[64 : 64 + 131072]), dtype="<u8").copy()
    pos = int(np.flatnonzero(index >> np.uint64(40))[0])
    index[pos] += np.uint64(3)
    data[64 : 64 + 131072] = index.tobytes()
    bundle.write_bytes(bytes(data))
    out = cli("doctor", "--project", str(root))
    assert out.returncode == 1
    fail = [ln for ln in out.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fail) == 1 and bundle.name in fail[0] and "corrupt" in fail[0], out.stdout


def test_doctor_checks_the_aprx_and_arcpy(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    Project.load(root).updated(
        arcgis={
            "server": "https://127.0.0.1:9/server",
            "service": "T/County",
            "aprx": "County.aprx",
            "map": "Map",
        }
    ).save()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no stand-in arcpy
    out = cli("doctor", "--project", str(root), env=env)
    lines = {ln.split(":")[0]: ln for ln in out.stdout.splitlines()}
    assert lines["FAIL  arcgis aprx"].endswith(
        "County.aprx does not exist; fix the path in tiledelta.toml"
    )
    assert "arcpy is not importable" in lines["warn  arcpy"]
    (root / "County.aprx").write_bytes(b"not a zip")
    out = cli("doctor", "--project", str(root), env=env)
    assert "is not an ArcGIS Pro project" in out.stdout


# --- report --open, MBTiles metadata --------------------------------------------------------


def test_report_open_says_when_no_browser_opened(built: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["BROWSER"] = "/no/such/browser"
    out = cli("report", "--project", str(built), "--open", env=env)
    assert out.returncode == 0
    assert "no web browser could be opened; open " in out.stderr
    assert "report.html yourself" in out.stderr


def test_mbtiles_metadata_comes_from_the_project_and_data(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path)
    Project.load(root).updated(cache={"kind": "mbtiles", "path": "cache.mbtiles"}).save()
    api.seed(api.load_project(root), notify=False)
    with sqlite3.connect(root / "cache.mbtiles") as con:
        meta = dict(con.execute("SELECT name, value FROM metadata"))
    assert meta["name"] == "county"
    assert (meta["minzoom"], meta["maxzoom"]) == ("13", "16")
    west, south, east, north = map(float, meta["bounds"].split(","))
    # the data's own extent, read with GDAL and projected with PROJ here
    gpkg = root / "data" / "county.gpkg"
    boxes = []
    for name, _kind in pyogrio.list_layers(gpkg):
        info = pyogrio.read_info(gpkg, layer=name)
        tr = Transformer.from_crs(info["crs"], "EPSG:4326", always_xy=True)
        boxes.append(tr.transform_bounds(*info["total_bounds"]))
    want = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    assert west == pytest.approx(want[0], abs=1e-6) and east == pytest.approx(want[2], abs=1e-6)
    assert south == pytest.approx(want[1], abs=1e-6) and north == pytest.approx(want[3], abs=1e-6)
    assert east - west < 1  # a county, not the world
    cx, cy, cz = meta["center"].split(",")
    assert west < float(cx) < east and south < float(cy) < north and cz == "13"


# --- secrets at -vv -------------------------------------------------------------------------


def test_smtp_auth_never_printed_at_vv(built: Path, tmp_path: Path) -> None:
    controller = pytest.importorskip("aiosmtpd.controller")
    from aiosmtpd.smtp import AuthResult

    user, password = "tiles-bot", "s3cret-Pa55word!"

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            return "250 OK"

    ctl = controller.Controller(
        Handler(),
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=lambda *a: AuthResult(success=True),
        auth_require_tls=False,
    )
    ctl.start()
    try:
        root = copy_of(built, tmp_path)
        (root / ".env").write_text(f"SMTP_USERNAME={user}\nSMTP_PASSWORD={password}\n")
        email = {"host": "127.0.0.1", "port": ctl.port, "starttls": False,
                 "sender": "t@example.org", "to": ["gis@example.org"]}  # fmt: skip
        Project.load(root).updated(notify={"on": "always", "email": email}).save()
        sample.apply_edits(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
        out = cli("-vv", "update", "--project", str(root), env=env)
    finally:
        ctl.stop()
    assert out.returncode == 0, out.stderr
    assert "DEBUG" in out.stderr
    printed = out.stdout + out.stderr
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    for secret in (password, plain, base64.b64encode(password.encode()).decode()):
        assert secret not in printed


def test_a_key_set_on_a_built_project_counts_at_the_next_status(built, tmp_path) -> None:
    root = copy_of(built, tmp_path)  # built without keys: roads matched by content
    sample.apply_edits(root)  # moves Highway 30 and renames Duane St (2 roads)
    before = detect_changes(api.load_project(root)).as_dict()["layers"]["roads"]
    assert (before["added"], before["deleted"], before["modified"]) == (2, 2, 0)
    Project.load(root).updated(layers={"roads": {"key": "road_id"}}).save()
    roads = detect_changes(api.load_project(root)).as_dict()["layers"]["roads"]
    assert (roads["added"], roads["deleted"], roads["modified"]) == (0, 0, 2)
    # the update that follows records the key; it equals a fresh build of the data
    api.update(api.load_project(root), notify=False)
    assert not detect_changes(api.load_project(root)).any
    same, compared = api.verify_against_full_build(root)
    assert same and compared > 0
