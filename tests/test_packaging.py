"""The wheel ``pip install tiledelta`` gets: every package and module of ``src/``, the
viewer's static files and ``py.typed``, and none of the test support (the ArcGIS Server
emulator lives in ``tests/support/``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What setuptools reads to build the wheel (the rest of the checkout plays no part).
BUILD_INPUTS = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in")


def _pip_wheel(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *extra, "-w", str(out)]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    """(the copied source tree, the wheel's member names), built once for this module.

    The build runs on a copy of the project, so the checkout gets no ``build/`` and no
    rewritten ``*.egg-info``, and stale ones there cannot leak files into the wheel.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    source, out = tmp / "source", tmp / "dist"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"),
    )
    proc = _pip_wheel(source, out, "--no-build-isolation")
    if proc.returncode != 0:  # the venv's setuptools is missing or too old: build isolated
        shutil.rmtree(out, ignore_errors=True)
        proc = _pip_wheel(source, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = sorted(out.glob("tiledelta-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        return source, zf.namelist()


def test_the_wheel_carries_no_emulator(built):
    _source, names = built
    assert [n for n in names if "emulator" in n.lower()] == []
    # nor the stand-in arcpy (tests/support/arcpy): an installed "arcpy" would shadow Pro's
    assert [n for n in names if n.split("/")[0] in ("arcpy", "support", "tests")] == []


def test_the_wheel_carries_the_viewer_and_py_typed(built):
    _source, names = built
    for name in (
        "tiledelta/serve/static/index.html",
        "tiledelta/serve/static/viewer.js",
        "tiledelta/serve/static/viewer.css",
        "tiledelta/py.typed",
    ):
        assert name in names


def test_the_wheel_carries_every_package_and_module(built):
    source, names = built
    src = source / "src"
    packages = sorted(p.relative_to(src).as_posix() for p in src.glob("tiledelta/**/__init__.py"))
    assert "tiledelta/__init__.py" in packages and len(packages) > 10
    assert [p for p in packages if p not in names] == []
    modules = sorted(p.relative_to(src).as_posix() for p in (src / "tiledelta").rglob("*.py"))
    assert [m for m in modules if m not in names] == []
