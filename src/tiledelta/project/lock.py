"""The project's run lock: one tiledelta run at a time per project, on Linux and Windows.

The lock is an OS file lock on ``.tiledelta/run.lock`` (``flock`` on POSIX,
``msvcrt.locking`` on Windows), so it dies with the process that holds it: a killed
run never leaves a stale lock. The file also names the holder's pid for the message.

An ``flock`` belongs to the open file, which a forked child shares: a render worker that
kept its copy would hold the lock after its parent died. Workers therefore call
:func:`drop_inherited_locks` first (and die with their parent,
:mod:`tiledelta.render.lifeline`); the descriptor is also close-on-exec (Python's default),
so no program a run starts inherits it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tiledelta.errors import LockedError, StateError
from tiledelta.project.project import Project

LOCK_FILE = "run.lock"
#: Descriptors of the locks this process holds (what a forked child must let go of).
_HELD: set[int] = set()


def drop_inherited_locks() -> None:
    """In a forked child: point every lock descriptor inherited from the parent at
    ``/dev/null`` (never ``LOCK_UN``, which would free the parent's lock too), so that
    the lock is the parent's alone and ends with it."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in list(_HELD):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    finally:
        os.close(null)
    _HELD.clear()


def _alive(pid: int) -> bool:
    """False when no process ``pid`` exists (POSIX); True when unsure (Windows)."""
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def project_lock(project: Project) -> Iterator[None]:
    """Hold the project's run lock; :class:`LockedError` when another run has it."""
    path = project.state_dir / LOCK_FILE
    try:
        project.state_dir.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the run
    except (FileExistsError, NotADirectoryError):
        raise StateError(
            f"{project.state_dir} is a file, not a folder: tiledelta keeps its state there; "
            "move the file away"
        ) from None
    except OSError as exc:
        raise StateError(
            f"{path}: cannot open the run lock ({exc.strerror or exc}); make "
            f"{project.state_dir} writable"
        ) from None
    try:
        try:
            _lock_file(fh)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            pid = who.removeprefix("pid ").strip()
            if pid.isdigit() and not _alive(int(pid)):
                raise LockedError(
                    f"{path}: the run that took the lock ({who}) is gone, but a process it "
                    "started still holds the lock; wait a few seconds, or end that process"
                ) from None
            raise LockedError(
                f"{project.root}: another tiledelta run ({who}) is working on this project; "
                "wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        _HELD.add(fh.fileno())
        yield
    finally:
        _HELD.discard(fh.fileno())
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
