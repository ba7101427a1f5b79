"""The ``tiledelta`` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import sys
import webbrowser
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tiledelta import api
from tiledelta.api import (
    describe_changes,
    init_project,
    load_project,
    plan_summary,
    project_info,
    run_demo,
)
from tiledelta.change import detect_changes
from tiledelta.errors import ConfigError, TileDeltaError
from tiledelta.ops import watch as watching
from tiledelta.ops.doctor import exit_code, run_checks
from tiledelta.ops.doctor import report as doctor_report
from tiledelta.project import Project
from tiledelta.publish.thumbnail import parse_size, write_thumbnail
from tiledelta.runs.report import CHANGEMAP_FILE, REPORT_FILE, find_run, report_text, write_report
from tiledelta.serve.app import run as serve_project

project_option = click.option(
    "--project",
    "-p",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project folder (holds tiledelta.toml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
cache_option = click.option(
    "--cache",
    "cache_kind",
    type=click.Choice(["compact", "mbtiles", "xyz"]),
    default="compact",
    show_default=True,
    help="Cache format.",
)


def _echo_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@contextmanager
def progress_bar(label: str, enabled: bool):
    """Yield a ``callback(done, total)``; draws a rich bar on a terminal only."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return

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
    """Turns library errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TileDeltaError as exc:
            click.echo(f"tiledelta: error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("tiledelta: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Main)
@click.option("-v", "--verbose", count=True, help="Log more (-vv for debug).")
@click.version_option(package_name="tiledelta")
def main(verbose: int) -> None:
    """Keep raster tile caches fresh: re-render only the tiles that changed data touches."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
def init(
    directory: Path,
    style: Path | None,
    sources: tuple[str, ...],
    levels: str,
    scheme: str,
    cache_kind: str,
    fmt: str,
    force: bool,
) -> None:
    """Create a project: DIRECTORY/tiledelta.toml."""
    path = init_project(
        directory,
        style=style,
        sources=list(sources),
        levels=levels,
        scheme=scheme,
        cache_kind=cache_kind,
        fmt=fmt,
        force=force,
    )
    click.echo(f"wrote {path}")


@main.command()
@project_option
@json_option
def seed(project_dir: Path, as_json: bool) -> None:
    """Build every tile of the configured levels."""
    project = load_project(project_dir)
    with progress_bar("seeding", not as_json) as cb:
        result = api.seed(project, progress=cb)
    if as_json:
        _echo_json(result)
    else:
        _print_run(result, "seeded")


def _print_run(result: dict, verb: str) -> None:
    click.echo(
        f"{verb} {result['tiles_written']:,} tiles "
        f"({result['tiles_rendered']:,} rendered, {result['tiles_blank']:,} blank) "
        f"in {result['seconds']:.1f} s into {result['cache']}"
    )


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


@main.command()
@project_option
@json_option
def status(project_dir: Path, as_json: bool) -> None:
    """What changed since the last build, per layer."""
    changes = detect_changes(load_project(project_dir)).as_dict()
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
def plan(project_dir: Path, as_json: bool, aoi: Path | None) -> None:
    """Per level, the tiles an update would re-render (writes nothing to the cache)."""
    result = plan_summary(load_project(project_dir), aoi=aoi)
    if as_json:
        _echo_json(result)
        return
    _print_changes(result["changes"])
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
def update(project_dir: Path, as_json: bool, target: str, mark_current: bool) -> None:
    """Re-render the tiles that changed data touches, then advance the snapshot."""
    project = load_project(project_dir)
    if target == "arcgis":
        say = (lambda _m: None) if as_json else click.echo
        result = api.run_update(project, target="arcgis", say=say, mark_current=mark_current)
        if as_json:
            _echo_json(result)
        else:
            click.echo(f"{len(result['jobs'])} server job(s) succeeded")
        return
    with progress_bar("updating", not as_json) as cb:
        result = api.update(project, progress=cb)
    if as_json:
        _echo_json(result)
        return
    if result.get("rebuild"):
        click.echo(f"full rebuild ({result['rebuild']})")
    else:
        _print_changes(result["changes"])
    click.echo(
        f"re-rendered {result['tiles_rendered']:,} tiles: {result['tiles_written']:,} written, "
        f"{result['tiles_unchanged']:,} unchanged, {result['tiles_removed']:,} removed "
        f"in {result['seconds']:.2f} s"
    )


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
    serve_project(Project.load(project_dir), host=host, port=port, max_age=max_age, say=click.echo)


@main.command()
@project_option
@json_option
@click.argument("run", required=False)
@click.option("--open", "open_browser", is_flag=True, help="Open report.html in a web browser.")
def report(project_dir: Path, as_json: bool, run: str | None, open_browser: bool) -> None:
    """Show the report of the latest run, or of run RUN (its id, e.g. 3)."""
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
    if open_browser:
        webbrowser.open(page.resolve().as_uri())


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
@click.option("--max-runs", type=click.IntRange(min=1), default=None, help="Stop after N runs.")
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
    main()
