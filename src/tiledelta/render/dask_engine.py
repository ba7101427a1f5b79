"""The render engines: the local process pool, or a Dask cluster (``[render] engine``).

:func:`open_engine` gives the project's engine; a build reads its layers through it and
hands its :meth:`~DaskEngine.executor` to :func:`tiledelta.render.pool.run_plan`, which
keeps the tasks (meta-tiles grouped by bundle, in the local engine's order), the writing
and the counts. So either engine gives the same tiles, bundles, metadata and summary.

With Dask (``distributed``, the optional ``dask`` extra, imported only here):

- **Reading** (:meth:`DaskEngine.read_layers`) is split into row ranges of each layer's
  full scan (:func:`tiledelta.sources.chunked.read_piece`), read and fingerprinted on the
  workers; the client keeps per feature only its id, key, box and fingerprint, which is
  what detection, planning and the snapshot use.
- **A render task** is part of a bundle (up to :attr:`DaskEngine.chunk`
  meta-tiles) and carries the feature ids its meta-tiles' buffered extents reach, per
  layer, in full-scan order (found on the client from the boxes, with the renderer's own
  box test and slack). The worker reads exactly those features from the source
  (:func:`~tiledelta.sources.chunked.read_fids`) and draws them in that order: no task
  receives a whole layer, and the draw order is the local engine's.
- **Writing** stays on the client, as in the local engine: tiles come back task by task
  and each bundle is written once when its last task is in (MBTiles: in transactions).
- **Faults**: a worker that dies has its tasks rerun elsewhere by the scheduler; a
  scheduler that cannot be reached, or a source a worker cannot open, stops the run
  before anything is written, with one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from tiledelta.config import RenderSettings
from tiledelta.errors import TileDeltaError
from tiledelta.grid import TilingScheme, metatile_bounds, query_pad
from tiledelta.project import Project
from tiledelta.render.stats import CHUNK
from tiledelta.sources import LayerData, postgis, read_layers, read_project_raster
from tiledelta.sources.chunked import (
    PieceMerger,
    check_source,
    empty_layer,
    feature_count,
    read_ids,
    read_key_range,
    read_piece,
    row_ranges,
)
from tiledelta.style import RASTER_TYPES, LayerSource, Style

if TYPE_CHECKING:
    from tiledelta.change import Changes
    from tiledelta.render.stats import TileResult

log = logging.getLogger(__name__)

#: What to install when ``distributed`` is missing.
DASK_EXTRA = 'pip install "tiledelta[dask]"'
#: Seconds to wait for the scheduler (and for a first worker) before giving up.
CONNECT_TIMEOUT = 5.0
#: Rows per reading task (change detection), at most; a layer of fewer rows than
#: this many per worker thread is split so each thread reads a part, down to
#: :data:`MIN_ROWS_PER_TASK`.
ROWS_PER_TASK = 200_000
MIN_ROWS_PER_TASK = 10_000
#: Render tasks in flight per worker thread (results are gathered in task order).
IN_FLIGHT = 2
#: Seconds between looks at the tasks in flight while none is known to have ended.
POLL = 0.5
#: Tasks submitted and not yet handed on, at most, in multiples of those in flight: the
#: ended ones wait on their workers for the first in line (a few MB of tiles each).
AHEAD = 3

Task = tuple[int, list[tuple[int, int, tuple | None]]]
Executor = Callable[[Iterator[Task]], Iterator[list["TileResult"]]]


#: Dask settings of the LocalCluster tiledelta starts (``engine = "dask"`` with no
#: scheduler), and what docs/dask.md (*Tuning a cluster*) suggests for a cluster of one's
#: own. Each costs CPU on every server, whether tasks run or not, and none changes what
#: tasks do: the event-loop health check (every 20 ms by default; it only feeds the
#: "event loop was unresponsive" warning and a dashboard figure), the workers'
#: statistical profiler (samples the task thread's stack every 10 ms; the dashboard's
#: profile page) and work stealing (tiledelta's tasks are root tasks, which the scheduler
#: queues anyway). Measured idle, a 2-worker LocalCluster took 1.4 s of CPU per 10 s with
#: Dask's defaults and 0.24 s with these (bench/bench_dask.py, docs/dask.md).
LEAN_CONFIG: dict[str, Any] = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
}


def local_cluster(n_workers: int, **kwargs: Any) -> Any:
    """A LocalCluster on 127.0.0.1 of ``n_workers`` single-thread worker processes, with
    :data:`LEAN_CONFIG` (its nannies hand the settings to their workers); ``kwargs`` go to
    ``distributed.LocalCluster``."""
    import dask
    import distributed

    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        # The scheduler's HTTP server (its dashboard, where bokeh is installed: the dask
        # extra pulls it) on a free port of this machine only; None would mean :8787.
        "dashboard_address": "127.0.0.1:0",
        "silence_logs": logging.ERROR,
    }
    with dask.config.set(LEAN_CONFIG):
        return distributed.LocalCluster(**{**options, **kwargs})


class ClusterError(TileDeltaError):
    """The Dask cluster cannot be used: scheduler unreachable, no worker, a source a worker
    cannot open, or the ``dask`` extra not installed."""


class LocalEngine:
    """The process pool on this machine (the default): layers read here, in full."""

    name = "local"
    dashboard: str | None = None
    #: meta-tiles per task
    chunk = CHUNK

    def read_layers(self, project: Project) -> dict[str, LayerData]:
        return read_layers(project)

    def executor(self, project: Project, layers: dict[str, LayerData]) -> Executor | None:
        return None

    def complete(self, project: Project, layers: dict[str, LayerData], changes: Changes) -> None:
        """Nothing to do: the local read holds every geometry."""

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine(project: Project, say: Callable[[str], None] = log.info) -> Any:
    """The project's engine (:class:`LocalEngine` or :class:`DaskEngine`), as a context
    manager; a Dask engine is connected and its workers checked before it is returned."""
    if project.config.render.engine == "dask":
        return DaskEngine(project, say)
    return LocalEngine()


# --- what runs on the workers ----------------------------------------------------------

_local = threading.local()


def _probe(sources: list[tuple[LayerSource, str | None]]) -> list[str]:
    """Run on every worker at the start: why a source cannot be opened there (none: [])."""
    import tiledelta.render.renderer  # noqa: F401 - Mapnik must be importable on the worker

    return [msg for src, key in sources if (msg := check_source(src, key))]


#: glibc ``mallopt`` parameters, and what a render worker sets them to (bytes)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_TUNING = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
_tuned: list[bool] = []


def _tune_malloc() -> None:
    """Undo, in this worker process, what Dask's nanny's ``MALLOC_TRIM_THRESHOLD_=65536``
    does to drawing (glibc on Linux only; once per process).

    Setting that variable turns off glibc's sliding mmap threshold, so every meta-tile
    image (4 MB) and every buffer of its size is a fresh ``mmap`` whose pages fault in
    zeroed: the same seed took 35 % more CPU per meta-tile in a Dask worker, and in the
    local pool with the variable set (measured). A worker that draws takes them from the
    heap instead; up to 64 MB of freed memory may stay with the process.
    """
    if _tuned or sys.platform != "linux" or not os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return
    _tuned.append(True)
    try:
        libc = ctypes.CDLL("libc.so.6")
        for param, value in MALLOC_TUNING.items():
            libc.mallopt(param, value)
    except (OSError, AttributeError):  # not glibc (musl, another libc): nothing to undo
        pass


def _renderer(style: Style, scheme: TilingScheme, settings: RenderSettings, run: str) -> Any:
    """This worker thread's renderer for the style in this run (Mapnik maps are not shared
    between threads). A run makes its own, with Mapnik's caches cleared, as a local pool's
    fresh processes do: a worker lives on between runs, and a renderer kept from an earlier
    one would draw a raster layer's file, or a symbol's image, as it was then."""
    from tiledelta.render._mapnik import mapnik
    from tiledelta.render.renderer import Renderer

    _tune_malloc()
    key = (run, style.digest, style.xml_without_datasources, scheme.model_dump_json(), settings)
    if getattr(_local, "key", None) != key:
        mapnik.clear_cache()
        _local.renderer = Renderer(style, scheme, {}, settings)
        _local.key = key
        _local.held = None  # a new renderer holds no features
    return _local.renderer


def _use_layers(renderer: Any, layers: dict[str, LayerData]) -> None:
    """Give a renderer the features of one task (what its constructor does with layers)."""
    if hasattr(renderer, "use_layers"):  # the renderer with its own box index
        renderer.use_layers(layers)
        return
    renderer.layers = layers  # pragma: no cover - a renderer from before use_layers
    renderer._trees = {
        name: shapely.STRtree(shapely.box(*data.bounds.T)) if len(data) else None
        for name, data in layers.items()
    }
    renderer._features = {name: [None] * len(d) for name, d in layers.items()}
    for data in layers.values():
        for a in data.attrs:
            renderer._context.push(a)


#: A worker keeps the features of its last read while later tasks of the same run need a
#: subset of them, when it holds at most ``[render] task_features`` (the memory a task may
#: take anyway) or the subset is at least this share of them (low levels: every task
#: needs the same features); otherwise it reads afresh, so its memory follows the piece.
REUSE_SHARE = 0.5


#: Meta-tiles at most in a group of tasks drawn together (:func:`render_group`), so
#: images held at once: fewer than a batched task's :data:`CHUNK`, since the tasks it
#: groups (the low levels) would hold one or two each.
GROUP_METATILES = 4


#: What this worker process did (read with :func:`worker_counts`, e.g. ``Client.run``).
_counts = {"batched_tasks": 0, "grouped_tasks": 0}


def worker_counts() -> dict[str, int]:
    """How many render tasks this worker process drew in batches, and how many of those
    together with others (:func:`render_group`)."""
    return dict(_counts)


class Drawn(list["TileResult"]):
    """A render task's tiles. A plain list of tuples holding bytes would be serialized by
    Dask element by element (a frame and a header per tile, on the worker and again on the
    client: ≈ 16 ms per task measured); a subclass is pickled in one piece."""

    __slots__ = ()


class Group(list[Drawn]):
    """The tiles of several render tasks drawn together (:func:`render_group`), one
    :class:`Drawn` per task in order; pickled in one piece, as :class:`Drawn` is."""

    __slots__ = ()


def _reusable(run: str, fids: dict[str, np.ndarray], limit: int = 0) -> bool:
    """True when this thread's renderer already holds every feature of the task (same run)
    and may keep them (:data:`REUSE_SHARE`; ``limit``: ``task_features``, 0 = none);
    ``fids`` are the features' places in the client's layers, sorted."""
    held = getattr(_local, "held", None)
    if held is None or held[0] != run:
        return False
    have: dict[str, np.ndarray] = held[1]
    need = sum(len(f) for f in fids.values())
    total = sum(len(f) for f in have.values())
    if need < REUSE_SHARE * total and not (limit and total <= limit):
        return False
    return all(
        name in have and bool(np.isin(f, have[name], assume_unique=True).all())
        for name, f in fids.items()
    )


def render_task(
    style: Style,
    scheme: TilingScheme,
    settings: RenderSettings,
    sources: list[tuple[LayerSource, str | None]],
    need: dict[str, tuple[np.ndarray, np.ndarray]],
    task: Task,
    run: str,
    snapshots: dict[str, str] | None = None,
    max_features: int = 0,
    slack: dict[str, int] | None = None,
) -> list[TileResult]:
    """One render task on a worker: read its features from the sources, draw its meta-tiles.

    ``need`` gives per layer the features' places in the full layer (sorted) and what to
    read them by: GDAL feature ids, or PostGIS keys (read in the run's exported
    ``snapshots``, by layer name). A file layer's place is at most its row's scan
    position and at most ``slack`` (its rows with no geometry) rows before it, so a dense
    run of features is read by position (:func:`~tiledelta.sources.chunked.read_fids`).

    The renderer draws, per meta-tile, the features whose box meets its buffered extent, in
    full-scan order; holding more features than the task needs (a reused read of the same
    run, :data:`REUSE_SHARE`) therefore draws the same picture. (Feature ids are the
    task's, not the whole layer's: Mapnik's memory datasource does not draw them; a
    ``[mapnik::feature_id]`` label reads the same on either engine.)

    A task needing more than ``max_features`` features (0: no limit) reads and draws them
    in batches of at most that many, one held at a time
    (:meth:`~tiledelta.render.renderer.Renderer.tiles_in_passes`), when the style allows
    it (:func:`~tiledelta.render.renderer.batch_unsafe`): the same picture, with the
    worker's memory bounded whatever the dataset.
    """
    renderer = _renderer(style, scheme, settings, run)
    places = {name: pos for name, (pos, _ids) in need.items()}
    snaps = snapshots or {}
    slacks = slack or {}
    level, items = task
    total = sum(len(pos) for pos in places.values())
    if max_features and total > max_features and renderer.batch_unsafe() is None:
        _local.held = None  # hold one batch, nothing of an earlier read
        _counts["batched_tasks"] += 1
        _use_layers(renderer, {})
        drawn = Drawn()
        for i in range(0, len(items), CHUNK):  # at most CHUNK meta-tile images at once
            passes = _passes(sources, scheme.crs, need, max_features, snaps, slacks)
            drawn.extend(renderer.tiles_in_passes(level, items[i : i + CHUNK], passes))
        return drawn
    if not _reusable(run, places, max_features):
        _local.held = None
        _use_layers(renderer, {})
        layers = {
            src.name: _read(src, scheme.crs, key, need[src.name], snaps, slacks)
            if src.name in need
            else empty_layer(src, key is not None or src.kind == "postgis")
            for src, key in sources
        }
        _use_layers(renderer, layers)
        _local.held = (run, places)
    out = Drawn()
    for mrow, mcol, wanted in items:
        out.extend(renderer.tiles(level, mrow, mcol, set(wanted) if wanted else None))
    return out


def render_group(
    style: Style,
    scheme: TilingScheme,
    settings: RenderSettings,
    sources: list[tuple[LayerSource, str | None]],
    need: dict[str, tuple[np.ndarray, np.ndarray]],
    tasks: list[Task],
    run: str,
    snapshots: dict[str, str] | None = None,
    max_features: int = 0,
    slack: dict[str, int] | None = None,
) -> Group:
    """Consecutive render tasks that each need more than ``max_features`` features (the low
    levels, where one meta-tile reaches most of the layer), at most
    :data:`GROUP_METATILES` meta-tiles in all, drawn from one batched read of their
    features (``need``: the union of theirs). Drawn one task at a time, each would read
    the layer again.

    The picture is :func:`render_task`'s: each meta-tile keeps, from every batch, the
    features meeting its buffered extent, in full-scan order
    (:meth:`~tiledelta.render.renderer.Renderer.metatiles_in_passes`)."""
    renderer = _renderer(style, scheme, settings, run)
    _local.held = None
    _counts["batched_tasks"] += len(tasks)
    _counts["grouped_tasks"] += len(tasks)
    _use_layers(renderer, {})
    passes = _passes(sources, scheme.crs, need, max_features, snapshots or {}, slack or {})
    entries = [(level, *item) for level, items in tasks for item in items]
    drawn = iter(renderer.metatiles_in_passes(entries, passes))
    return Group(
        Drawn(t for tiles in islice(drawn, len(items)) for t in tiles) for _level, items in tasks
    )


def _read(
    src: LayerSource,
    crs: str,
    key: str | None,
    need: tuple[np.ndarray, np.ndarray],
    snapshots: dict[str, str],
    slacks: dict[str, int],
) -> LayerData:
    """A task's features of one layer: ``need`` is their places and ids (see
    :func:`render_task`)."""
    places, ids = need
    first = int(places[0]) if len(places) and src.kind != "postgis" else None
    return read_ids(
        src, crs, key, ids, snapshots.get(src.name), None, first, slacks.get(src.name, 0)
    )


def _passes(
    sources: list[tuple[LayerSource, str | None]],
    crs: str,
    need: dict[str, tuple[np.ndarray, np.ndarray]],
    size: int,
    snapshots: dict[str, str],
    slacks: dict[str, int],
) -> dict[str, Iterator[LayerData]]:
    """Per layer a task needs, its features in batches of ``size`` (:func:`_batches`)."""
    return {
        src.name: _batches(src, crs, key, need[src.name], size, snapshots, slacks)
        for src, key in sources
        if src.name in need
    }


def _batches(
    src: LayerSource,
    crs: str,
    key: str | None,
    need: tuple[np.ndarray, np.ndarray],
    size: int,
    snapshots: dict[str, str],
    slacks: dict[str, int],
) -> Iterator[LayerData]:
    """A task's features of one layer, read ``size`` at a time in the order given (PostGIS
    keys: a batch never splits a run of equal keys, which one read returns together)."""
    places, ids = need
    start = 0
    while start < len(ids):
        stop = min(start + size, len(ids))
        if src.kind == "postgis":
            while stop < len(ids) and ids[stop] == ids[stop - 1]:
                stop += 1
        yield _read(src, crs, key, (places[start:stop], ids[start:stop]), snapshots, slacks)
        start = stop


def batch_reason(style: Style) -> str | None:
    """On a worker: why ``style`` can't be drawn in batches (``None`` if it can)."""
    from tiledelta.render.renderer import batch_unsafe

    return batch_unsafe(style.xml_without_datasources)


