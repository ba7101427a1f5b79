"""`[cache] blank_tiles = "store"`: background-only tiles kept over the extent, once per bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import shapely

from tiledelta import sample
from tiledelta.api import load_project, seed, update
from tiledelta.grid import tile_range
from tiledelta.project import Project
from tiledelta.stores import open_project_store
from tiledelta.stores.compact import parse_bundle_index


def _configure(root: Path) -> tuple:
    p = Project.load(root)
    b = (sample.X0 - 900, sample.Y0 - 500, sample.X0 + 3000, sample.Y0 + 2600)
    p = p.updated(render={"extent": b})
    p = p.updated(cache={"blank_tiles": "store"})
    p.save()
    return b


def _tiles(root: Path) -> dict:
    with open_project_store(Project.load(root), create=False) as s:
        return {a: s.get(*a) for a in s.iter_tiles()}


def test_blank_tiles_cover_the_extent_and_survive_updates(
    sample_project: Path, tmp_path: Path
) -> None:
    _configure(sample_project)
    project = load_project(sample_project)
    result = seed(project)
    assert result["tiles_blank_stored"] > 0
    tiles = _tiles(sample_project)
    for level in project.levels:
        r0, r1, c0, c1 = tile_range(project.scheme, level, project.extent, touch=False)
        want = {(level, r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
        assert want <= {a for a in tiles if a[0] == level}
    # All blank tiles are the same bytes, and a bundle stores them once.
    blank, copies = Counter(tiles.values()).most_common(1)[0]
    assert copies > 10 and copies >= result["tiles_blank_stored"]
    bundle = max(
        (sample_project / "cache" / "_alllayers").rglob("*.bundle"), key=lambda p: p.stat().st_size
    )
    raw = bundle.read_bytes()
    index = parse_bundle_index(raw[: 64 + 8 * 128 * 128])
    offsets = index[index >> np.uint64(40) > 0] & np.uint64((1 << 40) - 1)
    assert len(np.unique(offsets)) < len(offsets)  # shared copies

    sample.apply_edits(sample_project)
    update(load_project(sample_project))
    fresh = tmp_path / "fresh"
    shutil.copytree(sample_project, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    seed(load_project(fresh))
    assert _tiles(sample_project) == _tiles(fresh)


def test_store_in_an_xyz_cache_is_refused_in_one_line(sample_project: Path) -> None:
    toml = sample_project / "tiledelta.toml"
    text = toml.read_text().replace('blank_tiles = "auto"', 'blank_tiles = "store"')
    toml.write_text(text.replace('kind = "compact"', 'kind = "xyz"'), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "seed", "--project", str(sample_project)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "blank_tiles" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_default_keeps_blank_tiles_over_the_data_extent_as_the_data_grows(
    sample_project: Path, tmp_path: Path
) -> None:
    """The default ("auto"): an opaque background and a compact cache keep background-only
    tiles over the data's extent; when the extent grows or shrinks, the update adds and
    removes them exactly as a fresh seed would have them."""
    project = load_project(sample_project)
    assert project.config.cache.blank_tiles == "auto"
    first = seed(project)
    assert first["tiles_blank_stored"] > 0
    gpkg = sample_project / "data" / "county.gpkg"
    geoms, fields = sample._read(gpkg, "buildings")
    far = shapely.box(sample.X0 + 6000, sample.Y0 + 4000, sample.X0 + 6030, sample.Y0 + 4020)
    for step in ("grow", "shrink"):
        if step == "grow":
            geoms.append(far)
            for values in fields.values():
                values.append(values[0])
        else:
            del geoms[-1]
            for values in fields.values():
                del values[-1]
        sample._write(gpkg, "buildings", geoms, fields, "Polygon")
        result = update(load_project(sample_project))
        fresh = tmp_path / f"fresh-{step}"
        shutil.copytree(sample_project, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
        seed(load_project(fresh))
        assert _tiles(sample_project) == _tiles(fresh), step
        for name in ("conf.xml", "conf.cdi"):
            got = (sample_project / "cache" / name).read_bytes()
            assert got == (fresh / "cache" / name).read_bytes(), (step, name)
        if step == "grow":
            assert result["tiles_blank_stored"] > 0
        else:
            assert result["tiles_removed"] > 0


HOLES = """
import json, sys
import rasterio
from rasterio.windows import from_bounds
xmin, ymin, xmax, ymax = map(float, sys.argv[2:6])
out = {}
with rasterio.open(sys.argv[1]) as ds:
    for i, factor in enumerate([1] + list(ds.overviews(1))):
        win = from_bounds(xmin, ymin, xmax, ymax, ds.transform).round_offsets().round_lengths()
        h, w = max(1, int(win.height // factor)), max(1, int(win.width // factor))
        alpha = ds.read(4, window=win, out_shape=(h, w))
        out[str(factor)] = [int((alpha == 0).sum()), int(alpha.size)]
print(json.dumps({"count": ds.count, "levels": out}))
"""


def test_gdal_sees_no_hole_over_the_data(sample_project: Path) -> None:
    """GDAL's ESRIC driver reads the seeded cache: no transparent pixel over the data's
    extent at any level, since the style's background is opaque."""
    import json
    import os

    project = load_project(sample_project)
    seed(project)
    from tiledelta.sources import data_extent, read_layers

    ext = data_extent(read_layers(project))
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA")}
    out = subprocess.run(
        [sys.executable, "-c", HOLES, str(sample_project / "cache" / "conf.xml"), *map(str, ext)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["count"] == 4
    # Overview factor 2**k is level (top - k); levels below the project's are not cached.
    span = 2 ** (max(project.levels) - min(project.levels))
    checked = {f: v for f, v in got["levels"].items() if int(f) <= span}
    assert len(checked) == len(project.levels)
    holes = {f: n for f, (n, _size) in checked.items() if n}
    assert not holes, f"transparent pixels over the data (overview factor: count): {holes}"
