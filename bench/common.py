"""Helpers shared by the benchmarks: the Clatsop buildings project, peak memory."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "clatsop_buildings"

STYLE = """<Map srs="epsg:3857" background-color="#f2efe9">
  <Style name="buildings">
    <Rule>
      <PolygonSymbolizer fill="#d9d0c9"/>
      <LineSymbolizer stroke="#b9a99a" stroke-width="0.5"/>
    </Rule>
  </Style>
  <Layer name="buildings" srs="epsg:3857">
    <StyleName>buildings</StyleName>
    <Datasource>
      <Parameter name="type">{kind}</Parameter>
      <Parameter name="file">{path}</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


def clatsop_shapefile() -> Path:
    shp = SHARED / "clatsop_buildings.shp"
    if not shp.exists():
        sys.exit(f"benchmark needs {shp} (the shared Clatsop data); it is absent")
    return shp


def make_project(root: Path, levels: str, *, gpkg: bool = False, key: str | None = None) -> Path:
    """A project over the Clatsop buildings (shapefile, or a GeoPackage copy)."""
    from tiledelta.api import init_project

    root.mkdir(parents=True, exist_ok=True)
    src = clatsop_shapefile()
    kind, path = "shape", str(src)
    if gpkg:
        import pyogrio.raw

        meta, _f, geoms, values = pyogrio.raw.read(str(src), return_fids=True)
        path = str(root / "buildings.gpkg")
        write_buildings(path, geoms, values, list(meta["fields"]))
        kind = "ogr"
    (root / "style.xml").write_text(STYLE.format(kind=kind, path=path), encoding="utf-8")
    init_project(root, style=root / "style.xml", levels=levels, force=True)
    blanks = os.environ.get("BENCH_BLANK_TILES")  # auto | store | skip; default: the project's
    if blanks:
        toml = root / "tiledelta.toml"
        text = toml.read_text()
        for old in ("auto", "skip", "store"):
            text = text.replace(f'blank_tiles = "{old}"', f'blank_tiles = "{blanks}"')
        toml.write_text(text)
    if key:
        toml = root / "tiledelta.toml"
        toml.write_text(toml.read_text() + f'\n[layers.buildings]\nkey = "{key}"\n')
    return root


def write_buildings(path: str, wkb, values, fields: list[str]) -> None:
    """(Re)write the benchmark's buildings GeoPackage layer."""
    import pyogrio.raw

    pyogrio.raw.write(
        path,
        wkb,
        values,
        fields,
        layer="buildings",
        driver="GPKG",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process and of its largest finished child."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def proc_status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` size (``VmHWM``, ``VmRSS``) in MB, or None without ``/proc``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def vm_hwm_mb() -> float:
    """This process's own peak RSS (MB). On Linux ``VmHWM``: ``ru_maxrss`` survives
    ``exec``, so a spawned process would report at least its parent's RSS at the spawn."""
    peak = proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def buildings_copies(copies: int):
    """The Clatsop buildings ``copies`` times, shifted side by side (EPSG:3857): WKB (an
    object array), field values and field names; ``FID_1`` stays unique (a key)."""
    import numpy as np
    import pyogrio.raw
    import shapely

    meta, _f, geoms, values = pyogrio.raw.read(str(clatsop_shapefile()), return_fids=True)
    fields = list(meta["fields"])
    if copies == 1:
        return np.asarray(geoms, dtype=object), list(values), fields
    shp = shapely.from_wkb(geoms)
    b = shapely.total_bounds(shp)
    step = (b[2] - b[0]) * 1.05
    wkb = np.concatenate(
        [
            shapely.to_wkb(shapely.transform(shp, lambda xy, k=k: xy + [k * step, 0]))
            for k in range(copies)
        ]
    ).astype(object)
    out = []
    for name, v in zip(fields, values, strict=True):
        if name == "FID_1":
            span = int(v.max()) + 1
            out.append(np.concatenate([v + k * span for k in range(copies)]))
        else:
            out.append(np.concatenate([v] * copies))
    return wkb, out, fields


def copies_project(root: Path, levels: str, copies: int) -> Path:
    """A project over the buildings ``copies`` times side by side (:func:`buildings_copies`),
    in a GeoPackage."""
    wkb, values, fields = buildings_copies(copies)
    make_project(root, levels)
    path = root / "buildings.gpkg"
    write_buildings(str(path), wkb, values, fields)
    (root / "style.xml").write_text(STYLE.format(kind="ogr", path=path), encoding="utf-8")
    return root


def write_shapefile(path: str, wkb, values, fields: list[str]) -> None:
    """The same features as a shapefile: what raw Mapnik reads fastest (its own plugin)."""
    import pyogrio.raw

    pyogrio.raw.write(
        path,
        wkb,
        values,
        fields,
        driver="ESRI Shapefile",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )
