"""Plain-text summaries of a run, for terminals, emails and chat messages."""

from __future__ import annotations

from pathlib import Path

from tiledelta.runs.report.facts import (
    BLANK_FILLED,
    CHANGED_WORDS,
    LEVEL_COLUMNS,
    SERVER_KINDS,
    level_order,
    level_row,
    level_words,
    parse_summary,
    rebuild_reason,
    run_kind,
    server_jobs,
    server_levels,
    tile_counts,
)
from tiledelta.runs.report.find import CHANGEMAP_FILE, REPORT_FILE, read_json, tiles_per_level
from tiledelta.runs.summary import RunSummary


def counts_line(summary: dict) -> str:
    """A local run's tile counts in one phrase, in the words of every reader:
    "1,349 tiles rendered: 190 written, 328 unchanged, 831 blank; 44 removed"
    (rendered = written + unchanged + blank; removed and blank copies stored apart; the
    tiles of one colour other than the background, among the written and unchanged, last)."""
    s = parse_summary(summary)
    if s is None:
        return ""
    counts = dict(tile_counts(s))
    if not counts:
        return ""
    text = (
        f"{counts['rendered']:,} tiles rendered: {counts['written']:,} written, "
        f"{counts['unchanged']:,} unchanged, {counts['blank']:,} blank; "
        f"{counts['removed']:,} removed"
    )
    if s.tiles_blank_stored:
        text += f", {s.tiles_blank_stored:,} {BLANK_FILLED}"
    if s.tiles_solid:  # among the written and unchanged: one colour, encoded once
        text += f"; {s.tiles_solid:,} solid (one colour)"
    return text


def report_text(folder: Path) -> str:
    """A plain-text summary of the run in ``folder`` (for terminals and emails)."""
    folder = Path(folder)
    return summary_text(
        read_json(folder / "summary.json") or {},
        tiles=read_json(folder / "tiles.json"),
        folder=folder,
    )


def summary_text(summary: dict, *, tiles: dict | None = None, folder: Path | None = None) -> str:
    """A plain-text summary of a run's ``summary`` (``tiles`` as in ``tiles.json``).

    ``summary`` as in ``summary.json``, or a failure's (``kind`` and ``error``).
    """
    kind = run_kind(summary)
    s = parse_summary(summary)
    error = summary.get("error")
    run = summary.get("run", folder.name if folder is not None else None)
    head = f"tiledelta {kind}" + (f" run {run}" if run is not None else "")
    if error:
        head += " FAILED"
    elif s is not None and "seconds" in s.model_fields_set:
        head += f", {s.seconds} s"
    lines = [head]
    if error:
        lines.append(f"  error: {error}")
    if s is not None:
        lines += _details(s, tiles_per_level(tiles), finished=not error)
    if folder is not None:
        report = folder / REPORT_FILE
        if report.is_file():
            lines.append(f"  report: {report}")
        if (folder / CHANGEMAP_FILE).is_file():
            lines.append(f"  change map: {folder / CHANGEMAP_FILE}")
    return "\n".join(lines)


def _details(s: RunSummary, tiles: dict[str, list], *, finished: bool) -> list[str]:
    lines = []
    counts = tile_counts(s)
    if counts:
        lines.append("  tiles: " + ", ".join(f"{n:,} {word}" for word, n in counts))
    if s.kind in SERVER_KINDS and s.jobs is not None:
        lines.append(f"  {server_jobs(s)}")
    changes = s.changes or {}
    reason = rebuild_reason(s)
    if s.kind == "seed" and finished:
        lines.append("  changes: full build")
    elif reason:
        lines.append(f"  changes: full rebuild ({reason})")
    for name, c in (changes.get("layers") or {}).items():
        if any(c.get(k) for k in ("added", "modified", "deleted")):
            lines.append(
                f"  {name}: {c.get('added', 0)} added, {c.get('modified', 0)} modified, "
                f"{c.get('deleted', 0)} deleted"
            )
    for key, label in (("new_levels", "new levels"), ("dropped_levels", "dropped levels")):
        if changes.get(key):
            lines.append(f"  {label}: {', '.join(str(v) for v in changes[key])}")
    if s.kind in SERVER_KINDS:
        rows = server_levels(s)
        if rows:
            parts = [f"{lv}: {job}" for lv, _scale, job in rows]
            lines.append("  server jobs per level: " + ", ".join(parts))
    elif s.levels:
        per_level = {lv: level_row(s.levels[lv]) for lv in level_order(s.levels)}
        columns = [f for f, _w in LEVEL_COLUMNS if f != "blank_stored" or s.tiles_blank_stored]
        parts = []
        for lv, row in per_level.items():
            if row is not None:
                figures = "/".join(f"{row[f]:,}" for f in columns)
            else:
                figures = f"{s.levels[lv].tiles or 0:,}"
            changed = f" ({len(tiles[lv]):,} {CHANGED_WORDS})" if lv in tiles else ""
            parts.append(f"{lv}: {figures}{changed}")
        if any(r is not None for r in per_level.values()):
            words = " / ".join(w for f, w in LEVEL_COLUMNS if f in columns)
            lines.append(f"  per level ({words}): " + ", ".join(parts))
        else:
            lines.append(f"  {level_words(s.kind)} per level: " + ", ".join(parts))
    if s.stages:
        lines.append("  stages: " + ", ".join(f"{k} {float(v):.2f} s" for k, v in s.stages.items()))
    return lines
