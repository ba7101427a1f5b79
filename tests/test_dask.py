"""The Dask engine on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes
on 127.0.0.1 (subprocesses, random ports). Its caches, snapshots and summaries must equal the
local engine's byte for byte; a worker killed mid-run changes nothing; an unreachable
scheduler is one line, exit 1, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import distributed
import httpx
import numpy as np
import pyogrio
import pytest
import shapely
from conftest import shared_path

from tiledelta import api, sample
from tiledelta.change import detect_changes
from tiledelta.render import dask_engine
from tiledelta.sources import read_layers

DASK = Path(sys.executable).with_name("dask")
CLI = Path(sys.executable).with_name("tiledelta")

CLATSOP_STYLE = """<Map srs="epsg:3857" background-color="#f2efe9">
  <Style name="b"><Rule>
    <PolygonSymbolizer fill="#d9d0c9"/><LineSymbolizer stroke="#b9a99a" stroke-width="0.5"/>
  </Rule></Style>
  <Layer name="buildings" srs="epsg:3857"><StyleName>b</StyleName>
    <Datasource><Parameter name="type">{kind}</Parameter>
    <Parameter name="file">{path}</Parameter></Datasource></Layer>
</Map>
"""


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> str:
    """The address of a real scheduler with two single-thread workers (with nannies)."""
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    log = (d / "cluster.log").open("wb")
    procs = [
        subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--no-dashboard", "--scheduler-file", str(sched_file)],
            stdout=log,
            stderr=log,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert procs[0].poll() is None, (d / "cluster.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [str(DASK), "worker", address, "--nthreads", "1", "--host", "127.0.0.1"]
                    + ["--no-dashboard", "--memory-limit", "0"]
                    + ["--local-directory", str(d / f"worker{i}")],
                    stdout=log,
                    stderr=log,
                )
            )
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
        log.close()


# --- what must be equal ----------------------------------------------------------------


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def mbtiles_of(path: Path) -> tuple[list, list]:
    con = sqlite3.connect(path)
    try:
        tiles = con.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles "
            "ORDER BY zoom_level, tile_column, tile_row"
        ).fetchall()
        meta = con.execute("SELECT name, value FROM metadata ORDER BY name").fetchall()
    finally:
        con.close()
    return tiles, meta


def cache_of(root: Path) -> object:
    project = api.load_project(root)
    if project.config.cache.kind == "mbtiles":
        return mbtiles_of(project.cache_path)
    return files_of(project.cache_path)


def snapshot_of(root: Path) -> list:
    con = sqlite3.connect(root / ".tiledelta" / "state.sqlite")
    try:
        return con.execute("SELECT * FROM layers ORDER BY 1").fetchall()
    finally:
        con.close()


COUNTS = (
    "tiles_written",
    "tiles_rendered",
    "tiles_blank",
    "tiles_unchanged",
    "tiles_removed",
    "metatiles_rendered",
    "levels",
    "changes",
    "rebuild",
    "kind",
)


def counts(summary: dict) -> dict:
    return {k: summary.get(k) for k in COUNTS}


def run_folder_files(summary: dict) -> dict[str, bytes]:
    folder = Path(summary["run_folder"])
    return {
        name: (folder / name).read_bytes()
        for name in ("changes.geojson", "tiles.json")
        if (folder / name).exists()
    }


def two(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The project twice, under the same folder name (MBTiles metadata names it): one for
    the local engine, one for Dask (data copied too)."""
    return copy_project(root, tmp_path / "local"), copy_project(root, tmp_path / "dask")


def on_dask(root: Path, address: str):
    return api.with_engine(api.load_project(root), None, address)


def assert_same(local: Path, dask: Path, s_local: dict, s_dask: dict) -> None:
    assert cache_of(local) == cache_of(dask)
    assert snapshot_of(local) == snapshot_of(dask)
    assert counts(s_local) == counts(s_dask)
    assert run_folder_files(s_local) == run_folder_files(s_dask)


# --- the sample county (GeoPackage, five layers, labels) -------------------------------


def batched_tasks(address: str, what: str = "batched_tasks") -> int:
    """Render tasks the cluster's workers drew in batches so far (``grouped_tasks``: those
    drawn together with others from one read)."""
    with distributed.Client(address, timeout=30) as client:
        return sum(c[what] for c in client.run(dask_engine.worker_counts).values())


