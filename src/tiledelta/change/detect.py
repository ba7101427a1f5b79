"""What changed since the last build: per layer, and in the configuration.

A change to the style, the scheme, the render settings or the extent means a full
rebuild; added levels are rendered fully and dropped ones removed; otherwise each
layer's diff gives the boxes whose tiles must be re-rendered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from tiledelta.change.diff import LayerChange, diff_layer
from tiledelta.change.journal import read_journal
from tiledelta.change.snapshot import (
    LayerSnapshot,
    Snapshot,
    build_signature,
    load_layer_inputs,
    load_snapshot,
)
from tiledelta.change.unchanged import proven_unchanged
from tiledelta.errors import MassDeleteError, SourceError
from tiledelta.project import Project
from tiledelta.sources import LayerData, display_path, read_layers
from tiledelta.sources.types import LayerInputs

#: A layer losing fewer features than this is never a mass deletion, whatever the share.
MASS_DELETE_FLOOR = 10


@dataclass
class Restyled:
    """A layer whose symbology or labels changed, or that was added to or removed from the
    map (styles with per-layer digests): its tiles are re-rendered wherever it drew or
    draws, at the levels it drew or draws at, with the larger of its old and new reach."""

    boxes: np.ndarray  # (n, 4) its features' old and new boxes
    levels: list[int]  # the levels it drew at before or draws at now
    buffer: int  # pixels: the larger of its old and new buffer


@dataclass
class Changes:
    """What changed since the last build, and what that means for the cache."""

    layers: dict[str, LayerChange] = field(default_factory=dict)
    rebuild: str | None = None  # why everything must be rebuilt, if it must
    new_levels: list[int] = field(default_factory=list)
    dropped_levels: list[int] = field(default_factory=list)
    journal: dict[str, np.ndarray] = field(default_factory=dict)  # boxes of an unfinished run
    #: the last build's per-layer snapshot (boxes and fingerprints in draw order)
    snapshot: dict[str, LayerSnapshot] = field(default_factory=dict, repr=False)
    #: layers whose own style changed (a Pro map's renderer or labels), or were added/removed
    restyled: dict[str, Restyled] = field(default_factory=dict)
    #: layers proven unchanged by their files (neither fingerprinted nor diffed)
    unchanged_files: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(
            self.rebuild
            or self.new_levels
            or self.dropped_levels
            or any(c.changed for c in self.layers.values())
            or any(len(b) for b in self.journal.values())
            or bool(self.restyled)
        )

    def as_dict(self) -> dict:
        return {
            "layers": {k: v.as_dict() for k, v in self.layers.items()},
            "rebuild": self.rebuild,
            "new_levels": self.new_levels,
            "dropped_levels": self.dropped_levels,
            "unfinished_run": bool(self.journal),
            "restyled": sorted(self.restyled),
        } | ({"unchanged_files": self.unchanged_files} if self.unchanged_files else {})

    def change_boxes(self) -> dict[str, np.ndarray]:
        """Per layer, where changed or reordered features were and are (without the journal)."""
        return {name: c.boxes for name, c in self.layers.items() if len(c.boxes)}

    def boxes(self) -> dict[str, np.ndarray]:
        """Dirty boxes per layer (old and new places, plus an unfinished run's, plus every
        box of a restyled layer)."""
        out = {}
        for name in set(self.layers) | set(self.journal) | set(self.restyled):
            parts = [self.layers[name].boxes] if name in self.layers else []
            if name in self.journal:
                parts.append(self.journal[name])
            if name in self.restyled:
                parts.append(self.restyled[name].boxes)
            out[name] = np.concatenate([np.asarray(p).reshape(-1, 4) for p in parts])
        return out


def detect_changes(
    project: Project,
    layers: dict[str, LayerData] | None = None,
    *,
    target: str = "local",
    full_compare: bool = False,
) -> Changes:
    """Compare the current data (and configuration) with the last build's snapshot.

    ``target`` names whose snapshot: the local cache, or a server ("arcgis"). A
    file-backed layer whose files hold the bytes the last build read (``[update]
    trust_unchanged_files``, :mod:`tiledelta.change.unchanged`) is neither fingerprinted
    nor diffed, and when every layer is so and nothing else is due, nothing is read
    (``layers`` None); ``full_compare`` compares every feature regardless.
    """
    ch = _detect(project, layers, target=target, full_compare=full_compare, may_read=True)
    assert ch is not None
    return ch


def changes_without_reading(
    project: Project, *, target: str = "local", full_compare: bool = False
) -> Changes | None:
    """The changes when they can be told without reading any layer (a rebuild is due, or
    every layer is proven unchanged); None when the data must be read."""
    return _detect(project, None, target=target, full_compare=full_compare, may_read=False)


def _detect(
    project: Project,
    layers: dict[str, LayerData] | None,
    *,
    target: str,
    full_compare: bool,
    may_read: bool,
) -> Changes | None:
    snap = load_snapshot(project, target)
    if snap is None:
        return Changes(rebuild="no build yet")
    levels = project.levels
    sig = build_signature(project, levels)
    old = snap.signature
    # The snapshot rides along on a rebuild too: check_mass_delete counts against it.
    ch = Changes(journal=read_journal(project, target), snapshot=snap.layers)
    if target == "local" and not project.cache_path.exists():
        ch.rebuild = f"the cache {project.cache_path} is missing"
        return ch
    for key, what in (
        ("format", "the snapshot was written by another version of tiledelta"),
        ("style", "the style, or a file it uses (symbols, patterns, fonts), changed"),
        ("scheme", "the tiling scheme changed"),
        ("render", "render settings (meta-tile, buffer, format) changed"),
        ("extent", "the configured extent changed"),
    ):
        if old.get(key) != sig[key]:
            ch.rebuild = what
            return ch
    if _order_changed(old.get("layer_styles") or {}, sig["layer_styles"]):
        ch.rebuild = "the map draws its layers in another order"
        return ch
    ch.new_levels = sorted(set(levels) - set(old.get("levels", [])))
    ch.dropped_levels = sorted(set(old.get("levels", [])) - set(levels))
    proven: dict[str, LayerInputs] = {}
    recorded: dict[str, LayerInputs] = {}
    if not full_compare:
        recorded = {n: i for n, i in load_layer_inputs(project, target).items() if n in snap.layers}
        proven = proven_unchanged(project, recorded, layers)
    ch.unchanged_files = sorted(proven)
    names = [src.name for src in project.style.layers]
    if layers is None and all(n in proven for n in names):
        ch.restyled = _restyled(old.get("layer_styles") or {}, sig["layer_styles"], snap, {})
        if not ch.restyled:  # every layer is the snapshot's: nothing is read
            ch.layers = {n: LayerChange() for n in names}
            return ch
    if not may_read:
        return None
    if layers is None:
        layers = read_layers(project)
        # What was read is what counts: each layer's own proof (hashed before its read).
        proven = proven_unchanged(project, recorded, layers) if recorded else {}
        ch.unchanged_files = sorted(proven)
    for name, data in layers.items():
        if name in proven:  # the same bytes, read the same way: the snapshot's features
            ch.layers[name] = LayerChange()
            continue
        # Match by key only when both snapshots hold the same kind of key.
        keyed = (
            data.keyed
            and old.get("keyed", {}).get(name, False)
            and old.get("keys", {}).get(name) == sig["keys"][name]
        )
        _check_null_geometries(project, name, snap.layers.get(name), data)
        if not keyed and data.fids is not None and _key_set_since(old, name, data):
            # The last build matched rows by feature id; a key was set since: match by
            # feature id once more, so an edited feature is "modified" from this run on.
            data = dataclasses.replace(data, keys=data.fids)
            keyed = True
        ch.layers[name] = diff_layer(snap.layers.get(name), data, keyed)
    ch.snapshot = snap.layers
    ch.restyled = _restyled(old.get("layer_styles") or {}, sig["layer_styles"], snap, layers)
    return ch


def _key_set_since(old: dict, name: str, data: LayerData) -> bool:
    """Whether ``name`` has a key now and had none at the last build, whose snapshot then
    holds the rows' feature ids, which ``data`` has too (file readers)."""
    return (
        data.keyed
        and data.fids is not None
        and not old.get("keyed", {}).get(name, False)
        and old.get("keys", {}).get(name) is None
    )