# --- the client ------------------------------------------------------------------------


class DaskEngine:
    """A Dask cluster: ``[render] scheduler``, or a LocalCluster of ``processes`` workers."""

    name = "dask"
    #: meta-tiles per task: more than the local pool's, a task costs the client and the
    #: scheduler about 10 ms; a task drawn in batches takes them :data:`CHUNK` at a time
    chunk = 4 * CHUNK

    def __init__(self, project: Project, say: Callable[[str], None] = log.info) -> None:
        try:
            import distributed
        except ImportError as exc:
            raise ClusterError(
                f'[render] engine = "dask" needs the dask extra: {DASK_EXTRA}'
            ) from exc
        self._distributed = distributed
        self.say = say
        # Dask logs every worker start and stop at INFO; tiledelta's -v shows its own lines.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        cfg = project.config.render
        self.cluster: Any = None
        self.fids: dict[str, np.ndarray] = {}
        #: per PostGIS layer, the transaction whose snapshot the workers read in
        self.holds: dict[str, postgis.ReadSnapshot] = {}
        address = cfg.scheduler
        try:
            if address:
                self.client = distributed.Client(
                    address, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
            else:
                from tiledelta.render.pool import worker_count

                self.cluster = local_cluster(worker_count(cfg.processes))
                self.client = distributed.Client(self.cluster, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            where = address or "a LocalCluster"
            raise ClusterError(
                f"[render] scheduler {where}: cannot reach the Dask scheduler within "
                f"{CONNECT_TIMEOUT:.0f} s ({_line(exc)}); start it (dask scheduler) or fix "
                "the address"
            ) from exc
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            self._check_sources(project)
        except BaseException as exc:
            self.close()
            if isinstance(exc, (TimeoutError, OSError)):
                raise ClusterError(
                    f"[render] scheduler {address}: no Dask worker joined within "
                    f"{CONNECT_TIMEOUT:.0f} s; start some (dask worker {address})"
                ) from exc
            raise
        info = self.client.scheduler_info()
        self.dashboard: str | None = None
        if "dashboard" in info.get("services", {}):
            # A scheduler serves its dashboard's address without bokeh too, with a page
            # that asks for it: no address is reported then.
            with contextlib.suppress(Exception):
                # a lambda travels whole: the scheduler's machine needs no tiledelta
                if self.client.run_on_scheduler(lambda: find_spec("bokeh") is not None):
                    self.dashboard = self.client.dashboard_link
        workers = info.get("workers", {})
        self.threads = max(1, sum(w.get("nthreads", 1) for w in workers.values()))
        say(
            f"Dask: {len(workers)} worker(s), {self.threads} thread(s) at "
            f"{info.get('address', address)}"
            + (f"; dashboard {self.dashboard}" if self.dashboard else "")
        )

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for hold in self.holds.values():
            hold.close()
        self.holds.clear()
        with contextlib.suppress(Exception):  # closing a broken connection
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def _check_sources(self, project: Project) -> None:
        """A tiny task on every worker: each source opens there, else one line."""
        sources = _sources(project)
        try:
            answers = self.client.run(_probe, sources)
        except Exception as exc:
            raise ClusterError(f"Dask workers cannot run tiledelta: {_line(exc)}") from exc
        for worker, problems in sorted(answers.items()):
            if problems:
                where = (
                    "the database must be reachable from every worker"
                    if "PostgreSQL" in problems[0]
                    else "sources must be on storage every worker sees, at the same path"
                )
                raise ClusterError(f"{problems[0]} on Dask worker {worker}; {where}")

    # --- reading (distributed change detection) ----------------------------------------

    def read_layers(self, project: Project) -> dict[str, LayerData]:
        """Every layer in full-scan order, read and fingerprinted in row ranges on the
        workers; the client keeps ids, keys, boxes and fingerprints (no geometry).

        A raster layer's blocks are fingerprinted here, as the local engine does (block by
        block: the client's memory does not grow with the raster); its pixels are read by
        Mapnik on the workers, from the file the style names."""
        out: dict[str, LayerData] = {}
        submit = self.client.submit
        for src in project.style.layers:
            key = project.key_field(src.name)
            if src.kind in RASTER_TYPES:
                out[src.name] = read_project_raster(project, src)
                continue
            if src.kind == "postgis":
                out[src.name] = self._read_postgis(project, src, key)
                continue
            count = submit(feature_count, src, pure=False).result()
            per_thread = -(-count // self.threads)
            ranges = row_ranges(count, min(ROWS_PER_TASK, max(MIN_ROWS_PER_TASK, per_thread)))
            calls = (
                (read_piece, src, project.scheme.crs, key, skip, n, project.scheme.extent)
                for skip, n in ranges
            )
            merger = PieceMerger(src, count)  # piece by piece: never all pieces at once
            for piece in self._ordered(calls):
                merger.add(piece)
            data, fids = merger.result()
            del merger
            out[src.name] = data
            self.fids[src.name] = fids
            log.info(
                "read %s on the cluster: %d features in %d task(s)",
                src.name,
                len(data),
                len(ranges),
            )
        return out

    def _read_postgis(self, project: Project, src: LayerSource, key: str | None) -> LayerData:
        """A PostGIS layer in key ranges on the workers, all in one exported snapshot held
        by the client until the engine closes (render tasks read in it too)."""
        if src.name in self.holds:
            self.holds.pop(src.name).close()
        hold = self.holds[src.name] = postgis.ReadSnapshot(src, key)
        rows, ranges = hold.ranges(ROWS_PER_TASK)
        shipped = postgis.redacted(src)
        calls = (
            (
                read_key_range,
                shipped,
                project.scheme.crs,
                key,
                r,
                hold.snapshot,
                project.scheme.extent,
            )
            for r in ranges
        )
        merger = PieceMerger(src, rows)
        for piece in self._ordered(calls):
            merger.add(piece)
        data, _places = merger.result()
        del merger
        # As a local read: keyed, no feature ids (render tasks read by key).
        data = dataclasses.replace(data, fids=None, keyed=True)
        log.info(
            "read %s on the cluster: %d features in %d key range(s)",
            src.name,
            len(data),
            len(ranges),
        )
        return data

    def _ordered(
        self, calls: Iterator[tuple], timeout: Callable[[tuple], float | None] | None = None
    ) -> Iterator[Any]:
        """Submit ``calls``, yielding their results in order.

        At most :data:`IN_FLIGHT` per worker thread are running or queued at once, and at
        most :data:`AHEAD` times that many are submitted and not yet yielded: a call that
        ends while an earlier, longer one still runs makes room for the next at once, so a
        worker does not idle behind a slow task (tasks of one run differ in cost by 100×).
        ``timeout(args)`` is how long a call may take once it is first in line (earlier
        results all in): the wait for it ends there, with the error it raises."""
        window: deque = deque()
        running = IN_FLIGHT * self.threads
        ahead = AHEAD * running
        ended = threading.Event()  # set by any call that ends (Dask's callback thread)
        pending = iter(calls)
        more = True
        since = time.monotonic()  # when the first in line became first

        def submit() -> bool:
            call = next(pending, None)
            if call is None:
                return False
            fn, *args = call
            future = self.client.submit(fn, *args, pure=False)
            future.add_done_callback(lambda _f: ended.set())
            window.append((future, args))
            return True

        try:
            while True:
                ended.clear()
                while more and len(window) < ahead and _not_done(window) < running:
                    more = submit()
                if not window:
                    return
                future, args = window[0]
                limit = timeout(args) if timeout else None
                waited = time.monotonic() - since
                if more and len(window) < ahead and not future.done():
                    # Wait for any call to end (then submit the next), while the first in
                    # line has time left; past that, its own wait below ends the run. The
                    # wait is capped: an ended call whose result a dead worker held runs
                    # again and ends without a second callback.
                    left = POLL if limit is None else min(limit - waited, POLL)
                    if left > 0:
                        ended.wait(left)
                        continue
                window.popleft()
                yield _result(future, limit, args, waited)
                since = time.monotonic()  # the next one's wait begins when asked for
        finally:  # the run ended early (an error, a timeout): drop what is still queued
            with contextlib.suppress(Exception):
                self.client.cancel([f for f, _a in window])

    def complete(self, project: Project, layers: dict[str, LayerData], changes: Changes) -> None:
        """Read the geometry of the added and modified features (the run folder's
        ``changes.geojson`` shows them): a small read, on a worker."""
        for name, ch in changes.layers.items():
            if name not in layers or not len(ch.new_idx):
                continue
            src = project.style.layer(name)
            if src.kind in RASTER_TYPES:  # read here, in full (read_layers)
                continue
            hold = self.holds.get(name)
            data = layers[name]
            idx = np.sort(ch.new_idx) if hold else ch.new_idx  # PostGIS: read in key order
            got = self.client.submit(
                read_ids,
                postgis.redacted(src),
                project.scheme.crs,
                project.key_field(name),
                (data.keys if hold else self.fids[name])[idx],
                hold.snapshot if hold else None,
                pure=False,
            ).result()
            if not data.wkb.flags.writeable:  # no geometry slots yet (chunked.no_geometry)
                data.wkb = np.empty(len(data), dtype=object)
            if hold:  # a key that is not unique may bring more rows than asked for
                data.wkb[idx] = _match(got, data.keys[idx], data.fingerprints[idx])
            else:
                data.wkb[idx] = got.wkb

    # --- rendering ---------------------------------------------------------------------

    def executor(self, project: Project, layers: dict[str, LayerData]) -> Executor:
        """Tasks to the cluster, each with the feature ids its meta-tiles need."""
        scheme, settings, style = project.scheme, project.settings, project.style
        sources = _sources(project)
        # No password travels in a task's arguments in clear (Dask prints them on errors).
        style = dataclasses.replace(style, layers=tuple(src for src, _k in sources))
        snapshots = {name: hold.snapshot for name, hold in self.holds.items()}
        buffers = {
            src.name: src.buffer_size if src.buffer_size is not None else settings.buffer
            for src in style.layers
        }
        # The renderer's own slack, doubled: a superset is safe (it tests again).
        slack = 2 * query_pad(scheme, scheme.levels[0], 0)
        # Vector layers only: a raster layer is drawn from the style's own datasource.
        vectors = {
            name: data
            for name, data in layers.items()
            if project.style.layer(name).kind not in RASTER_TYPES
        }
        trees = {
            name: shapely.STRtree(shapely.box(*data.bounds.T))
            for name, data in vectors.items()
            if len(data)
        }
        style_f = self.client.scatter(style, broadcast=True)
        scheme_f = self.client.scatter(scheme, broadcast=True)

        def needs(task: Task) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            level, items = task
            res = scheme.resolution(level)
            bounds = [metatile_bounds(scheme, level, r, c, settings.metatile) for r, c, _ in items]
            out = {}
            for name, tree in trees.items():
                pad = buffers.get(name, settings.buffer) * res + slack
                boxes = shapely.box(
                    [b.xmin - pad for b in bounds],
                    [b.ymin - pad for b in bounds],
                    [b.xmax + pad for b in bounds],
                    [b.ymax + pad for b in bounds],
                )
                hit = _sorted_hits(tree.query(boxes)[1], len(layers[name]))
                if len(hit):
                    out[name] = (hit, ids_of(name)[hit])
            return out

        def ids_of(name: str) -> np.ndarray:
            """What a worker reads a layer's features by: PostGIS keys, else GDAL ids."""
            return layers[name].keys if name in self.holds else self.fids[name]

        run_id = uuid.uuid4().hex  # workers reuse features only within one run
        # rows with no geometry are not among the places: a row is at most this many later
        null_rows = {name: len(data.null_keys) for name, data in vectors.items()}
        limit = project.config.render.task_features
        largest = max((len(d) for d in vectors.values()), default=0)
        batched = bool(limit) and largest > limit
        if batched:
            reason = _result(self.client.submit(batch_reason, style_f, pure=False))
            if reason:
                batched = False
                self.say(
                    f"Dask: this style can't be drawn in batches of {limit:,} features "
                    f"({reason}); a task holds every feature its meta-tiles reach (all "
                    f"{largest:,} at the lowest levels)"
                )

        def union(parts: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict:
            """The features of several tasks: per layer, their places sorted, and ids."""
            out = {}
            for name in {name for part in parts for name in part}:
                places = np.unique(np.concatenate([p[name][0] for p in parts if name in p]))
                out[name] = (places, ids_of(name)[places])
            return out

        def call(group: list[tuple[Task, dict]]) -> tuple:
            """One task alone (render_task), or several drawn together (render_group)."""
            rest = (run_id, snapshots, limit, null_rows)
            if len(group) == 1:
                task, need = group[0]
                return (render_task, style_f, scheme_f, settings, sources, need, task, *rest)
            tasks = [t for t, _n in group]
            need = union([n for _t, n in group])
            return (render_group, style_f, scheme_f, settings, sources, need, tasks, *rest)

        def calls(tasks: Iterator[Task]) -> Iterator[tuple]:
            """A call per task, but consecutive tasks that each need more than ``limit``
            features (drawn in batches) go together, up to GROUP_METATILES in all: the
            batches are read once for all of them (the low levels, one task per level)."""
            group: list[tuple[Task, dict]] = []
            for task in tasks:
                need = needs(task)
                big = batched and sum(len(pos) for pos, _ids in need.values()) > limit
                held = sum(len(t[1]) for t, _n in group)
                if group and (not big or held + len(task[1]) > GROUP_METATILES):
                    yield call(group)
                    group = []
                group.append((task, need))
                if not big:
                    yield call(group)
                    group = []
            if group:
                yield call(group)

        seconds = project.config.render.metatile_timeout

        def timeout(args: tuple) -> float:
            """A call's time: ``metatile_timeout`` per meta-tile (its 6th argument)."""
            return seconds * len(_task(args[5])[1])

        def run(tasks: Iterator[Task]) -> Iterator[list[TileResult]]:
            for result in self._ordered(calls(tasks), timeout):
                if isinstance(result, Group):
                    yield from result
                else:
                    yield result

        return run


def _sorted_hits(hits: np.ndarray, n: int) -> np.ndarray:
    """The distinct places among ``hits`` (of a layer of ``n`` features), sorted: by a mask
    when the hits are many (the low levels: every box meets most features), else by
    sorting them (a mask would cost the whole layer per task)."""
    if len(hits) * 16 < n:
        return np.unique(hits)
    mask = np.zeros(n, dtype=bool)
    mask[hits] = True
    return np.flatnonzero(mask)


def _task(task: Task | list[Task]) -> Task:
    """A call's task, or the tasks of a group as one (its first level, all meta-tiles)."""
    if isinstance(task, list):
        return task[0][0], [item for _level, items in task for item in items]
    return task


def _sources(project: Project) -> list[tuple[LayerSource, str | None]]:
    """Each layer's source fit to travel in a task (no password in clear) and its key."""
    return [(postgis.redacted(src), project.key_field(src.name)) for src in project.style.layers]


def _match(got: LayerData, keys: np.ndarray, fps: np.ndarray) -> np.ndarray:
    """The geometry of ``got``'s rows with these keys and fingerprints (both in key order;
    ``got`` in key order too, holding them and maybe more)."""
    if len(got) == len(keys):
        return got.wkb
    out, j = np.empty(len(keys), dtype=object), 0
    for i, (k, fp) in enumerate(zip(keys, fps, strict=True)):
        while not (got.keys[j] == k and got.fingerprints[j] == fp):
            j += 1
        out[i] = got.wkb[j]
        j += 1
    return out


def _not_done(window: deque) -> int:
    """Calls of ``window`` (future, args) not yet ended."""
    return sum(not f.done() for f, _a in window)


def _result(
    future: Any, timeout: float | None = None, args: tuple = (), waited: float = 0.0
) -> Any:
    """A task's result; a worker-side tiledelta error is raised as itself. A render task
    (``args``) still running ``timeout`` seconds after its wait began (``waited`` seconds
    ago) is cancelled and named."""
    try:
        if timeout is not None and not future.done():
            ended = threading.Event()
            future.add_done_callback(lambda _f: ended.set())
            if not ended.wait(max(timeout - waited, 0.0)) and not future.done():
                raise TimeoutError
        return future.result(timeout=timeout)  # an ended task's tiles: their transfer
    except TileDeltaError:
        raise
    except TimeoutError:
        if timeout is None or future.done():
            raise
        from tiledelta.render.pool import task_timeout

        future.cancel()
        level, items = _task(args[5])
        raise task_timeout(level, items, timeout / max(len(items), 1)) from None
    except Exception as exc:
        name = type(exc).__name__
        if name == "KilledWorker":
            raise ClusterError(
                f"a Dask task failed on every worker it was tried on ({_line(exc)})"
            ) from exc
        if isinstance(exc, (OSError, TimeoutError)) or name == "CommClosedError":
            raise ClusterError(f"lost the Dask scheduler ({_line(exc)})") from exc
        raise


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "ClusterError",
    "DaskEngine",
    "LocalEngine",
    "open_engine",
    "render_task",
]
