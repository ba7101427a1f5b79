"""Render workers die with the run that started them.

A worker forked by :mod:`tiledelta.render.pool` calls :func:`bind_to_parent` first: on
Linux the kernel sends it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
everywhere a daemon thread also watches the parent and ends the worker when it is gone:
on POSIX its parent pid changes (the worker was re-parented), on Windows it waits on the
parent's process handle. The worker also drops its inherited copy of the
project lock's descriptor (:func:`tiledelta.project.lock.drop_inherited_locks`), so a lock
never outlives the run that took it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from tiledelta.project.lock import drop_inherited_locks

#: Seconds between two looks at the parent's pid.
POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


def _pdeathsig() -> bool:
    """Ask Linux to SIGKILL this process when its parent thread exits; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _wait_windows(parent: int) -> bool:  # pragma: no cover - Windows
    """Block until the process ``parent`` ends (Windows never re-parents a process, so its
    parent pid does not change); False when it cannot be watched that way."""
    import ctypes

    synchronize, infinite = 0x00100000, 0xFFFFFFFF
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(synchronize, False, parent)
    if not handle:
        return False
    kernel32.WaitForSingleObject(handle, infinite)
    return True


def _watch(parent: int) -> None:
    # Signals sent to the worker (the pool's SIGTERM, Ctrl-C to the group) must reach its
    # main thread: delivered to this thread instead, they would leave the main thread
    # blocked in a semaphore wait for ever, and the parent's Pool.terminate() with it.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if os.name == "nt" and _wait_windows(parent):  # pragma: no cover - Windows
        os._exit(1)
    while True:
        time.sleep(POLL_SECONDS)
        if os.getppid() != parent:
            os._exit(1)


def bind_to_parent(parent: int) -> None:
    """End this process when ``parent`` (the pid that started it) is gone."""
    drop_inherited_locks()
    _pdeathsig()
    if os.getppid() != parent:  # the parent died before we got here
        os._exit(1)
    # The thread starts with SIGTERM and SIGINT blocked, so that only the main thread takes
    # them: Python runs a handler in the main thread only, and one blocked in the pool
    # queue's semaphore must be woken by the signal itself (EINTR) to leave.
    stop = {signal.SIGTERM, signal.SIGINT}
    masked = hasattr(signal, "pthread_sigmask")
    if masked:
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        with contextlib.suppress(RuntimeError):
            threading.Thread(target=_watch, args=(parent,), daemon=True, name="lifeline").start()
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
