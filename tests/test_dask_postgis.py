"""PostGIS layers on the Dask engine: detection in key ranges on the workers, render tasks
reading their features by key, all in one exported snapshot; the cache, snapshot and
summary equal the local engine's byte for byte, and no password shows in a task.

Needs the PostgreSQL of ``.ci/postgres.sh`` (``TILEDELTA_PG``; skipped with the reason
otherwise) and starts a real ``dask scheduler`` with two ``dask worker`` processes
(the fixture of ``tests/test_dask.py``)."""

# ruff: noqa: F811 - the fixtures of test_dask and test_postgis, imported, are test arguments
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from test_dask import assert_same, cache_of, on_dask, scheduler  # noqa: F401
from test_postgis import DSN, STYLE, _load, _params, county, pg, psycopg, table  # noqa: F401

from tiledelta import api
from tiledelta.config import LayerConfig
from tiledelta.render import dask_engine
from tiledelta.sources import postgis, read_layers
from tiledelta.sources.chunked import read_key_range


def _project(root: Path, table: str, key: str | None = None, levels: str = "13-16") -> Path:
    root.mkdir(parents=True)
    (root / "style.xml").write_text(STYLE.format(params=_params(table)), encoding="utf-8")
    api.init_project(root, style=root / "style.xml", levels=levels, force=True)
    project = api.load_project(root).updated(render={"processes": 1})
    if key:
        project = project.updated(layers={"buildings": LayerConfig(key=key)})
    project.save()
    return root


def _edit(pg, table: str) -> None:
    """Move, delete, add, restyle; then rewrite the heap (its order changes)."""
    pg.execute(f"UPDATE {table} SET geom = ST_Translate(geom, 0.0004, 0) WHERE bid IN (20, 77)")
    pg.execute(f"DELETE FROM {table} WHERE bid IN (10, 150)")
    pg.execute(
        f"INSERT INTO {table} (kind, year_built, geom) "
        f"SELECT 'commercial', 2024, ST_Translate(geom, 0, 0.0006) FROM {table} WHERE bid = 30"
    )
    pg.execute(
        f"UPDATE {table} SET kind = CASE WHEN kind = 'commercial' THEN 'residential' "
        "ELSE 'commercial' END WHERE bid = 40"
    )
    pg.execute(f"VACUUM FULL {table}")


@pytest.mark.parametrize(("key", "task_features"), [(None, 0), (None, 30), ("ref", 30)])
def test_postgis_seed_and_update_equal_local(
    scheduler, pg, table, county, tmp_path, monkeypatch, key, task_features
):
    """``task_features`` 30: tasks read their features by key 30 at a time (``ref``: a
    repeated, partly NULL text key, whose equal keys a batch must not split)."""
    monkeypatch.setattr(dask_engine, "ROWS_PER_TASK", 97)  # several key ranges
    _load(pg, table, county)
    if key:
        pg.execute(f"ALTER TABLE {table} ADD COLUMN ref text")
        pg.execute(f"UPDATE {table} SET ref = 'r' || lpad((bid / 3)::text, 5, '0')")
        pg.execute(f"UPDATE {table} SET ref = NULL WHERE bid % 17 = 0")
    local = _project(tmp_path / "local" / "p", table, key)
    dask = _project(tmp_path / "dask" / "p", table, key)
    api.load_project(dask).updated(render={"task_features": task_features}).save()
    s1 = api.seed(api.load_project(local), notify=False)
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert s1["tiles_written"] > 20
    assert_same(local, dask, s1, s2)

    _edit(pg, table)
    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert u1["tiles_written"] > 0 and not u1.get("rebuild")
    assert u1["changes"] == u2["changes"]
    assert_same(local, dask, u1, u2)


@pytest.mark.parametrize("key", [None, "ref"])
def test_distributed_postgis_read_equals_local_read(
    scheduler, pg, table, county, tmp_path, monkeypatch, key
):
    """Key ranges read on the workers join into the local read, also with a text key
    that repeats (ties across a range edge) and is NULL on some rows (ordered last)."""
    monkeypatch.setattr(dask_engine, "ROWS_PER_TASK", 50)
    _load(pg, table, county)
    if key:
        pg.execute(f"ALTER TABLE {table} ADD COLUMN ref text")
        pg.execute(f"UPDATE {table} SET ref = 'r' || lpad((bid / 3)::text, 5, '0')")
        pg.execute(f"UPDATE {table} SET ref = NULL WHERE bid % 17 = 0")
    project = on_dask(_project(tmp_path / "p", table, key=key), scheduler)
    full = read_layers(project)["buildings"]
    with dask_engine.DaskEngine(project) as engine:
        part = engine.read_layers(project)["buildings"]
        assert len(engine.holds) == 1
    assert len(part) == len(full) == len(county[0])
    assert list(part.keys) == list(full.keys)
    assert np.array_equal(part.bounds, full.bounds)
    assert np.array_equal(part.fingerprints, full.fingerprints)
    assert list(part.null_keys) == list(full.null_keys)
    assert part.keyed and full.keyed and part.fids is None and full.fids is None
    if key:
        assert full.keys[-1] is None and len(set(full.keys)) < len(full.keys)


