"""Fault 2 of issue 12: an MBTiles file re-seeded while ``tiledelta serve`` reads it.

Observed: seed, serve and read tiles, update, seed again: ``PRAGMA integrity_check`` failed
("database disk image is malformed") and serve answered wrong tiles, because the old
file's ``-wal``/``-shm`` stayed beside the file swapped in. Here a real ``tiledelta serve``
(uvicorn, a subprocess) is read over HTTP (httpx) all through an update and two re-seeds;
the file must pass SQLite's own integrity check and equal a fresh seed, and serve must
answer the new tiles.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import set_processes
from test_update import assert_cache_equals_fresh_seed, read_cache

from tiledelta import api, sample


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _integrity(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


class Reader(threading.Thread):
    """Reads XYZ tiles from the server in a loop until stopped; counts answers."""

    def __init__(self, base: str, addrs: list[tuple[int, int, int]]) -> None:
        super().__init__(daemon=True)
        self.base, self.addrs = base, addrs
        self.stop = threading.Event()
        self.status: dict[int, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                z, row, col = self.addrs[i % len(self.addrs)]
                i += 1
                try:
                    r = client.get(f"{self.base}/tiles/{z}/{col}/{row}.png")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.status[r.status_code] = self.status.get(r.status_code, 0) + 1


def test_reseed_while_serving_keeps_the_mbtiles_file_sound(sample_project: Path) -> None:
    d = sample_project
    toml = d / "tiledelta.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace('kind = "compact"', 'kind = "mbtiles"'),
        encoding="utf-8",
    )
    project = api.load_project(d)
    assert project.config.cache.kind == "mbtiles"
    project = project.updated(levels="13-16")
    project.save()
    set_processes(d, 1)
    api.seed(api.load_project(d))
    cache = api.load_project(d).cache_path
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tiledelta.cli", "serve", "--project", str(d), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/service.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        reader = Reader(base, sorted(read_cache(d)))
        reader.start()
        try:
            for _round in range(2):
                sample.apply_edits(d)
                api.update(api.load_project(d))
                api.seed(api.load_project(d))
                assert _integrity(cache) == "ok"
        finally:
            reader.stop.set()
            reader.join(timeout=30)
        assert not reader.errors, reader.errors[:3]
        assert reader.status.get(200, 0) > 20, reader.status
        assert set(reader.status) <= {200, 404}, reader.status
        # serve answers what the file now holds, tile for tile
        want = read_cache(d)
        with httpx.Client(timeout=10) as client:
            for (z, row, col), data in want.items():
                r = client.get(f"{base}/tiles/{z}/{col}/{row}.png")
                assert r.status_code == 200 and r.content == data, (z, row, col)
    finally:
        server.terminate()
        server.wait(timeout=30)
    wal = Path(str(cache) + "-wal")
    assert _integrity(cache) == "ok"
    # What a reader finds beside the file is the file's own (an empty WAL at most).
    assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
    assert_cache_equals_fresh_seed(d)
