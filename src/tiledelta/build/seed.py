"""Full builds: render every non-blank tile of the configured levels, resumably.

The cache is built beside the old one (``<cache>.building``) and swapped in at the end,
so the old cache keeps serving until the new one is whole. The seed journal
(:class:`~tiledelta.change.SeedJournal`, ``.tiledelta/seed-journal.sqlite``) records each
finished group of meta-tiles (one bundle's worth: the parent writes a bundle once, after
all its meta-tiles are drawn) once the store has made it durable. A seed that is
interrupted (Ctrl-C, SIGTERM, SIGKILL, a reboot) leaves both behind; the next seed of the
same plan — same style, scheme, render settings, levels, extent and data, as
:func:`seed_signature` says — skips the finished groups and draws the rest, which gives
the same bytes as an uninterrupted seed (a bundle's bytes depend only on the tiles it
holds). ``restart`` (``tiledelta seed --restart``) starts over; a building cache of
another plan is discarded with one line.

A seed limited to a :class:`~tiledelta.build.context.Scope` (``--levels``, ``--extent``,
``--aoi``) re-renders those meta-tiles into the existing cache instead (compared with the
stored tiles, as an update writes them) and does not resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiledelta.build.blanks import fill_blanks
from tiledelta.build.context import BuildOutcome, RunContext, Scope
from tiledelta.change import SeedJournal, build_signature
from tiledelta.change.journal import SEED_JOURNAL, Group
from tiledelta.errors import ConfigError
from tiledelta.grid import BUNDLE_PACKET, metatile_tiles
from tiledelta.plan import TilePlan, full_plan, restrict_plan
from tiledelta.project import Project
from tiledelta.render.dask_engine import open_engine
from tiledelta.sources import LayerData, data_extent
from tiledelta.stores import TileStore, open_project_store, replace_mbtiles
from tiledelta.stores.base import TMP_SUFFIX, fsync_dir

log = logging.getLogger(__name__)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def building_path(project: Project) -> Path:
    """Where a full seed builds the new cache: ``<cache>.building``."""
    final = project.cache_path
    return final.with_name(final.name + ".building")


def _old_path(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def _swap_in(project: Project, new: Path, final: Path) -> None:
    """Replace ``final`` by ``new``, never leaving nothing at ``final`` for good.

    MBTiles: one SQLite transaction into the live file (:func:`replace_mbtiles`). Folders
    (compact, XYZ) cannot be renamed over a folder: ``final`` goes to ``<cache>.old``,
    then ``new`` to ``final``. A kill between the two renames leaves ``<cache>.old``,
    which :func:`recover_swap` renames back on the next run (the snapshot still describes
    the old cache); the finished building cache stays journaled, so the next seed only
    swaps it in.
    """
    if project.config.cache.kind == "mbtiles":
        replace_mbtiles(new, final)
        return
    old = _old_path(final)
    _remove(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    _remove(old)


def recover_swap(project: Project, say: Any = log.info) -> None:
    """Finish what a seed killed during its swap left: put ``<cache>.old`` back when there
    is no cache, and remove it when there is one (the swap got through)."""
    final = project.cache_path
    old = _old_path(final)
    if not old.exists():
        return
    if final.exists():
        _remove(old)
        return
    old.rename(final)
    say(f"restored {final} from {old.name} (a seed was stopped while swapping caches)")


def record_metadata(store: TileStore, project: Project, layers: dict[str, LayerData]) -> None:
    """The cache's metadata from the current data: the same after a seed or an update."""
    extent = data_extent(layers) or project.scheme.extent
    store.set_metadata(extent=extent, name=project.root.name, levels=project.levels)


def data_digest(layers: dict[str, LayerData]) -> str:
    """A digest of what the data draws: every layer's fingerprints and boxes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(layers):
        d = layers[name]
        h.update(name.encode("utf-8") + b"\0")
        h.update(np.ascontiguousarray(d.fingerprints).tobytes())
        h.update(np.ascontiguousarray(np.asarray(d.bounds, dtype=np.float64)).tobytes())
    return h.hexdigest()


def seed_signature(project: Project, layers: dict[str, LayerData]) -> dict[str, Any]:
    """Everything a full seed's bytes depend on: a building cache resumes only when equal."""
    c = project.config.cache
    return {
        **build_signature(project, project.levels),
        "data": data_digest(layers),
        "cache": {"kind": c.kind, "path": str(project.cache_path)},
    }


