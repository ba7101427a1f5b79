"""tiledelta: keep raster tile caches fresh by re-rendering only what changed."""

from __future__ import annotations

import time as _time

#: :func:`time.perf_counter` at tiledelta's first line: start-up ends, imports begin.
STARTED = _time.perf_counter()

__version__ = "0.1.0"


def process_age() -> float | None:
    """Seconds since this process started (Linux: ``/proc``; Windows: ``GetProcessTimes``),
    or None where the platform does not say."""
    import os
    import sys

    try:
        if sys.platform.startswith("linux"):
            with open("/proc/self/stat", "rb") as f:
                stat = f.read()
            # Field 22 (starttime, clock ticks since boot); the name (field 2) may hold spaces.
            ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
            hz = os.sysconf("SC_CLK_TCK")
            return _time.clock_gettime(_time.CLOCK_BOOTTIME) - ticks / hz
        if sys.platform == "win32":
            return _windows_process_age()
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return None


def _windows_process_age() -> float | None:
    import ctypes
    from ctypes import wintypes

    k32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    k32.GetCurrentProcess.restype = wintypes.HANDLE
    times = [wintypes.FILETIME() for _ in range(4)]  # creation, exit, kernel, user
    if not k32.GetProcessTimes(k32.GetCurrentProcess(), *map(ctypes.byref, times)):
        return None
    now = wintypes.FILETIME()
    k32.GetSystemTimePreciseAsFileTime(ctypes.byref(now))

    def seconds(ft: wintypes.FILETIME) -> float:  # 100 ns units since 1601
        return ((ft.dwHighDateTime << 32) | ft.dwLowDateTime) / 1e7

    return seconds(now) - seconds(times[0])


def startup_stages(until: float | None = None) -> dict[str, float]:
    """The process's own stage times, in seconds: ``startup`` (Python's start up to
    tiledelta's first line; left out where the platform gives no process start time) and
    ``imports`` (tiledelta's first line up to ``until``, a :func:`time.perf_counter`
    value; default now). Meant for a command line run: in an embedding application the
    process may have started long before."""
    now = _time.perf_counter()
    end = now if until is None else until
    out = {"imports": max(0.0, end - STARTED)}
    age = process_age()
    if age is not None:
        out = {"startup": max(0.0, age - (now - STARTED)), **out}
    return out
