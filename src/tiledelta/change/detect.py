"""What changed since the last build: per layer, and in the configuration.

A change to the style, the scheme, the render settings or the extent means a full
rebuild; added levels are rendered fully and dropped ones removed; otherwise each
layer's diff gives the boxes whose tiles must be re-rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tiledelta.change.diff import LayerChange, diff_layer
from tiledelta.change.journal import read_journal
from tiledelta.change.snapshot import LayerSnapshot, build_signature, load_snapshot
from tiledelta.project import Project
from tiledelta.sources import LayerData, read_layers


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

    @property
    def any(self) -> bool:
        return bool(
            self.rebuild
            or self.new_levels
            or self.dropped_levels
            or any(c.changed for c in self.layers.values())
            or any(len(b) for b in self.journal.values())
        )

    def as_dict(self) -> dict:
        return {
            "layers": {k: v.as_dict() for k, v in self.layers.items()},
            "rebuild": self.rebuild,
            "new_levels": self.new_levels,
            "dropped_levels": self.dropped_levels,
            "unfinished_run": bool(self.journal),
        }

    def change_boxes(self) -> dict[str, np.ndarray]:
        """Per layer, where changed or reordered features were and are (without the journal)."""
        return {name: c.boxes for name, c in self.layers.items() if len(c.boxes)}

    def boxes(self) -> dict[str, np.ndarray]:
        """Dirty boxes per layer (old and new places, plus an unfinished run's)."""
        out = {}
        for name in set(self.layers) | set(self.journal):
            parts = [self.layers[name].boxes] if name in self.layers else []
            if name in self.journal:
                parts.append(self.journal[name])
            out[name] = np.concatenate([np.asarray(p).reshape(-1, 4) for p in parts])
        return out


def detect_changes(
    project: Project, layers: dict[str, LayerData] | None = None, *, target: str = "local"
) -> Changes:
    """Compare the current data (and configuration) with the last build's snapshot.

    ``target`` names whose snapshot: the local cache, or a server ("arcgis").
    """
    snap = load_snapshot(project, target)
    if snap is None:
        return Changes(rebuild="no build yet")
    levels = project.levels
    sig = build_signature(project, levels)
    old = snap.signature
    ch = Changes(journal=read_journal(project, target))
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
    ch.new_levels = sorted(set(levels) - set(old.get("levels", [])))
    ch.dropped_levels = sorted(set(old.get("levels", [])) - set(levels))
    layers = layers if layers is not None else read_layers(project)
    for name, data in layers.items():
        # Match by key only when both snapshots hold the same kind of key.
        keyed = (
            data.keyed
            and old.get("keyed", {}).get(name, False)
            and old.get("keys", {}).get(name) == sig["keys"][name]
        )
        ch.layers[name] = diff_layer(snap.layers.get(name), data, keyed)
    ch.snapshot = snap.layers
    return ch
