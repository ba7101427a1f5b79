"""Change detection: snapshots of what the last build saw, diffs against the current
data, the journal of unfinished runs, and the dirty area as GeoJSON / Esri FeatureSet."""

from tiledelta.change.aoi import dirty_area, esri_feature_set, write_aoi
from tiledelta.change.detect import Changes, check_mass_delete, detect_changes
from tiledelta.change.diff import LayerChange, diff_layer
from tiledelta.change.journal import (
    SeedJournal,
    read_journal,
    record_run,
    write_journal,
)
from tiledelta.change.snapshot import (
    LayerSnapshot,
    Snapshot,
    build_signature,
    connect,
    last_update_tiles,
    load_snapshot,
    measured_speed,
    record_build,
    state_db,
)

__all__ = [
    "Changes",
    "LayerChange",
    "LayerSnapshot",
    "SeedJournal",
    "Snapshot",
    "build_signature",
    "check_mass_delete",
    "connect",
    "detect_changes",
    "diff_layer",
    "dirty_area",
    "write_aoi",
    "esri_feature_set",
    "last_update_tiles",
    "load_snapshot",
    "measured_speed",
    "read_journal",
    "record_build",
    "record_run",
    "state_db",
    "write_journal",
]
