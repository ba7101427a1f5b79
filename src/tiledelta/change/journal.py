"""The journals: the dirty boxes of an update that has started writing tiles, and the
finished work of a seed building into ``<cache>.building`` (:class:`SeedJournal`).

The update's journal is saved in the state database before the first tile is written and
cleared in the same transaction that advances the snapshot, so a run that dies leaves it
behind and the next run re-plans those tiles too (even if the data was edited back
meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

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


#: The seed's own journal, beside the state database: what a seed into ``<cache>.building``
#: has finished, so that the next seed of the same plan resumes there.
SEED_JOURNAL = "seed-journal.sqlite"
#: Finished groups are committed in batches: every this many groups or seconds.
SEED_BATCH = 64
SEED_BATCH_SECONDS = 0.25

_SEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (
    level INTEGER NOT NULL, brow INTEGER NOT NULL, bcol INTEGER NOT NULL,
    metatiles INTEGER NOT NULL, PRIMARY KEY (level, brow, bcol)
);
"""

#: A seed's unit of work: (level, bundle row, bundle column), the meta-tiles whose
#: top-left tile is in that 128 × 128 bundle; they are written together, once.
Group = tuple[int, int, int]


class SeedJournal:
    """The finished groups of the seed building ``<cache>.building``, under ``.tiledelta/``.

    A group is added only after the store has made its tiles durable (a compact bundle
    fsynced and renamed, an MBTiles transaction committed, XYZ files fsynced); additions
    are committed (``synchronous=FULL``) in batches, and on every way out of the build
    that Python sees. A lost batch only means those groups are drawn again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(path, timeout=5, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=DELETE")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.executescript(_SEED_SCHEMA)
        self._pending: list[tuple[int, int, int, int]] = []
        self._last = time.monotonic()

    @classmethod
    def open(cls, project: Project) -> SeedJournal:
        """The project's seed journal (created empty when absent)."""
        return cls(project.state_dir / SEED_JOURNAL)

    @staticmethod
    def peek(path: Path) -> tuple[dict | None, dict[Group, int]]:
        """The signature and finished groups journaled at ``path``, read without writing
        anything (``None, {}`` when there is no readable journal)."""
        if not path.is_file():
            return None, {}
        try:
            con = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error:
            return None, {}
        try:
            journal = SeedJournal.__new__(SeedJournal)
            journal._con = con
            return journal.signature, journal.done()
        except sqlite3.DatabaseError:
            return None, {}
        finally:
            con.close()

    def _meta(self, key: str) -> str | None:
        row = self._con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def signature(self) -> dict | None:
        """What the journaled build was building (None: nothing journaled)."""
        text = self._meta("signature")
        return None if text is None else json.loads(text)

    @property
    def complete(self) -> bool:
        """True once every tile and the metadata of the build are in ``<cache>.building``."""
        return self._meta("complete") == "1"

    def start(self, signature: dict, total_metatiles: int) -> None:
        """Forget any earlier build and journal a new one."""
        with self._con:
            self._con.execute("BEGIN")
            self._con.execute("DELETE FROM done")
            self._con.execute("DELETE FROM meta")
            self._con.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("signature", json.dumps(signature, sort_keys=True)),
                    ("total", str(total_metatiles)),
                ],
            )
        self._pending.clear()

    def done(self) -> dict[Group, int]:
        """The finished groups, each with its number of meta-tiles."""
        rows = self._con.execute("SELECT level, brow, bcol, metatiles FROM done").fetchall()
        return {(int(a), int(b), int(c)): int(n) for a, b, c, n in rows}

    def add(self, group: Group, metatiles: int) -> None:
        """Journal ``group`` as finished (its tiles are durable in the store)."""
        self._pending.append((*group, metatiles))
        if len(self._pending) >= SEED_BATCH or time.monotonic() - self._last > SEED_BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the groups added since the last commit."""
        self._last = time.monotonic()
        if not self._pending:
            return
        with self._con:
            self._con.execute("BEGIN")
            self._con.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def mark_complete(self) -> None:
        """Journal that the building cache is whole (only the swap is left)."""
        self.flush()
        with self._con:
            self._con.execute("BEGIN")
            self._con.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")

    def close(self) -> None:
        """Commit what is pending and close the database."""
        try:
            self.flush()
        finally:
            self._con.close()

    def discard(self) -> None:
        """Close and delete the journal (the build it journaled is swapped in or dropped)."""
        self._pending.clear()
        self._con.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def record_run(
    project: Project, kind: str, status: str, summary: dict, target: str = "local"
) -> int:
    """Add a run that did not advance the snapshot (``status`` "interrupted", or "ok" for
    a partial seed or update) to the run history; return its id."""
    now = time.time()
    with closing(connect(project, target)) as con, con:
        cur = con.execute(
            "INSERT INTO runs (kind, started, finished, status, summary) VALUES (?, ?, ?, ?, ?)",
            (kind, now, now, status, json.dumps(summary)),
        )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)
