"""Shared fixtures: a generated sample county project (real GeoPackage, real style)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from hypothesis import settings

from tiledelta import sample
from tiledelta.api import init_project

SHARED = Path(__file__).resolve().parents[2] / "shared"

#: ``.ci/run``'s second venv has no Mapnik (the core install) and runs ``pytest -m core``.
CORE_VENV = os.environ.get("TILEDELTA_CORE_VENV") == "1"
#: Test files whose tests all run without Mapnik (marked ``core`` here, not in each file).
CORE_FILES = frozenset(
    {
        "test_core_without_mapnik.py",
        "test_supertiles.py",
        "test_windows_safe.py",
        "test_signin.py",
        "test_jobs.py",
        "test_uploads.py",
        "test_pro_maps.py",
        "test_plan_cli.py",
        "test_plan_fast.py",
        "test_snapshot_reads.py",
        "test_snapshot_record.py",
    }
)
NO_MAPNIK_REASON = "needs Mapnik; this is the no-Mapnik CI venv (TILEDELTA_CORE_VENV=1)"


def _mapnik_importable() -> bool:
    try:
        return importlib.util.find_spec("mapnik") is not None
    except (ImportError, ValueError):
        return False


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "needs_mapnik: a core test that renders; skipped only in the no-Mapnik CI venv"
    )
    # Strict both ways: a main venv without Mapnik fails (never a silent skip), and the
    # core venv must really lack it.
    if not CORE_VENV and not _mapnik_importable():
        raise pytest.UsageError(
            "Mapnik is not installed: install the test extra (pip install -e '.[test]' pulls "
            "tiledelta[render]); only the no-Mapnik CI venv (TILEDELTA_CORE_VENV=1) runs without"
        )
    if CORE_VENV and _mapnik_importable():
        raise pytest.UsageError("TILEDELTA_CORE_VENV=1 but Mapnik is installed in this venv")


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """In the core venv only the core files are collected (the others import Mapnik)."""
    name = collection_path.name
    if CORE_VENV and name.startswith("test_") and name.endswith(".py"):
        return name not in CORE_FILES
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m core`` selects on the markers added here
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.name in CORE_FILES:
            item.add_marker(pytest.mark.core)
        if CORE_VENV and item.get_closest_marker("needs_mapnik") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_MAPNIK_REASON))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (the shared data sits beside the checkout on dev machines)")
    return p


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample-template")
    sample.generate(root)
    return root


@pytest.fixture
def sample_project(sample_template, tmp_path) -> Path:
    """A fresh copy of the sample county with a project at levels 13-17, one process."""
    root = tmp_path / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="13-17", force=True)
    toml = root / "tiledelta.toml"
    toml.write_text(toml.read_text() + "\n", encoding="utf-8")
    set_processes(root, 1)
    return root


def set_processes(root: Path, n: int) -> None:
    from tiledelta.project import Project

    p = Project.load(root)
    p = p.updated(render={"processes": n})
    p.save()


# CI runs the same hypothesis examples every time (a red build must be reproducible);
# developers get fresh random examples on each run.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True, print_blob=True)
    settings.load_profile("ci")


class LiveServer:
    """uvicorn serving ``app`` in a thread on 127.0.0.1, on a free port."""

    def __init__(self, app) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.netloc = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.netloc}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def raw(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.endheaders()
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


GDAL_READ = """
import json, sys, rasterio
with rasterio.open(sys.argv[1]) as ds:
    print(json.dumps({"driver": ds.driver, "crs": str(ds.crs), "count": ds.count,
                      "width": ds.width}))
"""


def gdal_open(path: Path) -> dict:
    """Open ``path`` with GDAL in a clean interpreter, without Mapnik's PROJ/GDAL data paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA", "ICU_DATA")}
    out = subprocess.run(
        [sys.executable, "-c", GDAL_READ, str(path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def arcpy(monkeypatch):
    """The stand-in arcpy (``tests/support/arcpy``), imported fresh and reset; removed
    from ``sys.modules`` again afterwards."""

    def forget() -> None:
        for name in [m for m in sys.modules if m == "arcpy" or m.startswith("arcpy.")]:
            del sys.modules[name]

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "support"))
    forget()
    import arcpy as standin_arcpy
    import arcpy.standin

    arcpy.standin.reset()
    arcpy.standin.configure(echo=False)
    yield standin_arcpy
    forget()