@pytest.mark.parametrize(
    ("kind", "task_features"), [("compact", 0), ("mbtiles", 0), ("xyz", 0), ("compact", 25)]
)
def test_sample_seed_and_update_equal_local(
    scheduler, sample_template, tmp_path, kind, task_features
):
    """``task_features`` 25: every task holding more features reads and draws them in
    batches of 25 (labels, lines, points, polygons), with the bytes of the local engine."""
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    cache = "cache.mbtiles" if kind == "mbtiles" else "cache"
    api.init_project(root, style=root / "style.xml", levels="13-16", cache_kind=kind, force=True)
    p = api.load_project(root)
    render = {"processes": 1, "task_features": task_features}
    p.updated(render=render, cache={"path": cache}).save()
    local, dask = two(root, tmp_path)

    before, grouped = batched_tasks(scheduler), batched_tasks(scheduler, "grouped_tasks")
    s1 = api.seed(api.load_project(local), notify=False)
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert (batched_tasks(scheduler) > before) == bool(task_features)
    assert (batched_tasks(scheduler, "grouped_tasks") > grouped) == bool(task_features)
    assert s1["tiles_written"] > 50
    assert_same(local, dask, s1, s2)

    for r in (local, dask):
        assert sample.apply_edits(r)
    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert u1["tiles_written"] > 0 and not u1.get("rebuild")
    assert_same(local, dask, u1, u2)


@pytest.mark.parametrize("task_features", [0, 40])
def test_demo_county_with_hillshade_equals_local(scheduler, tmp_path, task_features):
    """The demo's county: a raster layer under the vectors (Mapnik on the workers reads the
    file; the client fingerprints its blocks) and keyed roads; the update rewrites a block
    of the hillshade too. ``task_features`` 40: the raster's pass, then the vectors' in
    batches."""
    root = tmp_path / "county"
    sample.generate(root, hillshade=True)
    api.init_project(root, style=root / "style.xml", levels="12-16", force=True)
    p = api.load_project(root)
    render = {"processes": 1, "task_features": task_features}
    p.updated(render=render, layers={"roads": {"key": "road_id"}}).save()
    local, dask = two(root, tmp_path)

    before = batched_tasks(scheduler)
    s1 = api.seed(api.load_project(local), notify=False)
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert (batched_tasks(scheduler) > before) == bool(task_features)
    assert s1["tiles_written"] > 50
    assert_same(local, dask, s1, s2)

    for r in (local, dask):
        assert any("hillshade" in line for line in sample.apply_edits(r))
    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert u1["changes"]["layers"]["hillshade"]["modified"] > 0
    assert u1["tiles_written"] > 0 and not u1.get("rebuild")
    assert_same(local, dask, u1, u2)


# --- the Clatsop buildings (shapefile, 23,953 features) --------------------------------


def _clatsop_project(root: Path) -> Path:
    shp = shared_path("data", "clatsop_buildings", "clatsop_buildings.shp")
    (root / "data").mkdir(parents=True)
    meta, _f, geoms, values = pyogrio.raw.read(str(shp), return_fids=True)
    gpkg = root / "data" / "buildings.gpkg"
    pyogrio.raw.write(
        str(gpkg), geoms, values, meta["fields"], layer="buildings", driver="GPKG",
        geometry_type="Unknown", crs=meta["crs"],
    )  # fmt: skip
    (root / "style.xml").write_text(
        CLATSOP_STYLE.format(kind="ogr", path="data/buildings.gpkg"), encoding="utf-8"
    )
    api.init_project(root, style=root / "style.xml", levels="0-14", force=True)
    api.load_project(root).updated(render={"processes": 2}).save()
    return root


