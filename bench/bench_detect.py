"""Change detection over 1,000,000 synthetic features: seconds and peak memory.

    .venv/bin/python bench/bench_detect.py [--features 1000000]

A GeoPackage of N small polygons (with a labelled name, a filtered kind and an unused
attribute) is generated and snapshotted in child processes; then 100 features get a new
`kind`, 100 are deleted and 1,000 get an unused attribute edited, and this process runs
`detect_changes` (read with GDAL, fingerprint, diff) alone, so its peak RSS is the
detection's own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sqlite3
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

STYLE = """<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="s">
    <Rule><Filter>[kind] = 'a'</Filter><PolygonSymbolizer fill="#cc9966"/></Rule>
    <Rule><ElseFilter/><PolygonSymbolizer fill="#999999"/></Rule>
    <Rule><MaxScaleDenominator>5000</MaxScaleDenominator>
      <TextSymbolizer face-name="DejaVu Sans Book" size="9" fill="#000">[name]</TextSymbolizer>
    </Rule>
  </Style>
  <Layer name="parcels" srs="epsg:3857"><StyleName>s</StyleName>
    <Datasource><Parameter name="type">ogr</Parameter>
      <Parameter name="file">parcels.gpkg</Parameter><Parameter name="layer">parcels</Parameter>
    </Datasource></Layer>
</Map>
"""


def generate(root: Path, n: int) -> None:
    import pyogrio.raw
    import shapely

    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    x = -13790000 + (i % side) * 30.0
    y = 5780000 + (i // side) * 30.0
    geoms = shapely.to_wkb(shapely.box(x, y, x + 20, y + 20))
    names = np.array([f"P{k}" for k in i], dtype=object)
    kinds = np.where(i % 3 == 0, "a", "b").astype(object)
    owners = np.array([f"owner {k % 997}" for k in i], dtype=object)
    pyogrio.raw.write(
        str(root / "parcels.gpkg"),
        geoms,
        [names, kinds, owners],
        ["name", "kind", "owner"],
        layer="parcels",
        driver="GPKG",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )


def snapshot(root: Path) -> None:
    from tiledelta.api import init_project, load_project
    from tiledelta.change import record_build
    from tiledelta.sources import read_layers

    (root / "style.xml").write_text(STYLE)
    init_project(root, style=root / "style.xml", levels="10-19", force=True)
    project = load_project(root)
    record_build(project, read_layers(project), project.levels, kind="bench")
    project.cache_path.mkdir()  # detection only; no tiles are rendered here


def _envelope(blob: bytes) -> tuple[float, float, float, float]:
    """minx, maxx, miny, maxy from a GeoPackage geometry blob header (envelope type 1+)."""
    flags = blob[3]
    order = "<" if flags & 1 else ">"
    return struct.unpack(order + "4d", blob[8:40])


def _gpkg_functions(con: sqlite3.Connection) -> None:
    """The SQL functions GeoPackage R-tree triggers call (GDAL registers them; sqlite3 doesn't)."""
    con.create_function("ST_IsEmpty", 1, lambda b: int(b is None or bool(b[3] & 0x10)))
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        con.create_function(name, 1, lambda b, i=i: _envelope(b)[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", type=int, default=1_000_000)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for step in (generate, snapshot):
            t = time.perf_counter()
            p = ctx.Process(
                target=step, args=(root, args.features) if step is generate else (root,)
            )
            p.start()
            p.join()
            assert p.exitcode == 0, f"{step.__name__} failed"
            print(f"{step.__name__:<10} {time.perf_counter() - t:7.1f} s (setup, not measured)")
        con = sqlite3.connect(root / "parcels.gpkg")
        _gpkg_functions(con)
        with con:
            con.execute("UPDATE parcels SET kind = 'a' WHERE fid % 10007 = 1 AND kind = 'b'")
            con.execute("DELETE FROM parcels WHERE fid % 10009 = 2")
            con.execute("UPDATE parcels SET owner = 'someone else' WHERE fid % 997 = 3")
        con.close()

        from tiledelta.api import load_project
        from tiledelta.change import detect_changes

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        changes = detect_changes(load_project(root))
        secs = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if changes.rebuild:
        raise SystemExit(f"unexpected full rebuild: {changes.rebuild}")
    c = changes.layers["parcels"]
    print(f"features                {args.features:>12,}")
    print(
        f"detected                {c.added} added, {c.modified} modified, {c.deleted} deleted "
        "(no key field: a restyled feature is delete + add)"
    )
    print(f"change detection        {secs:>12.2f} s   (goal: under 10 s)")
    print(f"peak RSS                {peak:>12.0f} MB  (before: {base:.0f} MB; goal: under 1,500)")


if __name__ == "__main__":
    main()