def _restyled(
    old: dict[str, dict], new: dict[str, dict], snap: Snapshot, layers: dict[str, LayerData]
) -> dict[str, Restyled]:
    """Layers whose digest changed, or that are in only one of the two builds."""
    out = {}
    for name in list(old) + [n for n in new if n not in old]:
        o, n = old.get(name), new.get(name)
        if o is not None and n is not None and o.get("digest") == n.get("digest"):
            continue
        parts = []
        if name in snap.layers:
            parts.append(np.asarray(snap.layers[name].bounds).reshape(-1, 4))
        if name in layers:
            parts.append(np.asarray(layers[name].bounds).reshape(-1, 4))
        sides = [x for x in (o, n) if x is not None]
        out[name] = Restyled(
            boxes=np.concatenate(parts) if parts else np.zeros((0, 4)),
            levels=sorted({lv for x in sides for lv in x.get("levels", [])}),
            buffer=max(int(x.get("buffer", 0)) for x in sides),
        )
    return out


def _order_changed(old: dict[str, dict], new: dict[str, dict]) -> bool:
    """Whether the layers in both builds are drawn in another order now."""
    common = set(old) & set(new)
    return [n for n in old if n in common] != [n for n in new if n in common]


def _where(project: Project, name: str) -> str:
    for src in project.style.layers:
        if src.name == name:
            return display_path(src)
    return name


