"""Finding runs and their reports, and reading the JSON files of a run folder."""

from __future__ import annotations

import json
from pathlib import Path

from tiledelta.project import Project
from tiledelta.runs.folder import latest_run, runs_dir

REPORT_FILE = "report.html"
CHANGEMAP_FILE = "changemap.png"


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tiles_per_level(tiles: dict | None) -> dict[str, list]:
    """``tiles.json``'s ``levels`` (level -> [[row, col], ...]), keyed by level as text."""
    return {str(k): v for k, v in ((tiles or {}).get("levels") or {}).items()}


def find_run(project: Project, run: str | int | None = None) -> Path | None:
    """The folder of run ``run`` (an id such as 2 or "000002"), or the newest run's."""
    if run is None:
        return latest_run(project)
    try:
        run_id = int(str(run))
    except ValueError:
        return None
    folder = runs_dir(project) / f"{run_id:06d}"
    return folder if folder.is_dir() else None


def latest_report(project: Project) -> Path | None:
    """The newest run's ``report.html`` (searching back to the newest run that has one)."""
    folder = runs_dir(project)
    if not folder.is_dir():
        return None
    for run in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
        if (run / REPORT_FILE).is_file():
            return run / REPORT_FILE
    return None
