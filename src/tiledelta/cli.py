"""The ``tiledelta`` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

import click

from tiledelta import api, startup_stages
from tiledelta.api import (
    describe_changes,
    init_project,
    load_project,
    plan_summary,
    project_info,
    run_demo,
)
from tiledelta.change import detect_changes
from tiledelta.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    TileDeltaError,
    UsageError,
    os_error,
)
from tiledelta.project import Project

# A command imports what only it needs (rich's bar, the server, watch, doctor, the report
# and its Pillow change map, a browser) in its own body: every command pays its imports
# before anything else (stage "imports").

project_option = click.option(
    "--project",
    "-p",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project folder (holds tiledelta.toml).",
)
_JSON_KEY = "tiledelta.json"
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=lambda ctx, _p, v: bool(v or ctx.meta.get(_JSON_KEY)),
    help="Print one JSON object (errors too: error, kind, hint).",
)
cache_option = click.option(
    "--cache",
    "cache_kind",
    type=click.Choice(["compact", "mbtiles", "xyz"]),
    default="compact",
    show_default=True,
    help="Cache format.",
)


engine_options = [
    click.option(
        "--engine",
        type=click.Choice(["local", "dask"]),
        default=None,
        help="Render engine (default: [render] engine): the local process pool, or Dask.",
    ),
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Dask scheduler, tcp://host:8786 (implies --engine dask; docs/dask.md).",
    ),
]


def _with(options: list):
    """A decorator adding a shared list of click options, in list order."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _echo_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@contextmanager
def progress_bar(label: str, enabled: bool):
    """Yield a ``callback(done, total)``; draws a rich bar on a terminal only."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task):  # tiles per second
            speed = task.finished_speed or task.speed
            return f"{speed:,.0f} tiles/s" if speed else ""

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as prog:
        task = prog.add_task(label, total=None)

        def cb(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield cb


class Main(click.Group):
    """The conventions of every command: one line per error (one JSON object with
    ``--json``), the exit codes of :mod:`tiledelta.errors`, and ``-v`` anywhere."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every command also takes ``-v``/``-vv`` after its name."""
        cmd.params.append(_verbose_option())
        super().add_command(cmd, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
        previous = _stop_on_sigterm()
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else EXIT_OK
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "tiledelta"
            hint = f"see '{path} --help'"
            code = _fail(path, exc.format_message(), "usage", hint, EXIT_USAGE, as_json)
        except click.ClickException as exc:
            code = _fail("tiledelta", exc.format_message(), "error", None, exc.exit_code, as_json)
        except (click.Abort, KeyboardInterrupt):
            code = _fail("tiledelta", "interrupted", "interrupted", None, EXIT_INTERRUPTED, as_json)
        except TileDeltaError as exc:
            code = _fail("tiledelta", str(exc), exc.kind, exc.hint, exc.exit_code, as_json)
        except OSError as exc:  # a file the command writes (--out, --aoi): one line naming it
            err = os_error(exc)
            code = _fail("tiledelta", str(err), err.kind, err.hint, err.exit_code, as_json)
        except Exception as exc:
            if not as_json:
                raise
            code = _fail("tiledelta", f"{type(exc).__name__}: {exc}", "internal", None, 1, True)
        finally:
            _restore_sigterm(previous)
        if not standalone_mode:
            return code
        sys.exit(code)


def _fail(prog: str, message: str, kind: str, hint: str | None, code: int, as_json: bool) -> int:
    """Report an error: one line on stderr, or one JSON object on stdout; return ``code``.
    Credentials in the message (``password=...``, an SMTP AUTH line) are masked."""
    message = _SECRET_RE.sub(lambda m: m.group(1) + "***", one_line(message))
    if as_json:
        obj = {"error": message, "kind": kind, "hint": hint, "exit_code": code}
        click.echo(json.dumps(obj))
    else:
        click.echo(f"{prog}: error: {message}" + (f" ({hint})" if hint else ""), err=True)
    return code


def one_line(text: str) -> str:
    """``text`` on one line: its line breaks (and the spaces around them) become one space."""
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _stop_on_sigterm() -> object:
    """Make SIGTERM stop the command as Ctrl-C does (exit code 130, nothing half-written);
    return the previous handler.

    Forked processes (render workers) get the default back at once: a Python handler runs
    only in a main thread that gets back to the interpreter, and ``Pool.terminate()``
    stops its workers with SIGTERM while they wait on a semaphore."""
    main_pid = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:  # a fork made before the hook below existed
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave it
        return None
    global _FORK_HOOK
    if not _FORK_HOOK and hasattr(os, "register_at_fork"):  # POSIX; Windows spawns
        os.register_at_fork(after_in_child=_default_sigterm_in_child)
        _FORK_HOOK = True
    return previous


_FORK_HOOK = False


def _default_sigterm_in_child() -> None:
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        with suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _restore_sigterm(previous: object) -> None:
    if previous is not None:
        with suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]


