"""What a run's summary says, in the words every reader uses: HTML, text, notifications.

The kind of run is the summary's ``kind`` (:class:`~tiledelta.runs.summary.RunSummary`).
A local run's tiles are counted as rendered, written, unchanged, blank and removed, in
that order and in those words: rendered = written + unchanged + blank; removed apart, and
the blank copies stored apart (:mod:`tiledelta.runs.summary`). Per level, a seed, a
rebuild and an update give the same counts, at that level.
A server run (``arcgis``) renders no tile here: it sends server jobs, one per level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import ValidationError

from tiledelta.runs.summary import RunKind, RunSummary

#: Summary field -> its word, in the order readers show them.
COUNT_WORDS = {
    "tiles_rendered": "rendered",
    "tiles_written": "written",
    "tiles_unchanged": "unchanged",
    "tiles_blank": "blank",
    "tiles_removed": "removed",
}
#: ``tiles_blank_stored``: the shared background-only tile stored at an address.
BLANK_FILLED = "blank copies stored"
#: The tiles a run changed in the cache (``tiles.json``): written, blank copies, removed.
CHANGED_WORDS = "changed in the cache"
#: Per level: the LevelSummary field and its column heading, in order.
LEVEL_COLUMNS = (
    ("rendered", "rendered"),
    ("written", "written"),
    ("unchanged", "unchanged"),
    ("blank", "blank"),
    ("removed", "removed"),
    ("blank_stored", BLANK_FILLED),
)
SERVER_KINDS = ("arcgis", "arcgis-baseline")
_KINDS = frozenset(get_args(RunKind))


def run_kind(summary: Mapping[str, Any]) -> str:
    """What ran: the summary's ``kind``; for a failure, what failed (seed, update, watch...)."""
    if summary.get("kind"):
        return str(summary["kind"])
    # Older summaries have no kind (local runs only): guessed from their keys, as written then.
    if summary.get("rebuild") or (summary.get("changes") or {}).get("rebuild"):
        return "rebuild"
    return "update" if "changes" in summary else "seed"


def parse_summary(summary: Mapping[str, Any]) -> RunSummary | None:
    """``summary`` as a :class:`RunSummary`; None when it describes no run of a known kind
    (a failure of ``watch``).

    Tolerant, for old run folders and for summaries that carry more: keys the model does
    not know (``error``, ``changemap_error``, watch's ``watch_seconds``) are ignored, a
    missing ``kind`` comes from :func:`run_kind`, and fields that do not validate are left
    out (as if absent).
    """
    kind = run_kind(summary)
    if kind not in _KINDS:
        return None
    fields = {k: v for k, v in summary.items() if k in RunSummary.model_fields}
    fields["kind"] = kind
    while True:
        try:
            return RunSummary.model_validate(fields)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & (fields.keys() - {"kind"})
            if not bad:
                return None
            for key in bad:
                del fields[key]


def rebuild_reason(s: RunSummary) -> str | None:
    """Why everything was rebuilt (a rebuild, or a server run without a baseline), or None."""
    return s.rebuild or (s.changes or {}).get("rebuild") or None


def tile_counts(s: RunSummary) -> list[tuple[str, int]]:
    """``(word, count)`` of the tiles a local run rendered (plus :data:`BLANK_FILLED` when
    some were); empty for a server run and for a summary without counts (a failure's)."""
    if s.kind in SERVER_KINDS or not s.model_fields_set & COUNT_WORDS.keys():
        return []
    out = [(word, int(getattr(s, field))) for field, word in COUNT_WORDS.items()]
    if s.tiles_blank_stored:
        out.append((BLANK_FILLED, s.tiles_blank_stored))
    return out


def count_label(word: str) -> str:
    """A count's label on its own ("tiles written"), for tables and cards."""
    return word if word == BLANK_FILLED else f"tiles {word}"


def level_words(kind: str) -> str:
    """What the per-level ``tiles`` of a summary from before per-level counts meant (stored
    tiles for a seed, planned for an update); newer summaries carry every count per level."""
    return "planned tiles" if kind == "update" else "stored tiles"


def level_row(info: Any) -> dict[str, int] | None:
    """A level's counts by :data:`LEVEL_COLUMNS` field, or None for a summary from before
    per-level counts (only ``tiles``)."""
    if info is None or info.rendered is None:
        return None
    return {f: int(getattr(info, f) or 0) for f, _word in LEVEL_COLUMNS}


def server_jobs(s: RunSummary) -> str:
    """A server run's jobs in a few words: "2 server job(s)"."""
    n = len(s.jobs or [])
    if s.kind == "arcgis-baseline":
        return f"{n} server job(s): the server's cache was marked current"
    return f"{n} server job(s)"


def jobs_per_level(s: RunSummary) -> dict[str, dict[str, Any]]:
    """A server run's jobs by level (as text)."""
    return {str(j["level"]): j for j in s.jobs or [] if j.get("level") is not None}


def server_levels(s: RunSummary) -> list[tuple[str, str, str]]:
    """A server run's ``(level, scale, job)`` per level, in words ("1:4,514", "j1 (done)");
    none for a baseline (it sends nothing)."""
    if s.kind == "arcgis-baseline":
        return []
    jobs = jobs_per_level(s)
    out = []
    for lv in level_order(set(s.levels) | set(jobs)):
        info, job = s.levels.get(lv), jobs.get(lv)
        scale = (job or {}).get("scale") or (info.scale if info is not None else None)
        if job is not None:
            what = f"{job.get('job', '?')} ({job.get('status', 'sent')})"
        elif info is not None and info.submitted:
            what = "submitted"
        else:
            what = "none (nothing changed there)"
        out.append((lv, f"1:{scale:,.0f}" if scale else "", what))
    return out


def outcome(s: RunSummary) -> str:
    """What the run did, in a few words: tiles written (and removed), or server jobs."""
    if s.kind in SERVER_KINDS:
        return server_jobs(s)
    text = f"{s.tiles_written:,} tiles written"
    if s.tiles_removed:
        text += f", {s.tiles_removed:,} removed"
    return text


def changed_anything(s: RunSummary) -> bool:
    """Whether the run wrote or removed a tile, sent a server job or rebuilt everything."""
    return bool(s.tiles_written or s.tiles_removed or s.jobs or rebuild_reason(s))


def level_order(levels: Iterable[str]) -> list[str]:
    """Level keys in numeric order (any other key last)."""
    return sorted(levels, key=lambda v: (0, int(v)) if str(v).isdigit() else (1, str(v)))