def group_of(level: int, mrow: int, mcol: int, meta: int) -> Group:
    """The group a meta-tile is written with: the bundle of its top-left tile (the
    render pool's flush unit, :func:`tiledelta.render.pool.run_plan`)."""
    return (level, mrow * meta // BUNDLE_PACKET, mcol * meta // BUNDLE_PACKET)


def _groups(plan: TilePlan) -> dict[Group, int]:
    """Meta-tiles per group of ``plan``."""
    out: dict[Group, int] = {}
    meta = plan.metatile
    for level, mts in plan.levels.items():
        if not len(mts):
            continue
        keys, counts = np.unique(mts * meta // BUNDLE_PACKET, axis=0, return_counts=True)
        for (br, bc), n in zip(keys.tolist(), counts.tolist(), strict=True):
            out[(level, br, bc)] = n
    return out


def _without(plan: TilePlan, done: set[Group]) -> TilePlan:
    """``plan`` less the meta-tiles of the ``done`` groups."""
    out = TilePlan(metatile=plan.metatile)
    meta = plan.metatile
    for level, mts in plan.levels.items():
        gone = {(br, bc) for lv, br, bc in done if lv == level}
        if gone:
            keys = mts * meta // BUNDLE_PACKET
            keep = np.array([(int(a), int(b)) not in gone for a, b in keys], dtype=bool)
            mts = mts[keep] if len(mts) else mts
        if len(mts):
            out.levels[level] = mts
    return out


@dataclass
class SeedPlan:
    """What a seed will do: the whole plan, and the part left to draw."""

    plan: TilePlan  # every meta-tile of the seed
    todo: TilePlan  # those still to render (all of ``plan`` unless resuming)
    signature: dict[str, Any]
    scope: Scope = field(default_factory=Scope)
    groups: dict[Group, int] = field(default_factory=dict)  # meta-tiles per group
    done: dict[Group, int] = field(default_factory=dict)  # groups finished by earlier runs
    #: True when an unfinished seed of the same signature is continued
    resume: bool = False
    #: why an unfinished building cache cannot be resumed (it is discarded), if any
    discard: str | None = None

    @property
    def metatiles_done(self) -> int:
        return sum(self.done.values())


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    names = {"style": "the style", "data": "the data", "levels": "the levels"}
    diff = [k for k in new if old.get(k) != new.get(k)]
    return ", ".join(names.get(k, k) for k in diff) + " changed" if diff else "it is unreadable"


def plan_seed(
    project: Project,
    layers: dict[str, LayerData],
    *,
    scope: Scope | None = None,
    restart: bool = False,
) -> SeedPlan:
    """The plan of a seed, as the run executes it (and ``--dry-run`` prints it): every
    meta-tile a feature reaches in ``scope``, less the groups an interrupted seed of the
    same signature finished (read only: nothing is written)."""
    scope = scope or Scope()
    plan = full_plan(project, layers, project.levels)
    if scope.partial:
        plan = restrict_plan(plan, project.scheme, levels=scope.levels, area=scope.area)
    sig = seed_signature(project, layers)
    sp = SeedPlan(plan=plan, todo=plan, signature=sig, scope=scope, groups=_groups(plan))
    if scope.partial:
        return sp
    journal_path = project.state_dir / SEED_JOURNAL
    if not building_path(project).exists():
        return sp
    old_sig, done = SeedJournal.peek(journal_path)
    if restart:
        sp.discard = "--restart"
    elif old_sig != json_roundtrip(sig):
        sp.discard = _describe_difference(old_sig or {}, json_roundtrip(sig))
    else:
        sp.resume = True
        sp.done = {g: n for g, n in done.items() if g in sp.groups}
        sp.todo = _without(plan, set(sp.done))
    return sp


def json_roundtrip(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _position(sp: SeedPlan, finished: dict[Group, int]) -> dict[str, Any]:
    """Where a seed is: meta-tiles and bundles finished of the total, levels done."""
    done = {g: n for g, n in finished.items() if g in sp.groups}
    by_level: dict[int, list[bool]] = {}
    for g in sp.groups:
        by_level.setdefault(g[0], []).append(g in done)
    return {
        "metatiles_done": sum(done.values()),
        "metatiles_total": sum(sp.groups.values()),
        "levels_done": sorted(lv for lv, flags in by_level.items() if all(flags)),
        "bundles_done": len(done),
        "bundles_total": len(sp.groups),
    }


class _Recorder:
    """The store the render pool writes to, journaling each group once it is durable."""

    def __init__(self, store: TileStore, sp: SeedPlan, journal: SeedJournal, ctx: RunContext):
        self.store = store
        self.meta = sp.plan.metatile
        self.sp = sp
        self.journal = journal
        self.ctx = ctx
        self.finished: dict[Group, int] = dict(sp.done)
        self._update_position()

    def put_many(self, tiles: Any) -> int:
        tiles = list(tiles)
        n = self.store.put_many(tiles)  # durable when it returns (each store's contract)
        if tiles:
            lv, r, c, _ = tiles[0]
            group = group_of(lv, r // self.meta, c // self.meta, self.meta)
            count = self.sp.groups.get(group)
            if count is not None and group not in self.finished:
                self.journal.add(group, count)
                self.finished[group] = count
                self._update_position()
        return n

    def _update_position(self) -> None:
        self.ctx.position = _position(self.sp, self.finished)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def build_full(
    ctx: RunContext,
    *,
    layers: dict[str, LayerData] | None = None,
    engine: Any = None,
    scope: Scope | None = None,
    restart: bool = False,
) -> BuildOutcome:
    """Render the whole cache anew into a new folder and swap it in, with ``engine`` (by
    default the project's: ``[render] engine``, local pool or Dask); resume an interrupted
    seed of the same plan unless ``restart``. With a partial ``scope``, re-render only
    that part into the existing cache."""
    if engine is None:
        with open_engine(ctx.project, ctx.say) as own:  # a cluster is checked before writing
            return _full(ctx, layers, own, scope or Scope(), restart)
    return _full(ctx, layers, engine, scope or Scope(), restart)


def _full(
    ctx: RunContext,
    layers: dict[str, LayerData] | None,
    engine: Any,
    scope: Scope,
    restart: bool,
) -> BuildOutcome:
    """Render the whole cache anew into a new folder and swap it in (or, with a partial
    ``scope``, refresh that part of the existing cache)."""
    project = ctx.project
    levels = project.levels
    final = project.cache_path
    recover_swap(project, ctx.say)
    if final.exists():
        # Refuse early when the existing cache holds another scheme.
        open_project_store(project, create=False).close()
    with ctx.stage("read"):
        layers = layers if layers is not None else engine.read_layers(project)
    with ctx.stage("plan"):
        sp = plan_seed(project, layers, scope=scope, restart=restart)
    log.info("plan: %d meta-tiles over levels %s", sp.plan.metatile_count, sorted(sp.plan.levels))
    if scope.partial:
        return _refresh(ctx, layers, sp, engine)
    building = building_path(project)
    journal = SeedJournal.open(project)
    if sp.resume:
        ctx.say(
            f"resuming the unfinished seed in {building.name}: {sp.metatiles_done:,} of "
            f"{sp.plan.metatile_count:,} meta-tiles are built ({len(sp.done)} bundles)"
        )
        _remove_temps(building)
    else:
        if building.exists():
            ctx.say(f"discarding the unfinished seed in {building.name} ({sp.discard})")
            _remove(building)
        journal.start(sp.signature, sp.plan.metatile_count)
    try:
        with ctx.stage("render_write"), open_project_store(project, path=building) as store:
            # Rendering needs Mapnik, an optional dependency: imported only when a build runs.
            from tiledelta.render.pool import blank_fill, run_project_plan

            recorder = _Recorder(store, sp, journal, ctx)
            blank = blank_fill(project, data_extent(layers))
            stats = run_project_plan(
                project,
                layers,
                sp.todo,
                recorder,
                progress=ctx.progress,
                blank=blank,
                executor=engine.executor(project, layers),
                chunk=engine.chunk,
            )
            journal.flush()
            if blank is not None:
                fill_blanks(store, blank, levels, stats)
            record_metadata(store, project, layers)
        _sync_tree(building)
        journal.mark_complete()
        _swap_in(project, building, final)
    except BaseException:
        # The finished groups stay journaled (the next seed resumes), and the record of
        # an interrupted run says exactly what the journal holds.
        try:
            journal.flush()
            ctx.position = _position(sp, journal.done())
        finally:
            journal.close()
        raise
    journal.discard()
    extra: dict[str, Any] = {}
    if sp.discard:
        extra["discarded"] = sp.discard
    if sp.resume:
        extra["resumed"] = {
            "metatiles_done_before": sp.metatiles_done,
            "bundles_done_before": len(sp.done),
        }
    return BuildOutcome(
        kind="seed",
        layers=layers,
        levels=levels,
        stats=stats,
        level_info={lv: {"tiles": stats.levels.get(lv, 0)} for lv in levels},
        extra=extra,
    )


def _remove_temps(path: Path) -> None:
    """Remove the temp files writes killed mid-way left in a building cache (ours alone)."""
    if path.is_dir():
        for tmp in path.rglob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _sync_tree(path: Path) -> None:
    """fsync the folders of a finished building cache (its files are fsynced as written),
    so the swap never makes a cache whose renames a reboot could lose."""
    if not path.is_dir() or os.name == "nt":
        return
    for root, _dirs, _files in os.walk(path):
        fsync_dir(Path(root))


def check_cache(project: Project, plan: TilePlan) -> None:
    """:class:`~tiledelta.errors.CacheError` when the cache holds another scheme or kind,
    or when a bundle or tile the run reads or rewrites cannot be read whole (read only)."""
    if not project.cache_path.exists():
        return
    scheme = project.scheme
    with open_project_store(project, readonly=True) as store:
        addrs = [
            (level, r, c)
            for level, mts in plan.levels.items()
            for mrow, mcol in mts.tolist()
            for r, c in metatile_tiles(scheme, level, mrow, mcol, plan.metatile)
        ]
        store.verify(addrs)


def _refresh(
    ctx: RunContext, layers: dict[str, LayerData], sp: SeedPlan, engine: Any
) -> BuildOutcome:
    """Re-render the meta-tiles of a partial seed into the existing cache."""
    from tiledelta.render.pool import blank_fill, run_project_plan

    project = ctx.project
    check_cache(project, sp.plan)  # before the first write: a bad cache changes nothing
    if not sp.plan.metatile_count:
        raise ConfigError(
            f"nothing to seed: no feature reaches {_scope_words(sp.scope)}",
            hint="check --levels, --extent or --aoi against the data's extent",
        )
    with ctx.stage("render_write"), open_project_store(project) as store:
        stats = run_project_plan(
            project,
            layers,
            sp.plan,
            store,
            compare=True,
            progress=ctx.progress,
            blank=blank_fill(project, data_extent(layers)),
            executor=engine.executor(project, layers),
            chunk=engine.chunk,
        )
    return BuildOutcome(
        kind="seed",
        layers=layers,
        levels=sorted(sp.plan.levels),
        stats=stats,
        level_info={lv: {"tiles": stats.levels.get(lv, 0)} for lv in sorted(sp.plan.levels)},
        extra={"partial": sp.scope.as_json()},
        partial=True,
    )


def _scope_words(scope: Scope) -> str:
    parts = []
    if scope.levels is not None:
        parts.append(f"levels {min(scope.levels)}-{max(scope.levels)}")
    if scope.area is not None:
        parts.append(f"the area of {scope.source or '--extent'}")
    return " in ".join(parts) or "the cache"