def _check_null_geometries(
    project: Project, name: str, old: LayerSnapshot | None, data: LayerData
) -> None:
    """:class:`SourceError` when a feature the last build drew now has no geometry: the
    source was read incompletely (GDAL gives a cut shapefile's records no geometry), so
    deleting its tiles would be wrong."""
    if old is None or not len(data.null_keys) or not len(old):
        return
    okeys, nulls = np.asarray(old.keys), np.asarray(data.null_keys)
    if okeys.dtype.kind != nulls.dtype.kind or object in (okeys.dtype, nulls.dtype):
        okeys, nulls = okeys.astype(str), nulls.astype(str)
    lost = np.intersect1d(okeys, nulls)
    if len(lost):
        first = lost[0].item() if isinstance(lost[0], np.generic) else lost[0]
        raise SourceError(
            f"layer {name!r}: {len(lost):,} feature(s) of {_where(project, name)} that had a "
            f"geometry at the last build have none now (such as {first!r}): the data looks "
            "incomplete; check the source, or remove those rows to delete them"
        )


def check_mass_delete(
    project: Project, changes: Changes, layers: dict[str, LayerData] | None = None
) -> None:
    """:class:`MassDeleteError` when an update would delete more of a layer than its
    ``max_delete_share`` (``[layers.NAME]``, else ``[update]``) of the last build's
    features, net of additions (and at least :data:`MASS_DELETE_FLOOR` features).

    A rebuild (a changed style or scheme) diffs no layer: there, with ``layers``, the
    features read now are counted against the snapshot's."""
    cfg = project.config
    lost_by: dict[str, int] = {n: c.deleted - c.added for n, c in changes.layers.items()}
    for name, old in changes.snapshot.items():
        if name not in lost_by and layers is not None and name in layers:
            lost_by[name] = len(old) - len(layers[name])
    for name, lost in lost_by.items():
        snap = changes.snapshot.get(name)
        before = len(snap) if snap is not None else 0
        layer_cfg = cfg.layers.get(name)
        share = cfg.update.max_delete_share
        if layer_cfg is not None and layer_cfg.max_delete_share is not None:
            share = layer_cfg.max_delete_share
        if before and lost >= MASS_DELETE_FLOOR and lost > share * before:
            raise MassDeleteError(
                f"layer {name!r}: this update would delete {lost:,} of {before:,} features "
                f"({lost / before:.0%}, more than max_delete_share {share:.0%}) from "
                f"{_where(project, name)}; check the data, or rerun with --allow-mass-delete"
            )
