"""``update --target arcgis --via package`` against the emulator's hosted tile layer: the
changed tiles are rendered locally, packaged as a .tpkx patch, uploaded as their own portal
item and imported with importTiles (merge + replace); the layer then equals the local
cache tile for tile, the item holding the full package is untouched, and the patch item is
deleted or kept as configured. The emulated layer is a real Compact Cache V2, read back
with our reader and with GDAL's ESRIC driver."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from support.emulator import Emulator, make_service_definition

from tiledelta import sample
from tiledelta.api import init_project, load_project, make_package, run_update, seed
from tiledelta.config import ArcGISConfig
from tiledelta.credentials import Secret
from tiledelta.errors import TileDeltaError
from tiledelta.project import Project
from tiledelta.publish.arcgis.client import ArcGISClient
from tiledelta.publish.arcgis.publish import publish
from tiledelta.publish.package import write_tpkx
from tiledelta.stores import read_compact_cache

USER, PASSWORD = "publisher", "s3cret-Patch-Pa55!"


def tiles_of(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        return store.get_many(list(store.iter_tiles()))


def sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


@pytest.fixture
def hosted(tmp_path: Path, request):
    """The sample county seeded locally, its full .tpkx in a portal item, and a hosted tile
    layer published from that item."""
    blank_tiles = getattr(request, "param", "auto")
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True).start()
    full_item = emu.portal_add_item(USER, "Compact Tile Package", "County basemap")
    project = Project.load(county).updated(
        render={"processes": 1}, cache={"blank_tiles": blank_tiles}
    )
    project = project.updated(
        arcgis=ArcGISConfig(
            server=emu.url,
            service="Hosted/County",
            portal=emu.portal_url,
            item_id=full_item,
            poll_seconds=0.05,
        )
    )
    project.save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seed(load_project(county))
    full = tmp_path / "County.tpkx"
    write_tpkx(load_project(county), full)
    with ArcGISClient(
        emu.url, USER, Secret(PASSWORD), portal=emu.portal_url, warn=lambda m: None
    ) as client:
        client.upload_item_file(full_item, full)
    emu.publish_hosted_tile_layer(full_item, "County")
    assert tiles_of(emu.hosted_cache("County")) == tiles_of(county / "cache")
    yield county, emu, full_item
    emu.stop()


GDAL_COMPARE = """
import json, sys, rasterio
from rasterio.windows import from_bounds
a, b, x0, y0, x1, y1 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
out = {}
with rasterio.open(a) as da, rasterio.open(b) as db:
    wa, wb = from_bounds(x0, y0, x1, y1, da.transform), from_bounds(x0, y0, x1, y1, db.transform)
    ra, rb = da.read(window=wa, boundless=True), db.read(window=wb, boundless=True)
    out = {"drivers": [da.driver, db.driver], "shape": list(ra.shape),
           "equal": bool((ra == rb).all()), "nonzero": int((ra != 0).sum())}