def test_edit_during_a_dask_seed_is_not_drawn(scheduler, pg, table, county, tmp_path, monkeypatch):
    """Render tasks read in the snapshot the detection read: an edit committed between
    the two is not drawn by the seed (its cache matches its snapshot), and the next
    update draws it."""
    _load(pg, table, county)
    local = _project(tmp_path / "local" / "p", table, levels="14-16")
    dask = _project(tmp_path / "dask" / "p", table, levels="14-16")
    s1 = api.seed(api.load_project(local), notify=False)
    edited: list[bool] = []
    executor = dask_engine.DaskEngine.executor

    def edit_then_executor(self, project, layers):  # after detection, before any render task
        pg.execute(f"UPDATE {table} SET geom = ST_Translate(geom, 0.0003, 0.0002)")
        edited.append(True)
        return executor(self, project, layers)

    monkeypatch.setattr(dask_engine.DaskEngine, "executor", edit_then_executor)
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    monkeypatch.undo()
    assert edited
    assert_same(local, dask, s1, s2)

    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert u1["tiles_written"] > 10
    assert_same(local, dask, u1, u2)
    fresh = tmp_path / "fresh" / "p"
    shutil.copytree(local, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    api.seed(api.load_project(fresh), notify=False)
    assert cache_of(fresh) == cache_of(dask)


def test_no_password_in_task_arguments_or_worker_logs(scheduler, pg, table, county, tmp_path):
    """Dask prints a failed task's arguments in the worker's log: the password travels as
    a Secret, whose repr is ``***``; the error itself names no password either."""
    _load(pg, table, county)
    password = psycopg.conninfo.conninfo_to_dict(DSN)["password"]
    shown = (f"password={password}", f"'password': '{password}'")
    project = on_dask(_project(tmp_path / "p", table), scheduler)
    src = project.style.layer("buildings")
    assert any(s in repr(src) for s in shown)  # the style's own source holds it in clear
    travels = dask_engine._sources(project)
    assert not any(s in repr(travels) for s in shown)
    assert "Secret('***')" in repr(travels)

    import distributed

    with distributed.Client(scheduler, timeout=10, set_as_default=False) as client:
        shipped = postgis.redacted(src)
        future = client.submit(
            read_key_range, shipped, "EPSG:3857", None, (None, None), "00000BAD-1", pure=False
        )
        with pytest.raises(Exception, match="snapshot") as err:
            future.result()
        assert not any(s in str(err.value) for s in shown)
        logs = "\n".join(msg for lines in client.get_worker_logs().values() for _lvl, msg in lines)
    # (distributed 2026.8 logs the task as ``read_key_range(...)``; older ones printed
    # the arguments' repr, which shows the Secret as ***)
    assert "Compute Failed" in logs and "snapshot" in logs
    assert not any(s in logs for s in shown)
    # The worker still connects with the password it was given.
    with distributed.Client(scheduler, timeout=10, set_as_default=False) as client:
        piece = client.submit(
            read_key_range, shipped, "EPSG:3857", None, (None, 50), None, pure=False
        ).result()
    assert list(piece.keys) == list(range(1, 50))


def test_composite_key_is_one_line_on_dask(scheduler, pg, table, county, tmp_path):
    _load(pg, table, county)
    pg.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
    pg.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (kind, bid)")
    root = _project(tmp_path / "p", table)
    with pytest.raises(dask_engine.ClusterError, match=r"composite primary key \(kind, bid\)"):
        api.seed(on_dask(root, scheduler), notify=False)
    assert not (root / "cache").exists() and not (root / "cache.building").exists()


def test_clatsop_buildings_in_postgis_on_dask_equal_local(
    scheduler, pg, table, tmp_path, monkeypatch
):
    """The 23,953 Clatsop buildings in a PostGIS table (WGS 84, shuffled heap), levels
    0-14: detection in key ranges of 5,000 rows, render tasks over 4,000 features read by
    key in batches; seed and update (moves, deletes, inserts) equal the local engine."""
    from conftest import shared_path

    shp = shared_path("data", "clatsop_buildings", "clatsop_buildings.shp")
    _meta, _f, geoms, _values = pyogrio.raw.read(str(shp), return_fids=True)
    kinds = ["commercial" if i % 5 == 0 else "residential" for i in range(len(geoms))]
    _load(pg, table, (list(geoms), kinds, [2000] * len(geoms)))
    monkeypatch.setattr(dask_engine, "ROWS_PER_TASK", 5000)
    local = _project(tmp_path / "local" / "p", table, levels="0-14")
    dask = _project(tmp_path / "dask" / "p", table, levels="0-14")
    api.load_project(dask).updated(render={"task_features": 4000}).save()
    s1 = api.seed(api.load_project(local), notify=False)
    s2 = api.seed(on_dask(dask, scheduler), notify=False)
    assert s1["tiles_written"] > 500
    assert_same(local, dask, s1, s2)

    pg.execute(f"UPDATE {table} SET geom = ST_Translate(geom, 0.0005, 0) WHERE bid % 3001 = 0")
    pg.execute(f"DELETE FROM {table} WHERE bid IN (17, 12000, 23900)")
    pg.execute(
        f"INSERT INTO {table} (kind, year_built, geom) SELECT 'commercial', 2024, "
        f"ST_Translate(geom, 0, 0.0007) FROM {table} WHERE bid IN (5, 9000)"
    )
    u1 = api.update(api.load_project(local), notify=False)
    u2 = api.update(on_dask(dask, scheduler), notify=False)
    assert 0 < u1["metatiles_rendered"] < 300
    assert u1["changes"] == u2["changes"]
    assert_same(local, dask, u1, u2)
