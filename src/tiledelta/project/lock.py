"""The project's run lock: one tiledelta run at a time per project, on Linux and Windows.

The lock is an OS file lock on ``.tiledelta/run.lock`` (``flock`` on POSIX,
``msvcrt.locking`` on Windows), so it dies with the process that holds it: a killed
run never leaves a stale lock. The file also names the holder's pid for the message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tiledelta.errors import LockedError
from tiledelta.project.project import Project

LOCK_FILE = "run.lock"


@contextmanager
def project_lock(project: Project) -> Iterator[None]:
    """Hold the project's run lock; :class:`LockedError` when another run has it."""
    project.state_dir.mkdir(parents=True, exist_ok=True)
    path = project.state_dir / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the run
    try:
        try:
            _lock_file(fh)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            raise LockedError(
                f"{project.root}: another tiledelta run ({who}) is working on this project; "
                "wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def _lock_file(fh: IO[str]) -> None:
    # The platform modules are imported here, each only on its own platform.
    if os.name == "nt":  # pragma: no cover - Windows (ArcGIS Pro)
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