print(json.dumps(out))
"""


def gdal_same(a: Path, b: Path, bounds: tuple[float, float, float, float]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA", "ICU_DATA")}
    out = subprocess.run(
        [sys.executable, "-c", GDAL_COMPARE, str(a), str(b), *map(str, bounds)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("hosted", ["auto", "skip"], indirect=True)
def test_patch_route_makes_the_hosted_layer_equal_the_local_cache(hosted, tmp_path) -> None:
    county, emu, full_item = hosted
    full_bytes = sha(emu.portal_item(full_item).data)
    before = tiles_of(emu.hosted_cache("County"))
    sample.apply_edits(county)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCGIS_")}
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiledelta.cli",
            "update",
            "--project",
            str(county),
            "--target",
            "arcgis",
            "--via",
            "package",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr
    result = json.loads(cli.stdout)
    patch = result["patch"]
    assert patch["kind"] == "hosted-tile-layer" and patch["tiles"] > 0 and patch["imports"]

    local = tiles_of(county / "cache")
    served = tiles_of(emu.hosted_cache("County"))
    assert served == local  # tile for tile, byte for byte
    changed = {a for a in set(before) | set(local) if before.get(a) != local.get(a)}
    assert changed  # the edit did change tiles on the layer
    removed = {a for a in before if a not in local}
    assert patch["removed"] == len(removed)
    assert [s["mergeBundle"] for s in patch["imports"]] == ([False, True] if removed else [True])
    # The server rendered nothing: its only jobs are tile imports, with merge and replace.
    assert emu.jobs and {j.task for j in emu.jobs.values()} == {"importTiles"}
    for step in patch["imports"]:
        job = emu.jobs[step["job"]]
        assert job.params["replaceTiles"] == "true"
        assert job.params["mergeBundle"] == ("true" if step["mergeBundle"] else "false")
    # The full package's item is byte for byte as it was; the patch items are gone.
    assert sha(emu.portal_item(full_item).data) == full_bytes
    assert set(emu.portal_items) == {full_item}
    assert PASSWORD not in cli.stdout + cli.stderr
    # GDAL's ESRIC driver reads the same pixels from both caches over the changed area.
    scheme = load_project(county).cache_scheme
    top = max(a[0] for a in changed)
    from tiledelta.grid import tile_bounds

    boxes = [tile_bounds(scheme, lv, r, c) for lv, r, c in changed if lv == top]
    bounds = (
        min(b.xmin for b in boxes),
        min(b.ymin for b in boxes),
        max(b.xmax for b in boxes),
        max(b.ymax for b in boxes),
    )
    seen = gdal_same(emu.hosted_cache("County") / "conf.xml", county / "cache" / "conf.xml", bounds)
    assert seen["drivers"] == ["ESRIC", "ESRIC"] and seen["equal"] and seen["nonzero"]
    # A second run with no edit sends nothing.
    n = len(emu.jobs)
    again = run_update(load_project(county), target="arcgis", via="package", say=lambda m: None)
    assert again["patch"]["tiles"] == 0 and len(emu.jobs) == n


def test_the_patch_item_is_kept_when_configured(hosted) -> None:
    county, emu, full_item = hosted
    project = load_project(county)
    # Small parts, so the patch goes in parts (the emulated portal's minimum lowered).
    project.updated(arcgis={"keep_patch_item": True, "part_mb": 0.02}).save()
    emu.min_part_bytes = 10_000
    sample.apply_edits(county)
    lines: list[str] = []
    result = run_update(load_project(county), target="arcgis", via="package", say=lines.append)
    kept = set(emu.portal_items) - {full_item}
    assert kept and {s["item"] for s in result["patch"]["imports"]} == kept
    for item_id in kept:
        info = emu.portal_item(item_id).info()
        assert info["type"] == "Compact Tile Package"
        assert "tiledelta-patch" in info["typeKeywords"]
        parts = [r for r in emu.requests if r.path.endswith(f"/items/{item_id}/addPart")]
        assert len(parts) >= 2
    assert any("kept the patch item" in line for line in lines)
    assert any(line.strip().startswith("uploaded") and "MB" in line for line in lines)
    assert tiles_of(emu.hosted_cache("County")) == tiles_of(county / "cache")


def test_a_failed_import_is_sent_again_by_the_next_run(hosted) -> None:
    county, emu, full_item = hosted
    sample.apply_edits(county)
    emu.faults.end_next_jobs = ["esriJobFailed"]
    with pytest.raises(TileDeltaError, match="ended esriJobFailed") as err:
        run_update(load_project(county), target="arcgis", via="package", say=lambda m: None)
    assert "sent again by the next run" in str(err.value) and "\n" not in str(err.value)
    assert tiles_of(emu.hosted_cache("County")) != tiles_of(county / "cache")
    # The local cache is already up to date; the pending patch still goes.
    result = run_update(load_project(county), target="arcgis", via="package", say=lambda m: None)
    assert result["patch"]["tiles"] > 0
    assert tiles_of(emu.hosted_cache("County")) == tiles_of(county / "cache")


def test_a_partial_package_never_replaces_the_full_item(hosted, tmp_path) -> None:
    county, emu, full_item = hosted
    before = sha(emu.portal_item(full_item).data)
    sample.apply_edits(county)
    run_update(load_project(county), target="local", say=lambda m: None)
    with pytest.raises(TileDeltaError, match="would replace the full tile package") as err:
        make_package(load_project(county), tmp_path / "p.tpkx", changed_only=True, upload=True)
    assert "--via package" in str(err.value)
    assert sha(emu.portal_item(full_item).data) == before
    assert not (tmp_path / "p.tpkx").exists()


@pytest.mark.parametrize("hosted", ["skip"], indirect=True)
def test_tiles_the_update_removed_are_removed_from_the_layer(hosted) -> None:
    """Without blank copies, deleting the only features of some tiles removes those tiles;
    a merge cannot delete, so their bundles go whole and overwrite the layer's."""
    county, emu, _full = hosted
    gpkg = county / "data" / "county.gpkg"
    geoms, fields = sample._read(gpkg, "buildings")
    x, y = sample.X0 + 6000, sample.Y0 + 3000  # a lone building far east of town
    geoms.append(shapely.box(x, y, x + 40, y + 30))
    for v in fields.values():
        v.append(v[-1])
    sample._write(gpkg, "buildings", geoms, fields, "Polygon")
    run_update(load_project(county), target="arcgis", via="package", say=lambda m: None)
    with_it = tiles_of(emu.hosted_cache("County"))
    assert with_it == tiles_of(county / "cache")
    geoms, fields = sample._read(gpkg, "buildings")
    for v in (geoms, *fields.values()):
        del v[-1]
    sample._write(gpkg, "buildings", geoms, fields, "Polygon")
    result = run_update(load_project(county), target="arcgis", via="package", say=lambda m: None)
    local = tiles_of(county / "cache")
    gone = set(with_it) - set(local)
    assert gone and result["patch"]["removed"] == len(gone)
    assert [s["mergeBundle"] for s in result["patch"]["imports"]][0] is False
    assert tiles_of(emu.hosted_cache("County")) == local


