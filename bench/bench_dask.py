"""The Dask engine against the local pool: overhead, worker memory, distributed detection.

    .venv/bin/python bench/bench_dask.py [--levels 0-16] [--repeat 2]
        [--memory-levels 0-14] [--copies 10] [--detect 0]

1. **Overhead**: a full seed of the Clatsop buildings (23,953, shapefile) at ``--levels``
   with the local pool (2 processes, no cluster up) and with Dask (a fresh LocalCluster
   of 2 single-thread worker processes, started and warmed by a small seed before the
   clock): the one tiledelta starts (``engine = "dask"``, no scheduler:
   ``dask_engine.LEAN_CONFIG``) and the same with Dask's default settings; interleaved
   ``--repeat`` times; the best and the median of each. Goal: Dask at most 15 % slower.
2. **Worker memory**: seeds at ``--memory-levels`` of the buildings and of ``--copies``
   copies shifted side by side (a fresh cluster each), and the workers' peak RSS.
   Goal: at most 1.5x.
3. **Distributed detection** (``--detect N``, off by default: slow here): N synthetic
   polygons, a snapshot, 100 restyled + 100 deleted + 1,000 unused-attribute edits, then
   the distributed read + fingerprint + diff; seconds and the client's peak RSS
   (goal: under 1 GB at 10,000,000), and the snapshot record step's own peak.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from common import copies_project, make_project, proc_status_mb, vm_hwm_mb


def _cluster(n: int, lean: bool = True):
    """A fresh LocalCluster of ``n`` workers: the one tiledelta starts (``lean``: its
    :data:`~tiledelta.render.dask_engine.LEAN_CONFIG`), or the same with Dask's defaults
    (what ``dask scheduler`` and ``dask worker`` run with, as installed)."""
    import distributed

    from tiledelta.render.dask_engine import local_cluster

    if lean:
        cluster = local_cluster(n)
    else:
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )  # fmt: skip
    client = distributed.Client(cluster)
    client.run(_warm)
    return cluster, client


def _warm() -> None:
    """On a worker: import what a render task needs, as a long-running worker has."""
    import tiledelta.render.renderer  # noqa: F401


def _peak_mb() -> float:
    """This process's own peak RSS (:func:`common.vm_hwm_mb`: ``VmHWM``, not ``ru_maxrss``,
    which a spawned worker inherits from its parent: a bench parent holding 240 MB more gave
    fresh workers 381 MB against 62 MB). Run on workers too (``Client.run``)."""
    return vm_hwm_mb()


def _rss_mb() -> float | None:
    """This process's RSS now (``VmRSS``), or None where there is no ``/proc``."""
    return proc_status_mb("VmRSS")


