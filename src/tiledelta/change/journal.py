"""The journal: the dirty boxes of a run that has started writing tiles.

It is saved in the state database before the first tile is written and cleared in the
same transaction that advances the snapshot, so a run that dies leaves it behind and the
next run re-plans those tiles too (even if the data was edited back meanwhile).
"""

from __future__ import annotations

import json
from contextlib import closing

import numpy as np

from tiledelta.change.snapshot import connect
from tiledelta.project import Project


def read_journal(project: Project, target: str = "local") -> dict[str, np.ndarray]:
    with closing(connect(project, target)) as con:
        row = con.execute("SELECT value FROM meta WHERE key='journal'").fetchone()
    if not row:
        return {}
    data = json.loads(row[0])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in data.items()}


def write_journal(project: Project, boxes: dict[str, np.ndarray], target: str = "local") -> None:
    data = {k: np.asarray(v).reshape(-1, 4).tolist() for k, v in boxes.items() if len(v)}
    with closing(connect(project, target)) as con, con:
        con.execute("INSERT OR REPLACE INTO meta VALUES ('journal', ?)", (json.dumps(data),))