@pytest.fixture
def map_service(tmp_path: Path):
    """The sample county published as the cached map service Tests/County (its cache the
    local seed's)."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    project = Project.load(county).updated(render={"processes": 1})
    project = project.updated(
        arcgis=ArcGISConfig(
            server=emu.url, service="Tests/County", sd="County.sd", poll_seconds=0.05
        )
    )
    project.save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seed(load_project(county))
    make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=True)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    yield county, emu
    emu.stop()


def test_patch_route_imports_into_an_enterprise_map_service(map_service) -> None:
    county, emu = map_service
    server_cache = emu.service("Tests", "County").cache_path
    assert tiles_of(server_cache) == tiles_of(county / "cache")
    sample.apply_edits(county)  # only the local data: the server never renders
    lines: list[str] = []
    result = run_update(load_project(county), target="arcgis", via="package", say=lines.append)
    assert result["patch"]["kind"] == "map-service" and result["patch"]["tiles"] > 0
    assert tiles_of(server_cache) == tiles_of(county / "cache")
    jobs = [j for j in emu.jobs.values() if j.task != "Publish Service Definition"]
    assert jobs and {j.task for j in jobs} == {"Import Map Server Cache"}
    params = jobs[0].params
    assert params["source_cache_type"] == "TILE_PACKAGE" and params["overwrite"] == "OVERWRITE"
    assert json.loads(params["source_tile_package"])["itemID"].startswith("i")
    uploads = [r for r in emu.requests if "/GPServer/uploads/" in r.path]
    assert uploads and all("CachingTools" in r.path for r in uploads)
