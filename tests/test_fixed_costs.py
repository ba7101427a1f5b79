"""Issue 13's fixed costs of an update: the layer index built once before the pool forks,
the change map drawn from the cache's tiles, the before store, batched bundle rewrites."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.geometry

from tiledelta import api
from tiledelta.render.index import BoxIndex, build_indexes
from tiledelta.stores import read_compact_cache


def _cache_bytes(root: Path) -> dict:
    project = api.load_project(root)
    with read_compact_cache(project.cache_path) as store:
        return {a: store.get(*a) for a in store.iter_tiles()}


# ------------------------------------------------------------------ the layer index


def _random_boxes(rng: np.random.Generator, n: int, wide: int) -> np.ndarray:
    xy = rng.uniform(0, 1000, (n, 2))
    wh = rng.exponential(3.0, (n, 2))
    b = np.column_stack([xy, xy + wh])
    # a few long features (a coastline, a road) and points (zero-size boxes)
    b[:wide, 2] = b[:wide, 0] + rng.uniform(200, 900, wide)
    b[wide : 2 * wide, 2:] = b[wide : 2 * wide, :2]
    return b


@pytest.mark.parametrize("n,wide", [(0, 0), (5, 1), (3000, 0), (3000, 40)])
def test_box_index_answers_as_strtree(n: int, wide: int) -> None:
    """Every query gives exactly shapely's STRtree answer (boxes meeting the query box,
    touching edges included), in ascending layer order."""
    rng = np.random.default_rng(n + wide)
    b = _random_boxes(rng, n, wide)
    index = BoxIndex(b)
    tree = shapely.STRtree(shapely.box(*b.T)) if n else None
    queries = [tuple(q) for q in _random_boxes(rng, 200, 20)]
    # queries whose edges touch a box's edges exactly
    queries += [(x1, y0, x1 + 5, y1) for x0, y0, x1, y1 in b[:50]]
    queries += [(x0 - 5, y1, x0, y1 + 5) for x0, y0, x1, y1 in b[:50]]
    for q in queries:
        got = index.query(*q)
        want = np.sort(tree.query(shapely.box(*q))) if tree is not None else []
        assert got.tolist() == list(want), q


def test_build_indexes_skips_empty_layers() -> None:
    class L:
        def __init__(self, b: np.ndarray) -> None:
            self.bounds = b

        def __len__(self) -> int:
            return len(self.bounds)

    got = build_indexes({"a": L(np.zeros((0, 4))), "b": L(np.array([[0.0, 0, 1, 1]]))})
    assert got["a"] is None and got["b"].query(0.5, 0.5, 2, 2).tolist() == [0]


# ------------------------------------------------ the index is built once, in the parent


def _record_builds(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Log the pid of every process where a Renderer builds its own index."""
    from tiledelta.render import renderer

    real = renderer.build_indexes

    def logged(layers):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(layers)

    monkeypatch.setattr(renderer, "build_indexes", logged)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork on this OS")
