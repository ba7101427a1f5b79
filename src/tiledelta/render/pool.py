"""Run a tile plan: render meta-tiles in worker processes, write tiles bundle by bundle.

Workers draw and encode; the parent process is the only writer, and it
writes each bundle (128×128 tiles) once, after all its meta-tiles are drawn.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool

from tiledelta.config import RenderSettings
from tiledelta.errors import DiskFull, RenderTimeout, os_error
from tiledelta.grid import BUNDLE_PACKET, Bounds, TilingScheme, metatile_tiles
from tiledelta.plan import TilePlan
from tiledelta.project import Project
from tiledelta.render._mapnik import mapnik
from tiledelta.render.index import BoxIndex, build_indexes
from tiledelta.render.lifeline import bind_to_parent
from tiledelta.render.renderer import Renderer
from tiledelta.render.stats import CHUNK, BlankFill, RunStats, Solid, TileResult
from tiledelta.render.throttle import Throttle
from tiledelta.sources import LayerData
from tiledelta.style import Style

log = logging.getLogger(__name__)

BUNDLE = BUNDLE_PACKET  # tasks group meta-tiles by bundle

_renderer: Renderer | None = None

#: A task: (level, [(mrow, mcol, wanted tiles or None), ...]).
Task = tuple[int, list[tuple[int, int, tuple | None]]]
#: Renders tasks elsewhere, yielding each task's tiles in task order.
Executor = Callable[[Iterator[Task]], Iterator[list[TileResult]]]


def _init(
    style: Style,
    scheme: TilingScheme,
    layers: dict[str, LayerData],
    settings,
    parent: int | None = None,
    index: dict[str, BoxIndex | None] | None = None,
) -> None:
    """Make this process's renderer. ``index`` is the layers' index built by the parent
    before the pool forked (its pages shared); without it the renderer builds its own."""
    global _renderer
    if parent is not None:  # a worker process: it dies with the run (render/lifeline.py)
        bind_to_parent(parent)
        # Ctrl-C signals the whole process group: the parent stops the run and ends the
        # pool; a worker that raised KeyboardInterrupt too would print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # SIGTERM (to the group, or the pool's own terminate()): leave by SystemExit, so a
        # worker waiting for a task lets go of the pool's queue lock; one killed holding it
        # would hang the parent's Pool.terminate() for ever.
        signal.signal(signal.SIGTERM, _leave)
    mapnik.clear_cache()
    _renderer = Renderer(style, scheme, layers, settings, index=index)


def _leave(signum: int, _frame: object) -> None:
    """A worker's SIGTERM handler: exit quietly, unwinding (locks released)."""
    raise SystemExit(128 + signum)


def _work(task: tuple[int, list[tuple[int, int, tuple | None]]]) -> list[TileResult]:
    level, items = task
    assert _renderer is not None
    out: list[TileResult] = []
    for mrow, mcol, wanted in items:
        out.extend(_renderer.tiles(level, mrow, mcol, set(wanted) if wanted else None))
    return out