def _reset_peak() -> bool:
    """Start ``VmHWM`` again from the RSS now (Linux ``clear_refs``), so the next
    :func:`_peak_mb` is one step's own peak; False where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _worker_peak_mb(client) -> float:
    return max(client.run(_peak_mb).values())


def _seed(root: Path, scheduler: str | None) -> tuple[float, dict]:
    from tiledelta.api import load_project, seed

    project = load_project(root).updated(render={"processes": 2})
    if scheduler:
        project = project.updated(render={"engine": "dask", "scheduler": scheduler})
    t = time.perf_counter()
    result = seed(project, notify=False)
    return time.perf_counter() - t, result


def overhead(tmp: Path, levels: str, repeat: int) -> None:
    root = make_project(tmp / "clatsop", levels)
    warm = make_project(tmp / "warm", "0-2")  # the same data, three levels: a warm-up seed
    runs: dict[str, list[float]] = {"local": [], "dask": [], "lean": []}
    cpu: dict[str, list[float]] = {"local": [], "dask": [], "lean": []}  # all processes
    for _ in range(repeat):
        # Interleaved, so the machine's drift falls on each alike. No cluster is up while
        # the local pool runs: an idle Dask cluster takes CPU (heartbeats, monitors, the
        # profiler: about 7 % of this machine's two cores).
        c0 = os.times()
        t, r1 = _seed(root, None)
        c1 = os.times()
        runs["local"].append(t)
        cpu["local"].append(_cpu(c1, True) - _cpu(c0, True))
        for name, lean in (("dask", False), ("lean", True)):
            # A fresh cluster, warmed by a small seed before the clock (a worker makes its
            # renderer afresh for each run, so this is a long-running cluster's state).
            cluster, client = _cluster(2, lean)
            try:
                _seed(warm, cluster.scheduler_address)
                w0, c0 = client.run(_own_cpu), os.times()
                t, r2 = _seed(root, cluster.scheduler_address)
                w1, c1 = client.run(_own_cpu), os.times()
                workers = sum(w1[k] - w0[k] for k in w0)
                cpu[name].append(_cpu(c1, False) - _cpu(c0, False) + workers)
            finally:
                client.close()
                cluster.close()
            runs[name].append(t)
            assert r1["tiles_written"] == r2["tiles_written"]
    lo, lo_med = min(runs["local"]), statistics.median(runs["local"])
    print(f"1. full seed, Clatsop buildings, levels {levels}, {repeat} interleaved runs each")
    print(
        f"   tiles stored            {r1['tiles_written']:>10,}"
        f"  ({r1['metatiles_rendered']:,} meta-tiles)"
    )
    rows = (
        ("local", "local pool, 2 processes"),
        ("dask", "Dask, Dask's defaults"),
        ("lean", "Dask, tiledelta's cluster"),
    )
    for name, label in rows:
        xs = runs[name]
        print(
            f"   {label:<27} best {min(xs):>5.2f} s, median {statistics.median(xs):>5.2f} s"
            f"   (runs: {_list(xs)}); CPU median {statistics.median(cpu[name]):.2f} s"
        )
    for name, label in rows[1:]:
        best = min(runs[name]) / lo
        med = statistics.median(runs[name]) / lo_med
        cpu_ratio = statistics.median(cpu[name]) / statistics.median(cpu["local"])
        print(
            f"   {label} / local: best {best:.2f}x, median {med:.2f}x (goal: at most 1.15x);"
            f" CPU {cpu_ratio:.2f}x"
        )
    from tiledelta.render.dask_engine import LEAN_CONFIG

    print(f"   tiledelta's LocalCluster: {LEAN_CONFIG}")


def _cpu(t: os.times_result, children: bool) -> float:
    """CPU seconds of this process (and of its waited-for children: the local pool)."""
    own = t.user + t.system
    return own + (t.children_user + t.children_system if children else 0.0)


def _own_cpu() -> float:
    """On a worker: its process's CPU seconds."""
    t = os.times()
    return t.user + t.system