_VERBOSE_KEY = "tiledelta.verbose"


def _count_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    if ctx.resilient_parsing:
        return value
    total = ctx.meta.get(_VERBOSE_KEY, 0) + (value or 0)
    ctx.meta[_VERBOSE_KEY] = total
    configure_logging(total)
    return total


def _verbose_option() -> click.Option:
    return click.Option(
        ["-v", "--verbose"],
        count=True,
        expose_value=False,
        callback=_count_verbose,
        help="Log more: -v what happens, -vv debug detail.",
    )


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is now (click's test runner swaps it)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


#: Credentials as some protocols echo them (SMTP ``AUTH PLAIN <base64>``, HTTP headers).
_SECRET_RE = re.compile(
    r"(?i)(\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2|CRAM-MD5)\s+|(?:^|reply: b?')334[ -]"
    r"|authorization:\s*\w+\s+|\btoken=|\bpassword=)[^\s&'\"]+"
)


class _Redact(logging.Filter):
    """Masks credentials in log lines, whoever logged them (-vv shows third-party logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = _SECRET_RE.sub(lambda m: m.group(1) + "***", text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


#: Third-party loggers that print request URLs (webhook tokens, ArcGIS tokens): kept quiet.
_QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "uvicorn.access", "asyncio", "PIL")


def configure_logging(verbose: int) -> None:
    """0: warnings; 1 (``-v``): tiledelta's info; 2 (``-vv``): tiledelta's debug and other
    libraries' info. Never a credential: see :class:`_Redact`."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_Redact())
        root.addHandler(handler)
    ours = logging.getLogger("tiledelta")
    ours.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)])
    root.setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # PROJ inside Mapnik prints its errors to stderr ("proj_create: crs not found") before
    # ours names the file; read when Mapnik loads, so set before any command runs.
    if not _PROJ_DEBUG_GIVEN:
        os.environ["PROJ_DEBUG"] = "1" if verbose >= 2 else "0"
    warnings.showwarning = _warning_line


#: The user's own PROJ_DEBUG is left alone.
_PROJ_DEBUG_GIVEN = "PROJ_DEBUG" in os.environ


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Python warnings (GDAL's, through pyogrio; numpy's) as one log line, not two."""
    logging.getLogger("tiledelta.warnings").warning("%s: %s", category.__name__, message)


@click.group(cls=Main)
@click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    callback=_count_verbose,
    help="Log more: -v what happens, -vv debug detail (before or after the command).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    expose_value=False,
    callback=lambda ctx, _p, v: ctx.meta.__setitem__(_JSON_KEY, v) or v,
    help="Every command that can prints one JSON object (errors too).",
)
@click.version_option(package_name="tiledelta")
def main() -> None:
    """Keep raster tile caches fresh: re-render only the tiles that changed data touches.

    Exit codes: 0 ok, 1 error, 2 usage, 3 busy (project locked, port in use),
    130 interrupted (Ctrl-C, SIGTERM).
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--style",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Mapnik XML style (the map document).",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Datasource for a default style (PATH or PATH:LAYER); repeatable.",
)
@click.option("--levels", default="0-19", show_default=True, help="Level range, e.g. 9-19.")
@click.option(
    "--scheme",
    default="web-mercator",
    show_default=True,
    help="web-mercator, or a conf.xml / root.json / MapServer JSON file.",
)
@cache_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "png8", "jpeg", "mixed"]),
    default="png",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing tiledelta.toml.")