def _tasks(
    scheme: TilingScheme, plan: TilePlan, chunk: int = CHUNK
) -> tuple[list, dict[tuple, int]]:
    """Chunks of up to ``chunk`` meta-tiles grouped by bundle, and the number of chunks per
    bundle."""
    meta = plan.metatile
    tasks: list = []
    per_group: dict[tuple, int] = {}
    for level in sorted(plan.levels):
        mts = plan.levels[level]
        groups: dict[tuple, list] = {}
        for mrow, mcol in mts.tolist():
            key = (level, mrow * meta // BUNDLE, mcol * meta // BUNDLE)
            tiles = metatile_tiles(scheme, level, mrow, mcol, meta)
            full = len(tiles) == meta * meta
            groups.setdefault(key, []).append((mrow, mcol, None if full else tuple(tiles)))
        for key, items in groups.items():
            chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
            per_group[key] = len(chunks)
            tasks.extend((key, (level, ch)) for ch in chunks)
    return tasks, per_group


def _space_needed(nbytes: int, ntiles: int, total: int, done: int) -> str:
    """How much more space the run needed: the tiles left of the plan at the bytes per
    rendered tile of those written so far (``nbytes`` over ``ntiles``, the failed batch
    included), plus that batch."""
    if not ntiles or not done:
        return f"(the run planned {total:,} tiles)"
    per_rendered = nbytes / done
    left = max(total - done, 0)
    return (
        f"(the run needed about {(left * per_rendered + nbytes) / 1e6:,.1f} MB: "
        f"{left:,} of {total:,} tiles left to draw, {nbytes / ntiles / 1e3:,.1f} kB per tile "
        "stored so far)"
    )


def _bounded(
    results: Iterator[list[TileResult]], tasks: list, timeout: float | None
) -> Iterator[list[TileResult]]:
    """``results`` (a pool's ``imap``), each awaited at most ``timeout`` seconds per
    meta-tile of its task; :class:`RenderTimeout` naming the task's first meta-tile."""
    for _key, (level, items) in tasks:
        try:
            if timeout is None:
                yield next(results)
            else:
                yield results.next(timeout=timeout * len(items))  # type: ignore[attr-defined]
        except mp.TimeoutError:
            assert timeout is not None  # no timeout, no wait that ends
            raise task_timeout(level, items, timeout) from None


def task_timeout(level: int, items: list, timeout: float) -> RenderTimeout:
    """The error for a task (``items`` of ``level``) over its time: its first meta-tile."""
    mrow, mcol, _ = items[0]
    n = len(items) - 1
    more = f" or one of the {n} meta-tile(s) after it" if n else ""
    return RenderTimeout(
        f"level {level}, meta-tile row {mrow} col {mcol}{more}: rendering took longer "
        f"than [render] metatile_timeout = {timeout:g} s; look for a huge feature or "
        "label there, or raise the timeout"
    )


def worker_count(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def run_plan(
    style: Style,
    scheme: TilingScheme,
    layers: dict[str, LayerData],
    settings: RenderSettings,
    plan: TilePlan,
    store,
    *,
    processes: int = 0,
    compare: bool = False,
    progress: Callable[[int, int], None] | None = None,
    throttle: Callable[[int], None] | None = None,
    before: Callable[[list], None] | None = None,
    blank: BlankFill | None = None,
    executor: Executor | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    chunk: int = CHUNK,
) -> RunStats:
    """Render every meta-tile of ``plan`` and write its tiles into ``store``.

    Blank tiles are not stored. With ``compare`` (updates), tiles whose bytes
    equal the stored ones are left alone and stored tiles that became blank are
    deleted. ``progress(done, total)`` is called with tile counts after each chunk.
    With ``blank``, background-only tiles inside its ranges are stored as its bytes.
    ``before([(addr, old_bytes_or_None), ...])`` receives what each write replaces
    (updates keep it for the viewer's before/after swipe).
    ``throttle(n)`` is called with a chunk's tile count before the chunk goes to a
    worker; it sleeps to cap the render rate (:class:`~tiledelta.render.throttle.Throttle`).
    ``executor`` renders the tasks elsewhere instead of the local pool (the Dask engine,
    :mod:`~tiledelta.render.dask_engine`): it takes the tasks and yields their results in
    the same order; writing stays here.
    ``timeout`` bounds a meta-tile's render in worker processes, in seconds
    (:class:`~tiledelta.errors.RenderTimeout` naming the level and meta-tile).
    ``chunk`` is the most meta-tiles a task holds (the engine's; the tiles, their order
    within each bundle and the counts are the same for any).
    ``stop`` is set when the run fails, before its pool is ended: the task feed stops at
    once (a throttle given ``sleep=stop.wait`` wakes up), so ``Pool.terminate()`` never
    waits for a rate-capped feed's sleep.
    """
    stop = stop if stop is not None else threading.Event()
    stats = RunStats(metatiles=plan.metatile_count)
    tasks, per_group = _tasks(scheme, plan, chunk)
    if not tasks:
        return stats
    stats.planned = plan.tile_count(scheme)
    total = sum(stats.planned.values())
    done = [0]
    written = [0, 0]  # bytes and tiles written so far (for a full disk's estimate)
    pending: dict[tuple, list[TileResult]] = {}
    left = dict(per_group)

    def flush(key: tuple) -> None:
        results = pending.pop(key, [])
        t0 = time.perf_counter()
        old = store.get_many([(lv, r, c) for lv, r, c, _ in results]) if compare else {}
        writes: list[tuple[int, int, int, bytes | None]] = []
        # Each rendered tile is written, unchanged or blank (render/stats.py: COUNTS).
        for lv, r, c, data in results:
            stats.count("rendered", lv)
            prev = old.get((lv, r, c))
            if data is None:
                stats.count("blank", lv)
                if blank is not None and blank.covers(lv, r, c):
                    if prev != blank.data:
                        writes.append((lv, r, c, blank.data))
                        stats.count("blank_stored", lv)
                elif prev is not None:
                    writes.append((lv, r, c, None))
                    stats.count("removed", lv)
            elif prev == data:
                stats.count("unchanged", lv)
            else:
                writes.append((lv, r, c, data))
                stats.count("written", lv)
            if isinstance(data, Solid):  # one colour, not the background: counted apart
                stats.tiles_solid += 1
        if writes:
            if before is not None:
                before([((lv, r, c), old.get((lv, r, c))) for lv, r, c, _ in writes])
            try:
                store.put_many(writes)
            except DiskFull as exc:
                batch = sum(len(d) for _lv, _r, _c, d in writes if d is not None)
                need = _space_needed(written[0] + batch, written[1] + len(writes), total, done[0])
                raise DiskFull(f"{exc} {need}") from exc
            except OSError as exc:
                raise os_error(exc, store.path) from exc
            written[0] += sum(len(d) for _lv, _r, _c, d in writes if d is not None)
            written[1] += len(writes)
            if compare:
                stats.changed.extend((lv, r, c) for lv, r, c, _ in writes)
        stats.write_seconds += time.perf_counter() - t0

    def consume(results_iter: Iterator[list[TileResult]]) -> None:
        for (key, _task), results in zip(tasks, results_iter, strict=True):
            pending.setdefault(key, []).extend(results)
            left[key] -= 1
            if left[key] == 0:
                flush(key)
            done[0] += len(results)
            if progress:
                progress(done[0], total)

    def feed() -> Iterator:
        for _key, task in tasks:
            if throttle:
                throttle(sum(len(w) if w else meta * meta for _r, _c, w in task[1]))
            if stop.is_set():
                return
            yield task

    meta = plan.metatile
    if executor is not None:
        consume(executor(feed()))
        return stats
    nproc = min(worker_count(processes), len(tasks))
    log.info(
        "rendering %d meta-tiles in %d tasks with %d process(es)",
        plan.metatile_count,
        len(tasks),
        nproc,
    )
    if nproc <= 1:
        _init(style, scheme, layers, settings)
        consume(_work(t) for t in feed())
        return stats
    fork = "fork" in mp.get_all_start_methods()
    ctx = mp.get_context("fork" if fork else "spawn")
    # Forked workers inherit the parent's index (its arrays are never written, so their
    # pages stay shared); spawned ones would unpickle it, so they build their own.
    index = build_indexes(layers) if fork else None
    initargs = (style, scheme, layers, settings, os.getpid(), index)
    pool = ctx.Pool(nproc, initializer=_init, initargs=initargs)
    try:
        consume(_bounded(pool.imap(_work, feed(), chunksize=1), tasks, timeout))
    except BaseException:
        stop.set()
        _stop(pool)
        raise
    # Done: the workers take their sentinels and exit; no signal is sent.
    pool.close()
    pool.join()
    return stats


#: Seconds a failed run's pool gets to stop its workers before they are killed.
STOP_GRACE = 10.0


def _stop(pool: Pool) -> None:
    """End a failed run's pool: ``terminate()`` (SIGTERM to the workers, then a join),
    bounded; workers still there after :data:`STOP_GRACE` seconds are killed, so a
    worker that missed its SIGTERM can never hold the run (and its lock) for ever.

    ``terminate()`` first takes the task queue's lock, which an idle worker holds while it
    waits for a task. A worker the pool started after a signal to the process group (it
    replaces the workers that left) never got that signal and would hold the lock, and
    ``terminate()`` with it, for ever: so every worker is sent SIGTERM (once each) while
    ``terminate()`` runs."""
    stopper = threading.Thread(target=pool.terminate, name="pool-stop", daemon=True)
    stopper.start()
    deadline = time.monotonic() + STOP_GRACE
    signalled: set[int] = set()
    released = False
    while stopper.is_alive() and time.monotonic() < deadline:
        workers = list(getattr(pool, "_pool", []))
        for proc in workers:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                if proc.pid is not None and proc.pid not in signalled and proc.exitcode is None:
                    signalled.add(proc.pid)
                    proc.terminate()
        stopper.join(0.1)
        if stopper.is_alive() and not released and all(p.exitcode is not None for p in workers):
            # Every worker is gone, yet terminate() still waits for the task queue's lock:
            # a worker that died holding it (a process semaphore is not given back when
            # its holder dies) left it taken. Give it back once, for terminate() to go on.
            released = True
            with contextlib.suppress(AttributeError, ValueError, OSError):
                pool._inqueue._rlock.release()  # type: ignore[attr-defined]
                log.debug("released the task queue lock a dead render worker held")
    if stopper.is_alive():
        workers = list(getattr(pool, "_pool", []))
        log.warning("render workers did not stop within %g s; killing them", STOP_GRACE)
        for proc in workers:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                proc.kill()
        stopper.join(STOP_GRACE)


def run_project_plan(
    project: Project,
    layers: dict[str, LayerData],
    plan: TilePlan,
    store,
    *,
    compare: bool = False,
    progress: Callable[[int, int], None] | None = None,
    before: Callable[[list], None] | None = None,
    blank: BlankFill | None = None,
    executor: Executor | None = None,
    chunk: int = CHUNK,
) -> RunStats:
    """:func:`run_plan` with the project's style, scheme, settings, process count and
    tile-rate cap."""
    rate = project.config.render.max_tiles_per_second
    stop = threading.Event()  # set when the run fails: the throttle's sleep ends then
    throttle = Throttle(rate, sleep=stop.wait).wait if rate else None
    return run_plan(
        project.style,
        project.scheme,
        layers,
        project.settings,
        plan,
        store,
        processes=project.config.render.processes,
        compare=compare,
        progress=progress,
        throttle=throttle,
        before=before,
        blank=blank,
        executor=executor,
        timeout=project.config.render.metatile_timeout,
        stop=stop,
        chunk=chunk,
    )


def blank_fill(project: Project, data_extent: Bounds | None) -> BlankFill | None:
    """The project's blank-tile rule (``[cache] blank_tiles``), or None when none are kept.

    Background-only tiles are kept over ``[render] extent``, else over ``data_extent``
    (nowhere while there is no data): with "auto" only in a compact cache (index records
    share one copy per bundle) and when the style's background is opaque, so that
    clients find a tile wherever ArcGIS Server would serve one.
    """
    mode = project.config.cache.blank_tiles
    if mode == "skip" or (mode == "auto" and project.config.cache.kind != "compact"):
        return None
    renderer = Renderer(project.style, project.scheme, {}, project.settings)
    if mode == "auto" and not renderer.opaque_background:
        return None
    blank = BlankFill(renderer.blank_tile(), {})
    return blank.over(project.scheme, project.levels, project.extent or data_extent)
