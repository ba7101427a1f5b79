"""Exception hierarchy and the exit codes of every command.

The CLI turns any :class:`TileDeltaError` into one line on stderr (or, with ``--json``,
one JSON object on stdout: ``error``, ``kind``, ``hint``) and exits with the class's
:attr:`~TileDeltaError.exit_code`:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     error: bad input, unreadable data, a failed run (every other error class)
2     usage: an unknown option, a missing or malformed argument (click's usage errors)
3     busy: another run holds the project lock, or ``serve``'s port is taken
130   interrupted: Ctrl-C (SIGINT) or SIGTERM; 128 + SIGINT, as shells report a Ctrl-C
====  ==========================================================================
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from pathlib import Path

#: Exit code of a successful command.
EXIT_OK = 0
#: Exit code of any error that is not one of the others.
EXIT_ERROR = 1
#: Exit code of a usage error (an option or argument the command cannot take).
EXIT_USAGE = 2
#: Exit code when the project lock or the port is held by someone else: try again later.
EXIT_BUSY = 3
#: Exit code of a run stopped by SIGINT or SIGTERM (128 + 2, the shells' Ctrl-C code).
EXIT_INTERRUPTED = 130


class TileDeltaError(Exception):
    """Base class of every error tiledelta reports to a user.

    ``hint`` is what to do about it, when the message does not already say so.
    """

    #: The process exit code for this error (see the module's table).
    exit_code: int = EXIT_ERROR
    #: A short machine-readable name, the ``kind`` of ``--json`` errors.
    kind: str = "error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            name = cls.__name__.removesuffix("Error") or cls.__name__
            # MassDelete -> mass-delete, ArcGIS -> arc-gis (an acronym stays one word)
            cls.kind = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class ConfigError(TileDeltaError):
    """The project file (tiledelta.toml) or a command option is invalid."""


class UsageError(ConfigError):
    """A command-line option or argument the command cannot take (exit code 2)."""

    exit_code = EXIT_USAGE


class SchemeError(TileDeltaError):
    """A tiling scheme is malformed, unknown, or does not fit the request."""


class StyleError(TileDeltaError):
    """The Mapnik style cannot be loaded or refers to something missing."""


class SourceError(TileDeltaError):
    """A datasource cannot be opened or read."""


class MassDeleteError(SourceError):
    """An update would delete more of a layer than ``max_delete_share`` allows."""


class CacheError(TileDeltaError):
    """A tile cache is unreadable, corrupt, or holds a different scheme."""


class Busy(TileDeltaError):
    """Something this command needs is held by someone else (exit code 3): try again later."""

    exit_code = EXIT_BUSY
    kind = "busy"


class LockedError(Busy):
    """Another tiledelta run holds the project lock."""

    kind = "locked"


class PortInUse(Busy):
    """``serve``'s address and port are taken by another program."""

    kind = "port-in-use"


class Interrupted(TileDeltaError):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM (exit code 130)."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


class RenderTimeout(TileDeltaError):
    """A meta-tile took longer to render than ``[render] metatile_timeout``."""


class RenderFailed(TileDeltaError):
    """Mapnik failed to draw a meta-tile (out of memory, an error of its own)."""


class DiskFull(TileDeltaError):
    """A write failed for want of space (ENOSPC, EDQUOT) or over a file-size limit (EFBIG)."""


class StateError(TileDeltaError):
    """``.tiledelta/state.sqlite`` (or the ``.tiledelta`` folder) is unreadable or corrupt."""


class StateBusy(Busy):
    """Another process holds ``.tiledelta/state.sqlite`` locked."""

    kind = "busy"


class RenderUnavailable(TileDeltaError):
    """Local rendering was asked for, but Mapnik (the ``render`` extra) is not installed."""


def exit_code_of(exc: BaseException) -> int:
    """The exit code for ``exc``: its class's, 130 for KeyboardInterrupt, else 1."""
    if isinstance(exc, TileDeltaError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


#: errno values that mean "no room": the disk or quota is full, or a file-size limit hit.
NO_SPACE = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if e is not None
)
#: errno values that mean "not allowed to write there".
NO_WRITE = frozenset((errno.EACCES, errno.EPERM, errno.EROFS))


def os_error(exc: OSError, path: Path | str | None = None) -> TileDeltaError:
    """One line for an OSError on ``path`` (else the error's own file name): a full disk is
    :class:`DiskFull`, a folder one may not write to or a read-only one names what to do."""
    where = path if path is not None else exc.filename
    what = exc.strerror or str(exc)
    if exc.errno in NO_SPACE:
        free = ""
        if exc.errno == errno.EFBIG:
            free = ": over the file-size limit"
        with contextlib.suppress(OSError, TypeError, ValueError):
            free += f", {shutil.disk_usage(Path(str(where)).parent).free:,} bytes free there"
        return DiskFull(
            f"{where}: no space to write ({what}{free}); free some space, or "
            "move the cache or project to a larger disk"
        )
    if exc.errno in NO_WRITE:
        return CacheError(
            f"{where}: cannot write there ({what}); make it writable, or choose another folder"
        )
    return CacheError(f"{where}: {what}")
