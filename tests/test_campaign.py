"""Regressions found by replaying the fault campaign (issue 12)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from test_faults import _delete_rows, assert_one_line_error, cli, runs_recorded, tree_digest

from tiledelta import api
from tiledelta.errors import MassDeleteError
from tiledelta.sources.gdal import shown

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _blocked(tid: int) -> int:
    """The signal mask of thread ``tid`` of this process (``SigBlk`` in /proc)."""
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


def _child(parent: int, out) -> None:  # a forked render worker's start, as pool._init does
    import threading

    from tiledelta.render.lifeline import bind_to_parent

    bind_to_parent(parent)
    life = next(t for t in threading.enumerate() if t.name == "lifeline")
    term = 1 << (signal.SIGTERM - 1)
    assert life.native_id is not None
    out.send(
        (bool(_blocked(life.native_id) & term), bool(_blocked(threading.get_native_id()) & term))
    )


@linux
def test_lifeline_thread_never_takes_sigterm() -> None:
    """The worker's lifeline thread blocks SIGTERM; the main thread does not. A SIGTERM taken
    by the sleeping thread leaves a worker blocked in the pool queue's semaphore for ever
    (the demo's update hung 6 minutes in Pool.terminate() that way)."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(os.getpid(), send))
    p.start()
    assert recv.poll(20), "the child did not answer"
    life_blocks, main_blocks = recv.recv()
    p.join(10)
    assert life_blocks and not main_blocks


def _waiter(parent: int, ready, sem) -> None:
    from tiledelta.render.lifeline import bind_to_parent
    from tiledelta.render.pool import _leave

    bind_to_parent(parent)
    signal.signal(signal.SIGTERM, _leave)
    ready.release()
    sem.acquire()  # as an idle pool worker waits on the queue's read lock


@linux
def test_worker_blocked_on_a_semaphore_leaves_on_sigterm() -> None:
    ctx = mp.get_context("fork")
    for _ in range(5):
        ready, sem = ctx.Semaphore(0), ctx.Semaphore(0)
        p = ctx.Process(target=_waiter, args=(os.getpid(), ready, sem))
        p.start()
        assert ready.acquire(timeout=20)
        time.sleep(0.6)  # the lifeline thread has slept and woken at least once
        p.terminate()
        p.join(5)
        alive = p.exitcode is None
        if alive:
            p.kill()
            p.join()
        assert not alive, "a worker blocked on a semaphore ignored SIGTERM"
        assert p.exitcode == 128 + signal.SIGTERM


def test_connection_string_password_is_masked() -> None:
    dsn = "PG:host=db port=5432 dbname=gis user=u password=S3cr3t-Planted!"
    assert "S3cr3t" not in shown(dsn)
    assert shown(dsn).startswith("PG:host=db port=5432 dbname=gis user=u password=")
    assert shown("/data/x password=1.shp") == "/data/x password=1.shp"  # a file path stays


def test_mass_delete_guard_holds_on_a_rebuild(sample_project: Path) -> None:
    """A style edit forces a rebuild, which diffs no layer: a source emptied at the same
    time must still stop, before anything is written (it emptied the cache, exit 0)."""
    api.seed(api.load_project(sample_project))
    cache, state = tree_digest(sample_project / "cache"), runs_recorded(sample_project)
    style = sample_project / "style.xml"
    text = style.read_text(encoding="utf-8")
    style.write_text(text.replace("<Map ", '<Map buffer-size="1" ', 1), encoding="utf-8")
    gone = _delete_rows(sample_project / "data" / "county.gpkg", "buildings", 1.0)
    out = cli("update", "--project", str(sample_project))
    assert_one_line_error(out, "'buildings'", f"delete {gone:,} of {gone:,}", "--allow-mass-delete")
    with pytest.raises(MassDeleteError):
        api.update(api.load_project(sample_project))
    assert tree_digest(sample_project / "cache") == cache
    assert runs_recorded(sample_project) == state


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def test_a_failed_runs_pool_is_stopped_even_when_a_worker_misses_its_sigterm(monkeypatch) -> None:
    """The error path's terminate() is bounded: a worker that never takes its SIGTERM
    is killed after the grace period, so the run ends (and its lock with it)."""
    from tiledelta.render import pool as render_pool

    monkeypatch.setattr(render_pool, "STOP_GRACE", 1.0)
    pool = mp.get_context("fork").Pool(2, initializer=_ignore_sigterm)
    workers = list(pool._pool)
    assert pool.apply(abs, (-3,)) == 3  # the workers are up
    busy = [pool.apply_async(time.sleep, (60,)) for _ in workers]  # noqa: F841 - stuck
    time.sleep(0.5)
    t0 = time.monotonic()
    render_pool._stop(pool)
    took = time.monotonic() - t0
    assert all(not p.is_alive() for p in workers)
    assert took < 5, f"stopping took {took:.1f} s"
    assert any(p.exitcode == -signal.SIGKILL for p in workers)