@click.option(
    "--map",
    "map_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ArcGIS Pro map as the project's input: .aprx, .mapx or .lyrx (docs/pro-maps.md).",
)
@click.option("--map-name", help="Which map of the .aprx (needed when it has several).")
@click.option(
    "--layer-source",
    "layer_sources",
    multiple=True,
    metavar="NAME=PATH",
    help="Read a map layer from a copy (e.g. Taxlots=exports/county.gdb/taxlots); repeatable.",
)
def init(
    directory: Path,
    style: Path | None,
    sources: tuple[str, ...],
    levels: str,
    scheme: str,
    cache_kind: str,
    fmt: str,
    force: bool,
    map_path: Path | None,
    map_name: str | None,
    layer_sources: tuple[str, ...],
) -> None:
    """Create a project: DIRECTORY/tiledelta.toml."""
    mapped = {}
    for spec in layer_sources:
        name, sep, src = spec.partition("=")
        if not sep or not name.strip() or not src.strip():
            raise UsageError(f"--layer-source {spec!r}: give NAME=PATH")
        mapped[name.strip()] = src.strip()
    path = init_project(
        directory,
        style=style,
        sources=list(sources),
        levels=levels,
        scheme=scheme,
        cache_kind=cache_kind,
        fmt=fmt,
        force=force,
        map_path=map_path,
        map_name=map_name,
        layer_sources=mapped,
    )
    click.echo(f"wrote {path}")
    if map_path is not None:
        for line in api.map_layer_lines(load_project(directory)):
            click.echo(line)


_scope_options = [
    click.option(
        "--levels",
        "scope_levels",
        metavar="A-B",
        default=None,
        help="Only these levels (a subset of the configured ones, e.g. 12-14 or 3,5).",
    ),
    click.option(
        "--processes",
        type=click.IntRange(min=0),
        default=None,
        help="Render processes (default: [render] processes; 0 = all cores).",
    ),
    click.option(
        "--extent",
        metavar="XMIN,YMIN,XMAX,YMAX",
        default=None,
        help="Only the meta-tiles over this box, in the scheme's CRS (or --extent-crs).",
    ),
    click.option(
        "--extent-crs",
        metavar="CRS",
        default=None,
        help="The CRS of --extent, e.g. EPSG:4326 (default: the scheme's).",
    ),
    click.option(
        "--aoi",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Only the meta-tiles over the polygons of this GeoJSON or Esri JSON FeatureSet.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Print the plan per level and an estimate of tiles, bytes and time; write nothing.",
    ),
]


def _print_dry_run(result: dict, as_json: bool) -> None:
    """The plan of ``--dry-run``, one line per level with work, then the estimate."""
    if as_json:
        _echo_json(result)
        return
    if result.get("rebuild"):
        click.echo(f"full rebuild needed: {result['rebuild']}")
    if result.get("resume"):
        r = result["resume"]
        click.echo(
            f"resumes an unfinished seed: {r['metatiles_done']:,} meta-tiles "
            f"({r['bundles_done']} bundles) are built"
        )
    if result.get("discard"):
        click.echo(f"discards the unfinished seed ({result['discard']})")
    click.echo("level  meta-tiles  tiles to render")
    for lv, d in result["levels"].items():
        if d["metatiles"]:
            click.echo(f"{lv:>5}  {d['metatiles']:>10,}  {d['tiles']:>15,}")
    secs, size = result.get("estimated_seconds"), result.get("estimated_bytes")
    est = [
        f"about {secs:,.1f} s" if secs is not None else "",
        f"up to {size:,} bytes" if size else "",
    ]
    click.echo(
        f"total {result['tiles']:,} tiles in {result['metatiles']:,} meta-tiles"
        + "".join(f", {e}" for e in est if e)
        + f" ({result['estimate_basis']}); dry run: nothing written"
    )


