"""``python -m support.emulator``: serve the emulator until Ctrl-C or SIGTERM (run it from
the ``tests/`` folder, or with ``tests/`` on ``PYTHONPATH``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .server import Emulator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m support.emulator",
        description="Serve an ArcGIS Server emulator (tiledelta's stand-in for tests).",
    )
    ap.add_argument("--root", required=True, type=Path, help="folder holding the emulator state")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6080)
    ap.add_argument("--site", default="arcgis")
    ap.add_argument("--user", required=True, help="the one user that may sign in")
    ap.add_argument("--password", help="its password (default: $ARCGIS_PASSWORD)")
    ap.add_argument("--token-minutes", type=int, default=60)
    ap.add_argument(
        "--portal",
        action="store_true",
        help="also serve a minimal emulated Portal (federated tokens, items)",
    )
    ap.add_argument("--portal-site", default="portal")
    ap.add_argument(
        "--add-item",
        action="append",
        default=[],
        metavar="TYPE:TITLE",
        help="with --portal: create an item owned by --user and print its id (repeatable)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    password = args.password or os.environ.get("ARCGIS_PASSWORD")
    if not password:
        print("error: give --password or set ARCGIS_PASSWORD", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    emu = Emulator(
        args.root,
        username=args.user,
        password=password,
        host=args.host,
        port=args.port,
        site=args.site,
        token_minutes=args.token_minutes,
        portal=args.portal,
        portal_site=args.portal_site,
    )
    if args.add_item and not args.portal:
        print("error: --add-item needs --portal", file=sys.stderr)
        return 1
    try:
        emu.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(emu.url, flush=True)
    if args.portal:
        print(emu.portal_url, flush=True)
        for spec in args.add_item:
            kind, _, title = spec.partition(":")
            item_id = emu.portal_add_item(args.user, kind, title or kind)
            print(f"item {item_id} ({kind}: {title or kind})", flush=True)
    stop = threading.Event()
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0
