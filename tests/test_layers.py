"""The package's layers, kept by import-linter (contracts in pyproject.toml).

The real tree keeps every contract; a copy with one upward import, or one cycle between
sibling modules, breaks them. So a commit that adds either makes CI red.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its pyproject.toml, to break on purpose."""
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")


def test_the_tree_keeps_every_contract() -> None:
    out = lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_layers(tree: Path) -> None:
    _append(tree / "src/tiledelta/grid/tiles.py", "from tiledelta.api import load_project  # noqa")
    out = lint(tree)
    assert out.returncode != 0
    assert "tiledelta.grid.tiles -> tiledelta.api" in out.stdout


def test_a_cycle_between_siblings_is_refused(tree: Path) -> None:
    # sources.gdal is imported by sources.types' package; make types import it back.
    _append(tree / "src/tiledelta/sources/types.py", "from tiledelta.sources import gdal  # noqa")
    out = lint(tree)
    assert out.returncode != 0
    assert "No import cycle between the modules of any package BROKEN" in out.stdout
    assert "- .types -> .gdal" in out.stdout


def test_mapnik_outside_rendering_is_refused(tree: Path) -> None:
    _append(tree / "src/tiledelta/plan/plan.py", "import mapnik  # noqa")
    out = lint(tree)
    assert out.returncode != 0
    assert "Only rendering imports Mapnik BROKEN" in out.stdout