@main.command()
@project_option
@json_option
@_with(engine_options + _scope_options)
@click.option(
    "--restart",
    is_flag=True,
    help="Start over: discard an interrupted seed instead of resuming it.",
)
@click.option(
    "--continue",
    "resume",
    is_flag=True,
    help="Resume an interrupted seed (the default; accepted as in mapproxy-seed).",
)
def seed(
    project_dir: Path,
    as_json: bool,
    engine: str | None,
    scheduler: str | None,
    scope_levels: str | None,
    processes: int | None,
    extent: str | None,
    extent_crs: str | None,
    aoi: Path | None,
    dry_run: bool,
    restart: bool,
    resume: bool,
) -> None:
    """Build every tile of the configured levels (resuming an interrupted seed)."""
    if resume and restart:
        raise UsageError("give --continue or --restart, not both")
    t_load = time.perf_counter()
    project = api.with_engine(load_project(project_dir), engine, scheduler)
    project = api.with_processes(project, processes)
    stages = _stages_before(t_load)
    scope = api.run_scope(
        project, levels=scope_levels, extent=extent, extent_crs=extent_crs, aoi=aoi
    )
    if dry_run:
        _print_dry_run(api.seed_dry_run(project, scope=scope, restart=restart), as_json)
        return
    with progress_bar("seeding", not as_json) as cb:  # remarks go to stderr, --json or not
        result = api.seed(
            project,
            progress=cb,
            say=lambda m: click.echo(m, err=True),
            scope=scope,
            restart=restart,
            stages=stages,
        )
    if as_json:
        _echo_json(result)
    else:
        _print_run(result, "seeded")


def _stages_before(t_load: float) -> dict[str, float]:
    """The stage times of this process before its run: ``startup`` (Python's start to
    tiledelta's first line, where the platform says), ``imports`` (up to ``t_load``) and
    ``load`` (the project and its style, from ``t_load`` to now)."""
    load = time.perf_counter() - t_load
    return {**startup_stages(until=t_load), "load": load}


def _print_run(result: dict, verb: str) -> None:
    from tiledelta.runs.report import counts_line

    click.echo(
        f"{verb}: {counts_line(result)}; in {result['seconds']:.1f} s into {result['cache']}"
    )


@main.command("map-info")
@click.argument("map_path", metavar="MAP", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--map-name", help="Which map of the .aprx (needed when it has several).")
@json_option
def map_info(map_path: Path, map_name: str | None, as_json: bool) -> None:
    """List what tiledelta reads from an ArcGIS Pro map (.aprx, .mapx, .lyrx): layers,
    data, scale ranges, definition queries, fields, labels; the data is not opened."""
    result = api.map_info(map_path, map_name)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"map {result['map']!r} of {result['path']} ({result['generation']})")
    for line in result["lines"]:
        click.echo(line)


@main.command()
@project_option
@json_option
def info(project_dir: Path, as_json: bool) -> None:
    """Show the project: scheme, levels, layers, cache and tiles per level."""
    result = project_info(load_project(project_dir))
    if as_json:
        _echo_json(result)
        return
    click.echo(f"project  {result['project']}")
    click.echo(f"style    {result['style']}")
    s = result["scheme"]
    click.echo(f"scheme   {s['name']} ({s['crs']}), levels {result['levels_configured']}")
    click.echo(f"cache    {result['cache_kind']} at {result['cache']}")
    for name, lyr in result["layers"].items():
        click.echo(
            f"layer    {name}: {lyr['kind']} {lyr['path']}"
            + (f" [{lyr['layer']}]" if lyr.get("layer") else "")
        )
    click.echo("level  stored tiles")
    for lv, d in result["levels"].items():
        click.echo(f"{lv:>5}  {d['tiles']:>12,}")


_full_compare_option = click.option(
    "--full-compare",
    is_flag=True,
    help="Read, fingerprint and diff every layer, also those whose files are proven "
    "unchanged since the last build ([update] trust_unchanged_files).",
)


@main.command()
@project_option
@json_option
@_full_compare_option
def status(project_dir: Path, as_json: bool, full_compare: bool) -> None:
    """What changed since the last build, per layer."""
    changes = detect_changes(load_project(project_dir), full_compare=full_compare).as_dict()
    if as_json:
        _echo_json(changes)
        return
    _print_changes(changes)


def _print_changes(changes: dict) -> None:

    for line in describe_changes(changes):
        click.echo(line)