def copy_project(root: Path, to: Path) -> Path:
    """``root`` copied to ``to/<same name>``, its style pointed at the copied data."""
    dest = to / root.name
    shutil.copytree(root, dest)
    style = dest / "style.xml"
    style.write_text(style.read_text().replace(str(root), str(dest)), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def clatsop(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The Clatsop buildings at levels 0-14: the unseeded project, and the same project
    seeded by the local engine with its summary (the reference, not to be modified)."""
    base = tmp_path_factory.mktemp("clatsop")
    template = _clatsop_project(base / "template" / "clatsop")
    local = copy_project(template, base / "local")
    summary = api.seed(api.load_project(local), notify=False)
    assert summary["tiles_written"] > 500
    return template, local, summary


def _edit_clatsop(root: Path) -> None:
    gpkg = root / "data" / "buildings.gpkg"
    meta, _f, geoms, values = pyogrio.raw.read(str(gpkg), return_fids=True)
    shp = shapely.from_wkb(geoms)
    n = len(shp)
    for i in range(0, n, n // 7):  # move 8 buildings spread over the file
        shp[i] = shapely.affinity.translate(shp[i], 60, -40)
    keep = np.ones(n, dtype=bool)
    keep[[5, n // 2, n - 3]] = False  # delete three
    pyogrio.raw.write(
        str(gpkg), np.asarray(shapely.to_wkb(shp[keep]), dtype=object),
        [v[keep] for v in values], meta["fields"], layer="buildings", driver="GPKG",
        geometry_type="Unknown", crs=meta["crs"],
    )  # fmt: skip


def test_clatsop_seed_and_update_equal_local(scheduler, clatsop, tmp_path, monkeypatch):
    # Several reading tasks per layer: the pieces must join into the full scan.
    monkeypatch.setattr(dask_engine, "ROWS_PER_TASK", 5000)
    template, reference, s1 = clatsop
    dask = copy_project(template, tmp_path / "dask")
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert_same(reference, dask, s1, s2)

    local = copy_project(reference, tmp_path / "local")
    _edit_clatsop(local)
    _edit_clatsop(dask)
    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert 0 < u1["metatiles_rendered"] < 200
    assert_same(local, dask, u1, u2)


def test_clatsop_seed_in_batches_equals_local(scheduler, clatsop, tmp_path):
    """Tasks of more than 4,000 buildings (levels 0-11) draw them 4,000 at a time."""
    template, reference, s1 = clatsop
    dask = copy_project(template, tmp_path / "dask")
    api.load_project(dask).updated(render={"task_features": 4000}).save()
    before, grouped = batched_tasks(scheduler), batched_tasks(scheduler, "grouped_tasks")
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert batched_tasks(scheduler) - before >= 12  # levels 0-11 at least
    # the lowest levels' tasks (a meta-tile each) are drawn together from one read
    assert batched_tasks(scheduler, "grouped_tasks") - grouped >= 4
    assert_same(reference, dask, s1, s2)


def test_distributed_read_equals_local_read(scheduler, clatsop, monkeypatch):
    """Row ranges read on the workers give the full scan's ids, keys, boxes, fingerprints."""
    monkeypatch.setattr(dask_engine, "ROWS_PER_TASK", 3000)
    project = on_dask(clatsop[0], scheduler)
    with dask_engine.DaskEngine(project) as engine:
        remote = engine.read_layers(project)
        fids = engine.fids["buildings"]
    full = read_layers(project)["buildings"]
    part = remote["buildings"]
    assert len(part) == len(full) == 23953
    assert np.array_equal(part.keys, full.keys)
    assert np.array_equal(part.bounds, full.bounds)
    assert np.array_equal(part.fingerprints, full.fingerprints)
    assert np.array_equal(part.fids, full.fids)
    assert np.array_equal(part.null_keys, full.null_keys)
    # GeoPackage feature ids start at 1, in file order.
    assert np.array_equal(fids, np.arange(1, 23954))


def test_worker_killed_mid_seed(scheduler, clatsop, tmp_path):
    template, reference, s1 = clatsop
    dask = copy_project(template, tmp_path)
    with distributed.Client(scheduler, timeout=10) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def progress(done: int, total: int) -> None:
        if not killed and done > 0:
            os.kill(victim, signal.SIGKILL)
            killed.append(done / total)

    s2 = api.seed(on_dask(dask, scheduler), notify=False, progress=progress)
    assert killed and killed[0] < 0.5, killed  # the kill happened early in the run
    assert_same(reference, dask, s1, s2)
    # The nanny brings the worker back (a new process) for the next tests.
    with distributed.Client(scheduler, timeout=10) as client:
        client.wait_for_workers(2, timeout=60)
        assert victim not in client.run(os.getpid).values()


# --- faults that stop the run before it writes -----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line(sample_project):
    before = sorted(p.name for p in sample_project.iterdir())
    address = f"tcp://127.0.0.1:{_free_port()}"
    t = time.monotonic()
    proc = subprocess.run(
        [str(CLI), "seed", "--project", str(sample_project), "--scheduler", address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - t < 60
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert address in lines[0] and "scheduler" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (sample_project / "cache").exists()
    assert not (sample_project / "cache.building").exists()
    # Only the run lock, taken before the build connects; no snapshot, no run folder.
    state = sample_project / ".tiledelta"
    assert sorted(p.name for p in state.iterdir()) == ["run.lock"]
    assert sorted(p.name for p in sample_project.iterdir()) == sorted([*before, ".tiledelta"])


def test_a_task_over_its_timeout_stops_the_run_naming_it(scheduler, tmp_path):
    """``[render] metatile_timeout`` holds on Dask too: per meta-tile of a task, counted
    from when the task is first in line; one line, exit 1, no cache, no snapshot."""
    from test_faults import heavy_project

    d = heavy_project(tmp_path / "heavy", vertices=200_000)
    api.load_project(d).updated(render={"metatile_timeout": 0.05}).save()
    t = time.monotonic()
    proc = subprocess.run(
        [str(CLI), "seed", "--project", str(d), "--scheduler", scheduler],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert time.monotonic() - t < 120
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("Dask: ")]
    assert len(lines) == 1, proc.stderr
    assert "meta-tile row" in lines[0] and "metatile_timeout = 0.05 s" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not (d / "cache").exists()
    state = d / ".tiledelta" / "state.sqlite"
    if state.exists():  # no snapshot recorded
        con = sqlite3.connect(state)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            assert "layers" not in tables or not con.execute("SELECT 1 FROM layers").fetchall()
        finally:
            con.close()


def test_source_missing_on_workers_stops_before_writing(scheduler, sample_project):
    project = on_dask(sample_project, scheduler)
    gpkg = next(sample_project.rglob("*.gpkg"))
    gpkg.rename(gpkg.with_suffix(".moved"))
    with pytest.raises(
        dask_engine.ClusterError,
        match=r"county.gpkg does not exist on Dask worker tcp://127.0.0.1:\d+; ",
    ):
        api.seed(project, notify=False)
    assert not (sample_project / "cache").exists()
    assert not (sample_project / "cache.building").exists()


def test_raster_unreadable_stops_before_writing(scheduler, tmp_path):
    """A raster layer's file that is not a raster, or is gone: one line naming it, before
    anything is written; the workers' start check says the same of their own view."""
    from tiledelta.errors import TileDeltaError
    from tiledelta.sources.chunked import check_source

    root = tmp_path / "county"
    sample.generate(root, hillshade=True)
    api.init_project(root, style=root / "style.xml", levels="13-14", force=True)
    src = api.load_project(root).style.layer("hillshade")
    assert check_source(src) is None
    tif = root / "data" / "hillshade.tif"
    tif.write_bytes(b"not a GeoTIFF")
    assert check_source(src).startswith(f"layer 'hillshade': cannot open {tif} (")
    with pytest.raises(TileDeltaError, match=r"hillshade.tif") as err:
        api.seed(on_dask(root, scheduler), notify=False)
    assert "\n" not in str(err.value)
    tif.unlink()
    assert check_source(src) == f"layer 'hillshade': {tif} does not exist"
    with pytest.raises(TileDeltaError, match=r"hillshade.tif"):
        api.seed(on_dask(root, scheduler), notify=False)
    assert not (root / "cache").exists() and not (root / "cache.building").exists()


def test_missing_extra_is_one_line(sample_project, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    project = api.with_engine(api.load_project(sample_project), "dask", None)
    with pytest.raises(dask_engine.ClusterError, match=r"tiledelta\[dask\]"):
        api.seed(project, notify=False)
    assert not (sample_project / "cache").exists()


# --- the client killed mid-run ---------------------------------------------------------

SELF_KILL = """
import os, signal, sys
from tiledelta.stores.compact import CompactCache
real = CompactCache.put_many
def put_many(self, tiles):
    n = real(self, tiles)
    os.kill(os.getpid(), signal.SIGKILL)  # the client dies after its first bundle
    return n
CompactCache.put_many = put_many
from tiledelta.cli import main
sys.argv = ["tiledelta", "update", "--project", sys.argv[1], "--scheduler", sys.argv[2]]
main()
"""


def tiles_of(root: Path) -> dict:
    from tiledelta.stores import open_project_store

    with open_project_store(api.load_project(root), create=False) as store:
        return {a: store.get(*a) for a in store.iter_tiles()}


def test_client_killed_mid_update_next_run_finishes(scheduler, sample_template, tmp_path):
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    api.init_project(root, style=root / "style.xml", levels="13-16", force=True)
    api.load_project(root).updated(render={"processes": 1}).save()
    api.seed(api.load_project(root), notify=False)
    local, dask = two(root, tmp_path)
    for r in (local, dask):
        assert sample.apply_edits(r)
    api.update(api.load_project(local), notify=False)  # the uninterrupted run

    proc = subprocess.run(
        [sys.executable, "-c", SELF_KILL, str(dask), scheduler],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert tiles_of(dask) != tiles_of(local), "the killed run finished its work: moot"
    changes = detect_changes(api.load_project(dask))
    assert changes.journal, "the killed run left no journal"
    api.update(on_dask(dask, scheduler), notify=False)
    assert tiles_of(dask) == tiles_of(local)
    assert snapshot_of(dask) == snapshot_of(local)
    assert not detect_changes(api.load_project(dask)).any


def test_bad_scheduler_address_is_one_line(sample_project):
    proc = subprocess.run(
        [str(CLI), "seed", "--project", str(sample_project), "--scheduler", "sched:8786"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tiledelta: error: --scheduler sched:8786: not a Dask scheduler address; give one "
        "like tcp://host:8786"
    ]
    assert not (sample_project / "cache").exists()


# --- client memory: the chunked multiset diff and the streamed merge ------------------


def _reference_multiset(ofp: np.ndarray, nfp: np.ndarray) -> tuple[int, int, set, set]:
    """Added, deleted and the changed old/new positions, from Python's Counter (an
    oracle that shares nothing with the numpy diff)."""
    from collections import Counter

    oc, nc = Counter(ofp.tolist()), Counter(nfp.tolist())
    changed = {v for v in oc.keys() | nc.keys() if oc[v] != nc[v]}
    added = sum(max(nc[v] - oc[v], 0) for v in changed)
    deleted = sum(max(oc[v] - nc[v], 0) for v in changed)
    gone = {i for i, v in enumerate(ofp.tolist()) if v in changed}
    came = {i for i, v in enumerate(nfp.tolist()) if v in changed}
    return added, deleted, gone, came


@pytest.mark.parametrize("edit", ["adds", "deletes", "modifies", "moves", "reorders", "dups"])
def test_chunked_multiset_diff_matches_counter_oracle(monkeypatch, edit):
    """The multiset diff (no key) in chunks of 7 rows gives what a Counter says, and the
    same LayerChange as in one chunk: counts, boxes, new_idx, reordered, moved boxes."""
    from tiledelta.change import diff
    from tiledelta.change.snapshot import LayerSnapshot
    from tiledelta.sources import LayerData

    rng = np.random.default_rng(len(edit))
    n = 300
    ofp = rng.integers(0, 2**63, n, dtype=np.uint64)
    ofp[::10] = ofp[0]  # duplicate fingerprints (identical features) on both sides
    obox = rng.random((n, 4))
    nfp, nbox = ofp.copy(), obox.copy()
    if edit == "adds":
        nfp = np.concatenate([nfp, rng.integers(0, 2**63, 25, dtype=np.uint64), ofp[:3]])
        nbox = np.concatenate([nbox, rng.random((28, 4))])
    elif edit == "deletes":
        keep = np.ones(n, bool)
        keep[rng.choice(n, 40, replace=False)] = False
        keep[10] = False  # one copy of the duplicated fingerprint
        nfp, nbox = nfp[keep], nbox[keep]
    elif edit in ("modifies", "moves"):
        at = rng.choice(n, 30, replace=False)
        nfp[at] = rng.integers(0, 2**63, 30, dtype=np.uint64)
        if edit == "moves":
            nbox[at] += 5.0
    elif edit == "reorders":
        nfp[[5, 250]], nbox[[5, 250]] = nfp[[250, 5]], nbox[[250, 5]]
        nfp[17] = 12345
    else:  # dups: more and fewer copies of repeated values
        nfp = np.concatenate([nfp[nfp != ofp[0]][:-5], np.repeat(ofp[0], 40)])
        nbox = rng.random((len(nfp), 4))
    old = LayerSnapshot(keys=np.arange(n), fingerprints=ofp, bounds=obox)
    new = LayerData(
        name="l",
        keys=np.arange(len(nfp)),
        wkb=np.empty(len(nfp), dtype=object),
        bounds=nbox,
        attrs={},
        fingerprints=nfp,
    )
    whole = diff.diff_layer(old, new, keyed=False)
    monkeypatch.setattr(diff, "CHUNK", 7)
    small = diff.diff_layer(old, new, keyed=False)
    added, deleted, gone, came = _reference_multiset(ofp, nfp)
    assert (small.added, small.deleted, small.modified) == (added, deleted, 0)
    assert set(small.new_idx.tolist()) == came
    assert sorted(map(tuple, small.old_boxes.tolist())) == sorted(tuple(obox[i]) for i in gone)
    for a, b in ((whole, small),):
        assert (a.added, a.deleted, a.reordered) == (b.added, b.deleted, b.reordered)
        for f in ("old_boxes", "new_boxes", "new_idx", "moved_boxes"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
    if edit == "reorders":
        assert small.reordered > 0
    if edit != "reorders" and edit != "dups":
        assert small.changed


def test_piece_merger_equals_concatenation():
    """Pieces merged one by one equal their concatenation; keys equal to the feature ids
    share their array, other keys are kept as they came."""
    from tiledelta.sources.chunked import LayerPiece, PieceMerger
    from tiledelta.style import LayerSource

    src = LayerSource(name="l", kind="ogr", path="x.gpkg")

    def piece(lo: int, hi: int, keys: np.ndarray | None = None) -> LayerPiece:
        fids = np.arange(lo, hi, dtype=np.int64)
        return LayerPiece(
            fids=fids,
            keys=fids.copy() if keys is None else keys,
            bounds=np.full((hi - lo, 4), float(lo)),
            fingerprints=fids.astype(np.uint64) * 3,
            null_keys=np.zeros(0, dtype=np.int64),
            keyed=keys is not None,
        )

    for pieces in (
        [piece(1, 4), piece(4, 4), piece(4, 9)],
        [
            piece(1, 4, np.array(["a", "b", "c"], dtype=object)),
            piece(4, 6, np.array(["d", "e"], dtype=object)),
        ],
        [piece(1, 3), piece(3, 5, np.array([7, 8]))],
    ):
        merger = PieceMerger(src, 5)  # fewer rows than given: it grows
        for p in pieces:
            merger.add(p)
        data, fids = merger.result()
        assert np.array_equal(fids, np.concatenate([p.fids for p in pieces]))
        assert list(data.keys) == list(np.concatenate([p.keys for p in pieces]))
        assert np.array_equal(data.bounds, np.concatenate([p.bounds for p in pieces]))
        assert np.array_equal(data.fingerprints, np.concatenate([p.fingerprints for p in pieces]))
        assert len(data) == len(fids) and data.keyed == pieces[0].keyed


def test_a_render_task_result_travels_in_one_frame():
    """A task's tiles cross the wire as one pickle, not a header and a frame per tile (a
    plain list of tuples holding bytes is split so by Dask's message encoding, the one a
    worker's ``get_data`` answer goes through)."""
    from distributed.protocol import dumps, loads, to_serialize

    tiles = [(14, r, c, bytes([r, c]) * 3000) for r in range(16) for c in range(32)]
    assert len(dumps({"data": {"k": to_serialize(list(tiles))}})) > len(tiles)  # the cost
    frames = dumps({"data": {"k": to_serialize(dask_engine.Drawn(tiles))}})
    assert len(frames) <= 4
    back = loads(frames)["data"]["k"]
    assert isinstance(back, dask_engine.Drawn) and list(back) == tiles


def _lean_settings() -> dict:
    import dask

    return {key: dask.config.get(key) for key in dask_engine.LEAN_CONFIG}


def _scheduler_settings(dask_scheduler) -> tuple[float, bool]:
    return dask_scheduler._tick_interval, "stealing" in dask_scheduler.extensions


def test_engine_without_scheduler_starts_a_lean_local_cluster(sample_template, tmp_path):
    """``engine = "dask"`` with no scheduler: tiledelta's own LocalCluster of ``processes``
    workers, its scheduler and workers running with LEAN_CONFIG (what docs/dask.md
    measures), and a seed through it equal to the local engine's byte for byte."""
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    api.init_project(root, style=root / "style.xml", levels="13-16", force=True)
    api.load_project(root).updated(render={"processes": 2}).save()
    local, dask = two(root, tmp_path)
    on_cluster = api.with_engine(api.load_project(dask), "dask", None)
    assert on_cluster.config.render.scheduler is None

    with dask_engine.open_engine(on_cluster) as engine:
        assert engine.cluster is not None and engine.threads == 2
        workers = engine.client.run(_lean_settings)
        assert list(workers.values()) == [dask_engine.LEAN_CONFIG] * 2
        # the scheduler runs in this process: its settings were read when it started
        assert engine.client.run_on_scheduler(_scheduler_settings) == (1.0, False)
        # its dashboard, whose address the run prints, is a real page
        assert engine.dashboard is not None
        page = httpx.get(engine.dashboard, timeout=30)
        assert page.status_code == 200 and "<title>Dask Diagnostic UI</title>" in page.text
    assert _lean_settings() != dask_engine.LEAN_CONFIG  # this process keeps its own

    s1 = api.seed(api.load_project(local), notify=False)
    s2 = api.seed(on_cluster, notify=False)
    assert s1["tiles_written"] > 50
    assert_same(local, dask, s1, s2)


def test_a_slow_task_does_not_hold_back_the_others(scheduler, sample_project):
    """Results come back in task order, but a worker does not idle behind a slow task:
    while the first call sleeps, the other worker goes on through the fast ones (with
    only IN_FLIGHT per thread submitted, three at most could start before it ends). The
    times are the scheduler's own task stream."""
    naps = [1.5] + [0.05] * 16
    with dask_engine.DaskEngine(on_dask(sample_project, scheduler)) as engine:
        assert engine.threads == 2
        with distributed.get_task_stream(client=engine.client) as stream:
            assert list(engine._ordered((time.sleep, s) for s in naps)) == [None] * 17
    runs = [
        (part["start"], part["stop"])
        for task in stream.data
        for part in task["startstops"]
        if part["action"] == "compute"
    ]
    assert len(runs) == 17
    slow = [r for r in runs if r[1] - r[0] > 1.0]
    assert len(slow) == 1
    started_meanwhile = sum(
        start < slow[0][1] for start, _stop in runs if (start, _stop) not in slow
    )
    # All that may be submitted besides the slow one, less those the scheduler may have
    # queued behind it on its own worker; the old rule allowed 3.
    limit = dask_engine.IN_FLIGHT * 2
    assert started_meanwhile >= dask_engine.AHEAD * limit - 1 - dask_engine.IN_FLIGHT > limit


def test_no_dashboard_address_without_bokeh(sample_project, monkeypatch):
    """Without bokeh a scheduler serves only a page asking for it: no address is printed."""
    monkeypatch.setattr(dask_engine, "find_spec", lambda name: None)  # travels with the check
    said: list[str] = []
    project = api.with_engine(api.load_project(sample_project), "dask", None)
    with dask_engine.DaskEngine(project, said.append) as engine:
        assert engine.dashboard is None
    assert said[0].startswith("Dask: ") and "dashboard" not in said[0]


def test_a_run_ended_early_drops_its_queued_tasks(scheduler, sample_project):
    """When the consumer stops (an error, a timeout, Ctrl-C), the tasks submitted ahead are
    cancelled at once, not left to run and hold their results on the workers."""
    naps = [0.01] + [3.0] * 11
    # a lambda: pickled whole (the scheduler can't import this module)
    _sleeps_held = lambda dask_scheduler: sum(  # noqa: E731
        str(key).startswith("sleep-") for key in dask_scheduler.tasks
    )
    with dask_engine.DaskEngine(on_dask(sample_project, scheduler)) as engine:
        results = engine._ordered((time.sleep, s) for s in naps)
        assert next(results) is None
        assert engine.client.run_on_scheduler(_sleeps_held) > 2
        results.close()
        deadline = time.monotonic() + 2.0  # well before the first 3 s sleep ends
        while engine.client.run_on_scheduler(_sleeps_held) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.client.run_on_scheduler(_sleeps_held) == 0
