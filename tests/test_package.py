"""Tile packages and thumbnails from the sample county."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from conftest import gdal_open, shared_path
from PIL import Image

from tiledelta import sample
from tiledelta.api import load_project, seed, update
from tiledelta.project import Project
from tiledelta.publish.package import write_tpkx
from tiledelta.publish.thumbnail import render_thumbnail
from tiledelta.stores import open_project_store
from tiledelta.stores.tpkx import open_tpkx


def test_tpkx_opens_in_gdal_and_matches_esri_layout(sample_project: Path, tmp_path: Path) -> None:
    project = load_project(sample_project)
    seed(project)
    out = tmp_path / "county.tpkx"
    result = write_tpkx(project, out)
    info = gdal_open(out)
    assert info["driver"] == "ESRIC" and info["crs"] == "EPSG:3857" and info["count"] == 4
    ours = zipfile.ZipFile(out)
    esri = zipfile.ZipFile(shared_path("data", "esri_samples", "tpkx", "Usa.tpkx"))
    for z in (ours, esri):
        names = z.namelist()
        assert {"iteminfo.json", "root.json", "thumbnail.png"} <= set(names)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert any(n.startswith("tile/L") and n.endswith(".bundle") for n in names)
    root, esri_root = (json.loads(z.read("root.json")) for z in (ours, esri))
    for key in (
        "tileBundlesPath",
        "storageInfo",
        "tileImageInfo",
        "tileInfo",
        "minLOD",
        "maxLOD",
        "fullExtent",
        "spatialReference",
    ):
        assert key in root and key in esri_root, key
    assert root["tileBundlesPath"] == esri_root["tileBundlesPath"] == "./tile"
    item = json.loads(ours.read("iteminfo.json"))
    assert item["type"] == "Compact Tile Package" and "tpkx" in item["typeKeywords"]
    # Every tile in the package equals the cache's.
    reader = open_tpkx(out)
    with open_project_store(Project.load(sample_project), create=False) as store:
        stored = {a: store.get(*a) for a in store.iter_tiles()}
    packaged = {a: reader.get(*a) for a in reader.iter_tiles()}
    assert packaged == stored
    assert result["tiles"] == len(stored)


def test_changed_only_package_holds_exactly_the_updated_tiles(
    sample_project: Path, tmp_path: Path
) -> None:
    seed(load_project(sample_project))
    with open_project_store(Project.load(sample_project), create=False) as store:
        before = {a: store.get(*a) for a in store.iter_tiles()}
    sample.apply_edits(sample_project)
    update(load_project(sample_project))
    with open_project_store(Project.load(sample_project), create=False) as store:
        after = {a: store.get(*a) for a in store.iter_tiles()}
    changed_or_new = {a for a, d in after.items() if before.get(a) != d}
    out = tmp_path / "patch.tpkx"
    write_tpkx(load_project(sample_project), out, changed_only=True)
    reader = open_tpkx(out)
    got = set(reader.iter_tiles())
    assert got == changed_or_new
    assert all(reader.get(*a) == after[a] for a in got)
    assert gdal_open(out)["driver"] == "ESRIC"


def test_thumbnail_is_a_600x400_png_of_the_whole_map(sample_project: Path) -> None:
    png = render_thumbnail(load_project(sample_project), (600, 400))
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape == (400, 600, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3)[::97]}
    # Background, water and buildings all show.
    assert (0xAA, 0xD3, 0xDF) in colours
    assert len(colours) > 5