@main.command()
@project_option
@json_option
@click.option(
    "--aoi",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the dirty area: FILE (GeoJSON) and FILE.esri.json "
    "(Esri FeatureSet in the scheme's spatial reference).",
)
@click.option(
    "--target",
    type=click.Choice(["local", "arcgis"]),
    default="local",
    show_default=True,
    help="local: tiles the local update would render; arcgis: the supertiles and tiles "
    "ArcGIS Server would redraw (reads the service's JSON, sends no job).",
)
def plan(project_dir: Path, as_json: bool, aoi: Path | None, target: str) -> None:
    """Per level, the tiles an update would re-render (writes nothing to the cache)."""
    result = plan_summary(load_project(project_dir), aoi=aoi, target=target)
    if as_json:
        _echo_json(result)
        return
    _print_changes(result["changes"])
    if target == "arcgis":
        _print_server_plan(result)
        return
    click.echo("level  tiles to render  tiles stored")
    for lv, d in result["levels"].items():
        if d["tiles"]:
            click.echo(f"{lv:>5}  {d['tiles']:>15,}  {d['stored']:>12,}")
    est = result.get("estimated_seconds")
    click.echo(
        f"total {result['tiles']:,} tiles in {result['metatiles']:,} meta-tiles"
        + (f", about {est:.1f} s" if est is not None else "")
    )
    for f in result.get("aoi_files", []):
        click.echo(f"wrote {f}")


def _print_server_plan(result: dict) -> None:
    st = result["supertile"]
    click.echo(
        f"{result['service']}: supertiles of {st['px']} px = {st['tiles'][0]}x{st['tiles'][1]} "
        f"tiles ({st['source']})"
    )
    click.echo("level  dirty tiles  supertiles  tiles the server redraws")
    for lv, d in result["levels"].items():
        if d["supertiles"]:
            click.echo(
                f"{lv:>5}  {d['dirty_tiles']:>11,}  {d['supertiles']:>10,}  {d['tiles']:>24,}"
            )
    click.echo(
        f"total {result['dirty_tiles']:,} dirty tiles; the server redraws {result['tiles']:,} "
        f"tiles in {result['supertiles']:,} supertiles ({result['jobs']} job(s))"
    )
    for f in result.get("aoi_files", []):
        click.echo(f"wrote {f}")


@main.command()
@project_option
@json_option
@click.option(
    "--target",
    type=click.Choice(["local", "arcgis"]),
    default="local",
    show_default=True,
    help="local: re-render into the project's cache; arcgis: have ArcGIS Server "
    "rebuild the changed area of its cache ([arcgis] in tiledelta.toml).",
)
@click.option(
    "--mark-current",
    is_flag=True,
    help="With --target arcgis: record the server's cache as current, send no job.",
)
@click.option(
    "--via",
    type=click.Choice(["render", "package"]),
    default="render",
    show_default=True,
    help="With --target arcgis: render: the server redraws the changed area; package: "
    "render locally and import the changed tiles as a tile package (importTiles / "
    "Import Map Server Cache).",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Let through an update that deletes more of a layer than [update] max_delete_share.",
)
@_full_compare_option
@_with(engine_options + _scope_options)
def update(
    project_dir: Path,
    as_json: bool,
    target: str,
    mark_current: bool,
    via: str,
    allow_mass_delete: bool,
    full_compare: bool,
    engine: str | None,
    scheduler: str | None,
    scope_levels: str | None,
    processes: int | None,
    extent: str | None,
    extent_crs: str | None,
    aoi: Path | None,
    dry_run: bool,
) -> None:
    """Re-render the tiles that changed data touches, then advance the snapshot (a run
    limited by --levels, --extent or --aoi leaves the snapshot and the rest pending)."""
    t_load = time.perf_counter()
    project = api.with_engine(load_project(project_dir), engine, scheduler)
    project = api.with_processes(project, processes)
    stages = _stages_before(t_load)
    limited = scope_levels or extent or extent_crs or aoi or dry_run
    if target == "arcgis" and limited:
        raise UsageError("--levels, --extent, --aoi and --dry-run work with --target local")
    scope = api.run_scope(
        project, levels=scope_levels, extent=extent, extent_crs=extent_crs, aoi=aoi
    )
    if dry_run:
        _print_dry_run(api.update_dry_run(project, scope=scope), as_json)
        return
    if via == "package" and target != "arcgis":
        raise UsageError("--via package goes with --target arcgis")
    if target == "arcgis" and via == "package":
        say = (lambda _m: None) if as_json else click.echo
        with progress_bar("updating", not as_json) as cb:
            result = api.run_update(project, target="arcgis", via="package", say=say, progress=cb)
        if as_json:
            _echo_json(result)
        else:
            patch = result["patch"]
            click.echo(
                f"{patch['tiles']:,} changed tile(s) sent to {patch['service']} in "
                f"{len(patch['imports'])} import(s); the server rendered nothing"
            )
        return
    if target == "arcgis":
        say = (lambda _m: None) if as_json else click.echo
        result = api.run_update(project, target="arcgis", say=say, mark_current=mark_current)
        if as_json:
            _echo_json(result)
        else:
            click.echo(f"{len(result['jobs'])} server job(s) succeeded")
        return
    with progress_bar("updating", not as_json) as cb:
        result = api.update(
            project,
            progress=cb,
            allow_mass_delete=allow_mass_delete,
            say=lambda m: click.echo(m, err=True),
            scope=scope,
            stages=stages,
            full_compare=full_compare,
        )
    if as_json:
        _echo_json(result)
        return
    if result.get("rebuild"):
        click.echo(f"full rebuild ({result['rebuild']})")
    else:
        _print_changes(result["changes"])
    from tiledelta.runs.report import counts_line

    click.echo(f"updated: {counts_line(result)}; in {result['seconds']:.2f} s")