def _list(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def memory(tmp: Path, levels: str, copies: int) -> None:
    from tiledelta.api import load_project

    print(f"2. worker peak memory, levels {levels}, Dask with 2 workers (a fresh cluster each)")
    rows = []
    # 1x and Nx with the default [render] task_features, then Nx with no limit (the
    # worker holds every feature a task needs, as before batched drawing)
    for n, limit in ((1, None), (copies, None), (copies, 0)):
        root = copies_project(tmp / f"x{n}-{limit}", levels, n)
        if limit is not None:
            load_project(root).updated(render={"task_features": limit}).save()
        cluster, client = _cluster(2)
        try:
            base = _worker_peak_mb(client)
            t, result = _seed(root, cluster.scheduler_address)
            peak = _worker_peak_mb(client)
        finally:
            client.close()
            cluster.close()
        rows.append((peak, peak - base))
        what = "task_features 0" if limit == 0 else "default"
        print(
            f"   {n:>2} x buildings ({23953 * n:>7,}, {what:<15}) {t:>7.1f} s, "
            f"{result['tiles_written']:>7,} tiles, worker peak RSS {peak:>6.0f} MB "
            f"(at start {base:.0f} MB)"
        )
    print(f"   ratio of peaks          {rows[1][0] / rows[0][0]:>10.2f}x   (goal: at most 1.5x)")
    print(f"   ratio of growth over start {rows[1][1] / max(rows[0][1], 1):>7.2f}x")
    print(f"   without a limit: ratio of peaks {rows[2][0] / rows[0][0]:.2f}x")


def _detect_step(root: str, address: str, record: bool, out) -> None:
    """In a fresh process (its peak RSS is the step's own): the distributed read, then
    either the snapshot record or change detection against it."""
    from tiledelta.api import load_project
    from tiledelta.change import detect_changes, record_build
    from tiledelta.render.dask_engine import DaskEngine

    project = load_project(root).updated(render={"engine": "dask", "scheduler": address})
    t = time.perf_counter()
    with DaskEngine(project, say=lambda _m: None) as engine:
        layers = engine.read_layers(project)
        read_peak = _peak_mb()  # the client's peak up to here: the distributed read
        if record:
            result = {"record_before": _rss_mb(), "record_peak": None}
            reset = _reset_peak()
            t_record = time.perf_counter()
            record_build(project, layers, project.levels, kind="bench")
            result["record_seconds"] = time.perf_counter() - t_record
            if reset:  # the record step's own peak, over the RSS it started from
                result["record_peak"] = _peak_mb()
        else:
            c = detect_changes(project, layers).layers["parcels"]
            result = {"added": c.added, "modified": c.modified, "deleted": c.deleted}
    result["seconds"] = time.perf_counter() - t
    result["read_peak"] = read_peak
    result["peak"] = max(_peak_mb(), read_peak)  # VmHWM may have been reset since the read
    out.put(result)


def _in_child(*args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_detect_step, args=(*args, q))
    proc.start()
    result = q.get()
    proc.join()
    return result


def detect(tmp: Path, n: int) -> None:
    import bench_detect

    from tiledelta.api import init_project

    root = tmp / "detect"
    root.mkdir()
    t = time.perf_counter()
    gen = mp.get_context("fork").Process(target=bench_detect.generate, args=(root, n))
    gen.start()
    gen.join()
    (root / "style.xml").write_text(bench_detect.STYLE)
    init_project(root, style=root / "style.xml", levels="10-19", force=True)
    print(
        f"3. distributed change detection, {n:,} features "
        f"(generated in {time.perf_counter() - t:.0f} s)"
    )
    cluster, client = _cluster(2)
    try:
        snap = _in_child(str(root), cluster.scheduler_address, True)
        (root / "cache").mkdir()  # detection only; no tiles are rendered here
        con = sqlite3.connect(root / "parcels.gpkg")
        bench_detect._gpkg_functions(con)
        with con:
            con.execute("UPDATE parcels SET kind = 'a' WHERE fid % 10007 = 1 AND kind = 'b'")
            con.execute("DELETE FROM parcels WHERE fid % 10009 = 2")
            con.execute("UPDATE parcels SET owner = 'someone else' WHERE fid % 997 = 3")
        con.close()
        found = _in_child(str(root), cluster.scheduler_address, False)
        workers = _worker_peak_mb(client)
    finally:
        client.close()
        cluster.close()
    print(f"   snapshot (distributed read + record) {snap['seconds']:.1f} s, client peak "
          f"{snap['peak']:.0f} MB (after the read {snap['read_peak']:.0f} MB)")  # fmt: skip
    if snap["record_peak"] is not None:
        print(f"   record step alone       {snap['record_seconds']:.1f} s, peak "
              f"{snap['record_peak']:.0f} MB from an RSS of {snap['record_before']:.0f} MB "
              "before it")  # fmt: skip
    print(f"   detected                {found['added']} added, {found['modified']} modified, "
          f"{found['deleted']} deleted")  # fmt: skip
    print(f"   read + fingerprint + diff {found['seconds']:>8.1f} s on 2 workers")
    print(f"   client peak RSS         {found['peak']:>10.0f} MB (goal: under 1,024; "
          f"{found['read_peak']:.0f} MB after the read)")  # fmt: skip
    print(f"   worker peak RSS         {workers:>10.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--levels", default="0-16")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--memory-levels", default="0-14")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--detect", type=int, default=0, help="features for part 3 (0: skip)")
    ap.add_argument("--only", choices=["overhead", "memory", "detect"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "overhead"):
            overhead(Path(tmp), args.levels, args.repeat)
        if args.only in (None, "memory"):
            memory(Path(tmp), args.memory_levels, args.copies)
        if args.detect and args.only in (None, "detect"):
            detect(Path(tmp), args.detect)


if __name__ == "__main__":
    main()