def test_forked_workers_share_the_parent_index_and_draw_the_same_tiles(
    sample_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two forked workers build no index (they use the parent's) and the cache they write
    is byte for byte the one a single in-process renderer writes."""
    import shutil

    one = tmp_path / "one"
    shutil.copytree(sample_project, one)
    api.seed(api.load_project(one), notify=False)

    log = tmp_path / "builds.txt"
    _record_builds(monkeypatch, log)
    project = api.load_project(sample_project).updated(render={"processes": 2})
    project.save()
    api.seed(project, notify=False)
    pids = log.read_text().split() if log.exists() else []
    # only the blank-tile renderer of the parent (no layers) builds one; no worker does
    assert set(pids) <= {str(os.getpid())}, pids
    assert _cache_bytes(sample_project) == _cache_bytes(one)


def test_spawned_workers_build_their_own_index(
    sample_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fork does not exist the workers (spawned) build the index themselves, and
    the tiles are the same."""
    import shutil

    one = tmp_path / "one"
    shutil.copytree(sample_project, one)
    api.seed(api.load_project(one), notify=False)

    monkeypatch.setattr(mp, "get_all_start_methods", lambda: ["spawn"])
    project = api.load_project(sample_project).updated(render={"processes": 2})
    project.save()
    api.seed(project, notify=False)
    assert _cache_bytes(sample_project) == _cache_bytes(one)


# ------------------------------------------------- the change map from the cache's tiles

#: Reads the cache through GDAL's ESRIC driver over a frame, resampled to the map's size
#: (in a clean interpreter: Mapnik's PROJ/GDAL data paths stay out of it).
GDAL_FRAME = """
import json, sys, numpy as np, rasterio
from rasterio.enums import Resampling
from rasterio.windows import from_bounds
conf, level, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b, w, h = json.loads(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
with rasterio.open(conf) as probe:
    finest = len(probe.overviews(1))
ovr = finest - 1 - level  # overview i is level (finest - 1 - i); the finest has none
kw = {} if ovr < 0 else {"OVERVIEW_LEVEL": ovr}
with rasterio.open(conf, **kw) as ds:
    win = from_bounds(*b, transform=ds.transform)
    px = ds.read(window=win, out_shape=(4, h, w), resampling=Resampling.bilinear)
np.save(out, px.transpose(1, 2, 0))
"""


def _sample_update(sample_project: Path) -> Path:
    """Seed the sample county, move ten buildings, update; the update's run folder."""
    import shapely.affinity

    from tiledelta.runs.folder import latest_run
    from tiledelta.sample import _read, _write

    api.seed(api.load_project(sample_project), notify=False)
    gpkg = sample_project / "data" / "county.gpkg"
    geoms, f = _read(gpkg, "buildings")
    for i in range(0, 40, 4):
        geoms[i] = shapely.affinity.translate(geoms[i], 30, 0)
    _write(gpkg, "buildings", geoms, f, "Polygon")
    api.update(api.load_project(sample_project), notify=False)
    folder = latest_run(api.load_project(sample_project))
    assert folder is not None
    return folder


def test_changemap_base_is_the_cache_tiles(sample_project: Path, tmp_path: Path) -> None:
    """The change map's base is the cache's own tiles over the frame: GDAL's ESRIC driver
    reading the same level over the same bounds gives (nearly: resampling) the same
    pixels, the moved buildings' new places show the building fill, and no layer is
    rendered for it."""
    import io
    import json
    import subprocess
    import sys

    from PIL import Image

    from tiledelta.runs.report import changemap as cm

    folder = _sample_update(sample_project)
    project = api.load_project(sample_project)
    png, info = cm.render_changemap(project, folder, layers={})  # no features at hand
    assert info["base"] == "cache"
    frame, res = cm.Bounds(*info["bounds"]), info["resolution"]
    level = cm.base_level(project, res)
    assert project.scheme.resolution(level) <= res
    base = np.asarray(cm.cache_base(project, frame, res, cm.MAP_SIZE)).astype(int)

    out = tmp_path / "gdal.npy"
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA", "ICU_DATA")}
    w, h = cm.MAP_SIZE
    run = subprocess.run(
        [sys.executable, "-c", GDAL_FRAME, str(project.cache_path / "conf.xml"), str(level),
         str(out), json.dumps(list(frame)), str(w), str(h)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    gdal = np.load(out).astype(int)
    diff = np.abs(base - gdal)
    assert diff.mean() < 3 and np.mean(diff.max(axis=-1) > 40) < 0.02, diff.mean()
    # the map itself keeps the base wherever nothing is drawn over it
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).astype(int)
    assert np.mean(np.all(shown == base, axis=-1)) > 0.5
    # the moved buildings are drawn where they are now (the cache holds the update)
    import pyproj

    to3857 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    feats = json.loads((folder / "changes.geojson").read_text())["features"]
    moved = [
        shapely.geometry.shape(f["geometry"]) for f in feats if f["properties"]["change"] == "new"
    ]
    assert len(moved) == 10
    background = np.array(cm.background_color(project))
    for g in moved:
        x, y = to3857.transform(*g.representative_point().coords[0])
        col, row = int((x - frame.xmin) / res), int((frame.ymax - y) / res)
        assert not np.array_equal(base[row, col], background), (row, col)


def test_changemap_of_a_server_run_is_drawn_by_mapnik(sample_project: Path) -> None:
    """A folder that is not about the local cache (runs-<target>/) is drawn from the data."""
    import shutil

    from tiledelta.runs.report import changemap as cm

    folder = _sample_update(sample_project)
    other = folder.parent.parent / "runs-arcgis" / folder.name
    shutil.copytree(folder, other)
    _png, info = cm.render_changemap(api.load_project(sample_project), other)
    assert info["base"] == "mapnik"


# ------------------------------------------------------- several bundles in one put_many

#: Rewrites four bundles in one put_many and SIGKILLs itself after the second rename.
KILL_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from tiledelta.grid import web_mercator
from tiledelta.stores import open_store
sys.path.insert(0, sys.argv[2])
from test_fixed_costs import TILES, tile_png
real, done = os.replace, [0]
def replace(src, dst):
    real(src, dst)
    done[0] += 1
    if done[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
store = open_store("compact", Path(sys.argv[1]), web_mercator(8))
store.put_many([(8, r, c, tile_png(r, c, 1)) for r, c in TILES])
"""

#: One tile in each of the four bundles of level 8.
TILES = [(5, 7), (5, 130), (131, 6), (200, 200)]

#: Reads tiles through GDAL's ESRIC driver: prints each one's pixels' digest.
GDAL_TILES = """
import hashlib, json, sys, rasterio
with rasterio.open(sys.argv[1]) as ds:
    out = []
    for r, c in json.loads(sys.argv[2]):
        px = ds.read(window=((r * 256, (r + 1) * 256), (c * 256, (c + 1) * 256)))
        out.append(hashlib.sha256(px.transpose(1, 2, 0).tobytes()).hexdigest())
print(json.dumps(out))
"""


def tile_png(r: int, c: int, version: int) -> bytes:
    """A tile whose colour says its address and version."""
    import io

    from PIL import Image

    a = np.zeros((256, 256, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = r % 256, c % 256, 60 * version, 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _gdal_digests(cache: Path) -> list[str]:
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA", "ICU_DATA")}
    run = subprocess.run(
        [sys.executable, "-c", GDAL_TILES, str(cache / "conf.xml"), json.dumps(TILES)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _digest(png: bytes) -> str:
    import hashlib
    import io

    from PIL import Image

    return hashlib.sha256(
        np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).tobytes()
    ).hexdigest()


def test_one_put_many_rewrites_several_bundles_readable_by_gdal(tmp_path: Path) -> None:
    from tiledelta.grid import web_mercator
    from tiledelta.stores import open_store

    pytest.importorskip("rasterio")
    cache = tmp_path / "c"
    with open_store("compact", cache, web_mercator(8)) as store:
        store.put_many([(8, r, c, tile_png(r, c, 0)) for r, c in TILES])
        assert len({store.bundle_path(8, r, c) for r, c in TILES}) == 4
        store.put_many([(8, r, c, tile_png(r, c, 1)) for r, c in TILES])
        assert [store.get(8, r, c) for r, c in TILES] == [tile_png(r, c, 1) for r, c in TILES]
    assert _gdal_digests(cache) == [_digest(tile_png(r, c, 1)) for r, c in TILES]
    assert not list(cache.rglob("*.tmp"))


def test_kill_between_renames_leaves_each_bundle_old_or_new(tmp_path: Path) -> None:
    """SIGKILL after two of four renames: two bundles new, two old, none torn; GDAL reads
    all four; the next writer removes the two temp files left."""
    import signal
    import subprocess
    import sys

    from tiledelta.grid import web_mercator
    from tiledelta.stores import open_store

    pytest.importorskip("rasterio")
    cache = tmp_path / "c"
    with open_store("compact", cache, web_mercator(8)) as store:
        store.put_many([(8, r, c, tile_png(r, c, 0)) for r, c in TILES])
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_RENAMES, str(cache), str(Path(__file__).parent)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    versions = []
    with open_store("compact", cache, web_mercator(8), create=False) as store:
        for r, c in TILES:
            got = store.get(8, r, c)
            assert got in (tile_png(r, c, 0), tile_png(r, c, 1)), (r, c)
            versions.append(int(got == tile_png(r, c, 1)))
    assert sorted(versions) == [0, 0, 1, 1]
    assert not list(cache.rglob("*.tmp"))  # the writer above cleaned what the kill left
    want = [_digest(tile_png(r, c, v)) for (r, c), v in zip(TILES, versions, strict=True)]
    assert _gdal_digests(cache) == want