@main.command()
@project_option
@json_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .tpkx file to write.",
)
@click.option("--levels", default=None, help="Levels to include (default: the project's).")
@click.option(
    "--changed-only",
    is_flag=True,
    help="Only the tiles the last update re-rendered (to patch a server cache).",
)
@click.option(
    "--upload", is_flag=True, help="Upload the package to the portal item [arcgis] item_id."
)
def package(
    project_dir: Path,
    as_json: bool,
    out: Path,
    levels: str | None,
    changed_only: bool,
    upload: bool,
) -> None:
    """Write a Compact Tile Package (.tpkx) from the local cache."""
    say = (lambda _m: None) if as_json else click.echo
    result = api.make_package(
        load_project(project_dir),
        out,
        levels=levels,
        changed_only=changed_only,
        upload=upload,
        say=say,
    )
    if as_json:
        _echo_json(result)
    else:
        click.echo(
            f"wrote {result['package']}: {result['tiles']:,} tiles in "
            f"{result['bundles']} bundles, levels {result['levels']}"
        )


@main.command()
@project_option
@click.option("--size", default="600x400", show_default=True, help="WIDTHxHEIGHT in pixels.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("thumbnail.png"),
    show_default=True,
)
def thumbnail(project_dir: Path, size: str, out: Path) -> None:
    """Render an item thumbnail of the map's full extent (PNG)."""
    from tiledelta.publish.thumbnail import parse_size, write_thumbnail

    path = write_thumbnail(load_project(project_dir), out, parse_size(size))
    click.echo(f"wrote {path}")


@main.command()
@project_option
@json_option
@click.option("--no-cache-update", is_flag=True, help="Publish only; leave the cache alone.")
def publish(project_dir: Path, as_json: bool, no_cache_update: bool) -> None:
    """Overwrite the ArcGIS service definition, then rebuild the changed part of its cache."""
    say = (lambda _m: None) if as_json else click.echo
    result = api.publish_service(
        load_project(project_dir), say=say, update_cache=not no_cache_update
    )
    if as_json:
        _echo_json(result)


@main.command()
@project_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 exposes the cache to the network).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--max-age",
    type=click.IntRange(min=0),
    default=3600,
    show_default=True,
    help="Cache-Control max-age of tile responses, in seconds.",
)
def serve(project_dir: Path, host: str, port: int, max_age: int) -> None:
    """Serve the cache read-only: XYZ tiles, an ArcGIS REST MapServer and WMTS."""
    from tiledelta.serve.app import run as serve_project

    project = Project.load(project_dir)
    try:
        serve_project(project, host=host, port=port, max_age=max_age, say=click.echo)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM is how a server ends: exit 0
        click.echo("stopped", err=True)


