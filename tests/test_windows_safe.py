"""The core path runs on Windows (ArcGIS Pro's Python): no POSIX-only call outside a guard.

The core is every module of ``tiledelta`` except ``render`` (Mapnik has no Windows wheel,
so rendering is Linux and macOS only). Each module's AST is scanned for calls and names
that do not exist or behave differently on Windows. A use is allowed inside a branch that
tests the platform (``os.name``, ``sys.platform``, ``platform.system()``) or ``hasattr``,
and behind ``getattr(os, "NAME", default)``. docs/windows.md lists what was checked by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tiledelta"

#: ``os`` functions missing on Windows (or, for ``rename``, failing over an existing file).
POSIX_OS = {
    "fork": "os.fork does not exist on Windows",
    "forkpty": "os.forkpty does not exist on Windows",
    "getuid": "os.getuid does not exist on Windows",
    "geteuid": "os.geteuid does not exist on Windows",
    "getgid": "os.getgid does not exist on Windows",
    "getegid": "os.getegid does not exist on Windows",
    "setsid": "os.setsid does not exist on Windows",
    "killpg": "os.killpg does not exist on Windows",
    "getpgid": "os.getpgid does not exist on Windows",
    "mkfifo": "os.mkfifo does not exist on Windows",
    "chown": "os.chown does not exist on Windows",
    "statvfs": "os.statvfs does not exist on Windows (use shutil.disk_usage)",
    "sync": "os.sync does not exist on Windows",
    "nice": "os.nice does not exist on Windows",
    "rename": "os.rename fails over an existing file on Windows (use os.replace)",
}
#: ``signal`` names missing on Windows.
POSIX_SIGNALS = {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT"}
POSIX_SIGNAL_FUNCS = {"alarm", "pause", "setitimer", "siginterrupt"}
#: Modules that cannot be imported on Windows.
POSIX_MODULES = {"fcntl", "pwd", "grp", "resource", "termios", "tty", "pty", "posix"}
#: Flags that mean the descriptor is written (then text mode would mangle bytes on Windows).
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND"}


def core_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "render")


def _is_platform_test(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and (
            (isinstance(node.value, ast.Name) and node.value.id == "os" and node.attr == "name")
            or (
                isinstance(node.value, ast.Name)
                and node.value.id == "sys"
                and node.attr == "platform"
            )
            or (
                isinstance(node.value, ast.Name)
                and node.value.id == "platform"
                and node.attr == "system"
            )
        ):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "hasattr"
        ):
            return True
    return False


def _names(node: ast.AST) -> set[str]:
    """Attribute and bare names used in an expression (``os.O_CREAT`` gives ``O_CREAT``)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.add(n.value)  # getattr(os, "O_BINARY", 0)
    return out


def scan(source: str, name: str = "<module>") -> list[str]:
    """Unguarded POSIX-only uses in ``source``: one ``name:line: why`` per finding."""
    tree = ast.parse(source)
    found: list[str] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_platform_test(node.test):
            for child in ast.iter_child_nodes(node):
                visit(child, True)
            return
        if not guarded:
            why = check(node)
            if why:
                found.append(f"{name}:{getattr(node, 'lineno', 0)}: {why}")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    def check(node: ast.AST) -> str | None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in POSIX_MODULES:
                    return f"import {alias.name}: not available on Windows"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in POSIX_MODULES:
            return f"from {node.module} import ...: not available on Windows"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in POSIX_OS:
                return POSIX_OS[node.attr]
            if node.value.id == "signal" and node.attr in POSIX_SIGNALS:
                return f"signal.{node.attr} does not exist on Windows"
            if node.value.id == "signal" and node.attr in POSIX_SIGNAL_FUNCS:
                return f"signal.{node.attr} does not exist on Windows"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            # os.open(path, flags) for writing without O_BINARY: text mode on Windows
            if (
                isinstance(f.value, ast.Name)
                and f.value.id == "os"
                and f.attr == "open"
                and len(node.args) >= 2
            ):
                flags = _flag_names(node.args[1], tree)
                if flags & WRITE_FLAGS and "O_BINARY" not in flags:
                    return "os.open for writing without O_BINARY (Windows text mode: LF -> CR LF)"
            # fork as a multiprocessing start method
            if f.attr in ("get_context", "set_start_method") and any(
                isinstance(a, ast.Constant) and a.value in ("fork", "forkserver") for a in node.args
            ):
                return f"multiprocessing start method {node.args[0].value!r} (Windows has spawn)"  # type: ignore[attr-defined]
            # sqlite3.connect(f"file:{p.as_posix()}...", uri=True): not a valid URI on Windows
            if f.attr == "connect" and node.args and isinstance(node.args[0], ast.JoinedStr):
                head = node.args[0].values[0] if node.args[0].values else None
                if isinstance(head, ast.Constant) and str(head.value).startswith("file:"):
                    return "SQLite URI built by hand (use Path.as_uri(): drive letters, '#', '?')"
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (node.value == "/tmp" or node.value.startswith("/tmp/"))
        ):
            return "a hard-coded /tmp path (use tempfile)"
        return None

    visit(tree, False)
    return found


def _flag_names(expr: ast.expr, tree: ast.Module) -> set[str]:
    """The flag names an ``os.open`` flags argument uses, following one local assignment."""
    names = _names(expr)
    if isinstance(expr, ast.Name):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == expr.id for t in targets):
                    names |= _names(node.value)
    return names


def test_the_core_has_no_unguarded_posix_only_call() -> None:
    modules = core_modules()
    assert len(modules) > 40  # the scan really covers the package
    found = []
    for path in modules:
        found += scan(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.fork()\n",
        "import fcntl\n",
        "from fcntl import flock\n",
        "import os\nos.rename('a', 'b')\n",
        "import os, signal\nos.kill(1, signal.SIGKILL)\n",
        "import signal\nsignal.alarm(3)\n",
        "import os\nos.getuid()\n",
        "import os\nfd = os.open(p, os.O_WRONLY | os.O_CREAT)\n",
        "import os\nflags = os.O_WRONLY | os.O_CREAT\nfd = os.open(p, flags, 0o644)\n",
        "import multiprocessing\nmultiprocessing.get_context('fork')\n",
        "import sqlite3\nsqlite3.connect(f'file:{p.as_posix()}?mode=ro', uri=True)\n",
        "path = '/tmp/tiledelta'\n",
    ],
)
def test_the_scan_finds_posix_only_calls(source: str) -> None:
    assert scan(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import os\nif os.name == 'nt':\n    import msvcrt\nelse:\n    import fcntl\n",
        "import sys, os\nif sys.platform != 'win32':\n    os.fork()\n",
        "import os\nos.replace('a', 'b')\n",
        "import os\nfd = os.open(p, os.O_WRONLY | os.O_CREAT | getattr(os, 'O_BINARY', 0))\n",
        "import os\nfd = os.open(p, os.O_RDONLY)\n",
        "import signal\nsignal.signal(signal.SIGTERM, h)\n",
        "import sqlite3\nsqlite3.connect(p.absolute().as_uri() + '?mode=ro', uri=True)\n",
        "import os, signal\nif hasattr(signal, 'SIGHUP'):\n    signal.signal(signal.SIGHUP, h)\n",
    ],
)
def test_guarded_or_portable_code_passes(source: str) -> None:
    assert scan(source) == []
