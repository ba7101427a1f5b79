"""Fault 5 of issue 12: what used to end in a traceback ends in one line naming the file
and what to do, a non-zero exit, and nothing half-written.

A full disk is simulated with a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored) in the
``tiledelta`` subprocess: writes past it fail with EFBIG as a full disk fails them with
ENOSPC (SQLite reports both as I/O errors). Read-only folders use ``chmod`` (skipped when
the tests run as root, whom permissions do not stop).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_faults import assert_one_line_error, runs_recorded, tree_digest
from test_update import assert_cache_equals_fresh_seed, read_cache

from tiledelta import api, sample

TILEDELTA = [sys.executable, "-m", "tiledelta.cli"]
POSIX = os.name == "posix"
ROOT = POSIX and os.geteuid() == 0


def limited(*args: str, fsize: int) -> subprocess.CompletedProcess:
    """``tiledelta ARGS`` with no file allowed to grow past ``fsize`` bytes."""
    import resource

    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [*TILEDELTA, *args], capture_output=True, text=True, timeout=300, preexec_fn=pre
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TILEDELTA, *args], capture_output=True, text=True, timeout=300)


def _project(sample_project: Path, kind: str) -> Path:
    project = api.load_project(sample_project)
    project = project.updated(cache={"kind": kind}, levels="13-16")
    project.save()
    return sample_project


@pytest.mark.skipif(not POSIX, reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("kind", ["compact", "mbtiles"])
def test_full_disk_in_seed_is_one_line_and_keeps_the_old_cache(
    sample_project: Path, kind: str
) -> None:
    d = _project(sample_project, kind)
    api.seed(api.load_project(d))
    before, runs = read_cache(d), runs_recorded(d)
    out = limited("seed", "--project", str(d), "--restart", fsize=200_000)
    line = assert_one_line_error(out, "needed about", " MB")
    assert str(d / "cache") in line, line
    assert read_cache(d) == before  # the cache that serves is untouched, tile for tile
    assert runs_recorded(d) >= runs


@pytest.mark.skipif(not POSIX, reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("kind", ["compact", "mbtiles"])
def test_full_disk_in_update_is_one_line_and_the_next_run_finishes(
    sample_project: Path, kind: str
) -> None:
    d = _project(sample_project, kind)
    api.seed(api.load_project(d))
    sample.apply_edits(d)
    out = limited("update", "--project", str(d), fsize=200_000)
    assert_one_line_error(out, "needed about", "free some space")
    out = cli("update", "--project", str(d))  # space again: the journal finishes the job
    assert out.returncode == 0, out.stderr
    assert_cache_equals_fresh_seed(d)


@pytest.mark.skipif(not POSIX, reason="RLIMIT_FSIZE is POSIX")
def test_full_disk_while_writing_state_is_one_line(sample_project: Path) -> None:
    api.seed(api.load_project(sample_project))
    sample.apply_edits(sample_project)
    out = limited("update", "--project", str(sample_project), fsize=5_000)
    assert_one_line_error(out, ".tiledelta")


# --- state.sqlite -------------------------------------------------------------------------------


@pytest.fixture
def seeded(sample_project: Path) -> Path:
    api.seed(api.load_project(sample_project))
    return sample_project


def _state(d: Path) -> Path:
    return d / ".tiledelta" / "state.sqlite"


def _drop_sidecars(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def test_corrupt_state_sqlite_is_one_line(seeded: Path) -> None:
    db = _state(seeded)
    _drop_sidecars(db)
    data = bytearray(db.read_bytes())
    data[100:4096] = os.urandom(3996)  # page 1's schema
    db.write_bytes(bytes(data))
    cache = tree_digest(seeded / "cache")
    for cmd in ("update", "status"):
        out = cli(cmd, "--project", str(seeded))
        assert_one_line_error(out, "state.sqlite", "tiledelta seed")
    assert tree_digest(seeded / "cache") == cache


def test_truncated_state_sqlite_is_one_line(seeded: Path) -> None:
    db = _state(seeded)
    with sqlite3.connect(db) as con:  # fold the WAL in, so the file holds everything
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _drop_sidecars(db)
    os.truncate(db, db.stat().st_size // 3)
    out = cli("update", "--project", str(seeded))
    assert_one_line_error(out, "state.sqlite")


def test_not_a_database_state_sqlite_is_one_line(seeded: Path) -> None:
    db = _state(seeded)
    _drop_sidecars(db)
    db.write_bytes(b"this is not SQLite" * 100)
    out = cli("update", "--project", str(seeded))
    assert_one_line_error(out, "state.sqlite", "damaged")


def test_write_locked_state_sqlite_is_one_line_and_quick(seeded: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "con.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(_state(seeded)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        sample.apply_edits(seeded)
        cache = tree_digest(seeded / "cache")
        t0 = time.monotonic()
        out = cli("update", "--project", str(seeded))
        took = time.monotonic() - t0
        assert_one_line_error(out, "state.sqlite", "another process holds it")
        assert took < 20, took  # was 30 s of SQLite's busy wait, then a traceback
        assert tree_digest(seeded / "cache") == cache
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


def test_state_folder_that_is_a_file_is_one_line(sample_project: Path) -> None:
    state = sample_project / ".tiledelta"
    shutil.rmtree(state, ignore_errors=True)
    state.write_text("not a folder", encoding="utf-8")
    for cmd in ("seed", "update", "status"):
        out = cli(cmd, "--project", str(sample_project))
        assert_one_line_error(out, ".tiledelta", "not a folder")
    assert not (sample_project / "cache").exists()


# --- read-only folders --------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the folder ``path`` read-only: a read-only bind mount of itself as root (whom
    permissions do not stop: a real EROFS), ``chmod`` otherwise; skip when neither works."""
    if ROOT:
        ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
        if ok.returncode != 0:
            pytest.skip(f"cannot bind-mount as root here: {ok.stderr.decode().strip()}")
        try:
            subprocess.run(
                ["mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True
            )
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    if not POSIX:
        pytest.skip("read-only folders are made with POSIX permissions here")
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
        yield
    finally:
        path.chmod(mode)


def test_read_only_cache_folder_is_one_line(seeded: Path) -> None:
    sample.apply_edits(seeded)
    cache = seeded / "cache"
    with read_only(cache):
        out = cli("update", "--project", str(seeded))
        assert_one_line_error(out, str(cache), "cannot write there")


def test_read_only_project_folder_is_one_line(sample_project: Path) -> None:
    shutil.rmtree(sample_project / ".tiledelta", ignore_errors=True)
    with read_only(sample_project):
        for cmd in ("seed", "update"):
            out = cli(cmd, "--project", str(sample_project))
            assert_one_line_error(out, str(sample_project))
    assert not (sample_project / "cache").exists()


def test_plan_aoi_and_package_out_into_a_read_only_folder(seeded: Path, tmp_path: Path) -> None:
    sample.apply_edits(seeded)
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    with read_only(out_dir):
        out = cli("plan", "--project", str(seeded), "--aoi", str(out_dir / "dirty.geojson"))
        assert_one_line_error(out, str(out_dir))
        out = cli("package", "--project", str(seeded), "--out", str(out_dir / "p.tpkx"))
        assert_one_line_error(out, str(out_dir))
    assert list(out_dir.iterdir()) == []