@main.command()
@project_option
@json_option
@click.argument("run", required=False)
@click.option("--open", "open_browser", is_flag=True, help="Open report.html in a web browser.")
def report(project_dir: Path, as_json: bool, run: str | None, open_browser: bool) -> None:
    """Show the report of the latest run, or of run RUN (its id, e.g. 3)."""
    from tiledelta.runs.report import (
        CHANGEMAP_FILE,
        REPORT_FILE,
        find_run,
        report_text,
        write_report,
    )

    project = Project.load(project_dir)
    folder = find_run(project, run)
    if folder is None:
        raise ConfigError(
            f"{project.root}: no run {run}" if run else f"{project.root}: no runs yet"
        )
    page = folder / REPORT_FILE
    if not page.is_file():  # runs from before reports existed
        page = write_report(project, folder)
    if as_json:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        changemap = folder / CHANGEMAP_FILE
        _echo_json(
            {
                "run_folder": str(folder),
                "report": str(page),
                "changemap": str(changemap) if changemap.is_file() else None,
                "summary": summary,
            }
        )
    else:
        click.echo(report_text(folder))
    if open_browser and not _open_in_browser(page):
        click.echo(
            f"tiledelta: no web browser could be opened; open {page.resolve()} yourself", err=True
        )


def _open_in_browser(page: Path) -> bool:
    """Open ``page`` in a web browser; False when none could be started."""
    import webbrowser

    try:
        return bool(webbrowser.open(page.resolve().as_uri()))
    except webbrowser.Error:
        return False


@main.command()
@project_option
@click.option(
    "--every", default="10m", show_default=True, help="Poll interval: 30s, 10m, 1h, 1h30m."
)
@click.option(
    "--window",
    default=None,
    help="Update only between HH:MM-HH:MM local time (may wrap past midnight), "
    "e.g. 22:00-06:00. With --target arcgis: [arcgis] quiet_hours by default.",
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N runs: checks of the data, whether or not they updated (1: check once).",
)
@click.option(
    "--target",
    type=click.Choice(["local", "arcgis"]),
    default="local",
    show_default=True,
    help="local: re-render into the project's cache; arcgis: send server cache jobs.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Render processes (overrides [render] processes).",
)
@click.option(
    "--max-tiles-per-second",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Pace rendering to at most this many tiles per second (shared machines).",
)
def watch(
    project_dir: Path,
    every: str,
    window: str | None,
    max_runs: int | None,
    target: str,
    max_workers: int | None,
    max_tiles_per_second: float | None,
) -> None:
    """Poll the sources; update the cache whenever the data changed (Ctrl-C stops)."""
    from tiledelta.ops import watch as watching

    watching.watch(
        project_dir,
        every=watching.parse_every(every),
        window=window,
        max_runs=max_runs,
        target=target,
        max_workers=max_workers,
        max_tiles_per_second=max_tiles_per_second,
        say=click.echo,
    )


@main.command()
@project_option
@json_option
def doctor(project_dir: Path, as_json: bool) -> None:
    """Check Mapnik, fonts, datasources, style, scheme, cache and ArcGIS settings."""
    from tiledelta.ops.doctor import exit_code, run_checks
    from tiledelta.ops.doctor import report as doctor_report

    checks = run_checks(project_dir)
    if as_json:
        _echo_json(doctor_report(checks))
    else:
        for check in checks:
            click.echo(check.line())
    click.get_current_context().exit(exit_code(checks))


@main.command()
@click.argument(
    "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("sample-project")
)
@click.option("--levels", default="0-19", show_default=True)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Compare the updated cache with a fresh full build.",
)
@cache_option
@json_option
def demo(directory: Path, levels: str, verify: bool, cache_kind: str, as_json: bool) -> None:
    """The main job on sample data: make a sample county, build its cache, edit, update."""
    say: Callable[[str], None] = (lambda _m: None) if as_json else click.echo
    with progress_bar("working", not as_json) as cb:
        result = run_demo(
            directory, levels=levels, cache_kind=cache_kind, say=say, progress=cb, verify=verify
        )
    if as_json:
        _echo_json(result)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="tiledelta")
