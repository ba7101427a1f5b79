"""A deterministic sample county: roads, parcels, water and buildings.

Used by the README's main job, the tests and the benchmarks. Everything is
generated from a fixed seed, so every machine builds byte-identical data.
Coordinates are Web Mercator, near Astoria, Oregon.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from shapely.geometry import LineString, Polygon, box

X0, Y0 = -13786000.0, 5804000.0  # south-west corner of the sample town
BLOCK = 160.0  # metres
STREET = 24.0
NX, NY = 12, 9
EAST_WEST = [
    "Marine Dr",
    "Commercial St",
    "Duane St",
    "Exchange St",
    "Franklin Ave",
    "Grand Ave",
    "Harrison Ave",
    "Irving Ave",
    "Jerome Ave",
    "Kensington Ave",
]
NORTH_SOUTH = [
    f"{n} St"
    for n in (
        "1st",
        "2nd",
        "3rd",
        "4th",
        "5th",
        "6th",
        "7th",
        "8th",
        "9th",
        "10th",
        "11th",
        "12th",
        "13th",
    )
]

STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#f4f1ea">
  <Style name="water">
    <Rule><PolygonSymbolizer fill="#aad3df"/></Rule>
  </Style>
  <Style name="parcels">
    <Rule>
      <MaxScaleDenominator>100000</MaxScaleDenominator>
      <PolygonSymbolizer fill="#ece7dc"/>
      <LineSymbolizer stroke="#c9bfae" stroke-width="0.7"/>
    </Rule>
    <Rule>
      <MaxScaleDenominator>4000</MaxScaleDenominator>
      <TextSymbolizer face-name="DejaVu Sans Book" size="9" fill="#7a6f5f"
          placement="interior">[parcel_no]</TextSymbolizer>
    </Rule>
  </Style>
  <Style name="buildings">
    <Rule>
      <MaxScaleDenominator>50000</MaxScaleDenominator>
      <Filter>[kind] = 'commercial'</Filter>
      <PolygonSymbolizer fill="#d6a77a"/>
      <LineSymbolizer stroke="#a27652" stroke-width="0.5"/>
    </Rule>
    <Rule>
      <MaxScaleDenominator>50000</MaxScaleDenominator>
      <ElseFilter/>
      <PolygonSymbolizer fill="#cfc6bd"/>
      <LineSymbolizer stroke="#a39585" stroke-width="0.5"/>
    </Rule>
  </Style>
  <Style name="roads">
    <Rule>
      <LineSymbolizer stroke="#ffffff" stroke-width="5" stroke-linecap="round"/>
    </Rule>
    <Rule>
      <MaxScaleDenominator>20000</MaxScaleDenominator>
      <TextSymbolizer face-name="DejaVu Sans Book" size="11" fill="#333333"
          halo-fill="#ffffff" halo-radius="1.5" placement="line"
          spacing="300">[name]</TextSymbolizer>
    </Rule>
  </Style>
  <Layer name="water" srs="epsg:3857">
    <StyleName>water</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/county.gpkg</Parameter>
      <Parameter name="layer">water</Parameter>
    </Datasource>
  </Layer>
  <Layer name="parcels" srs="epsg:3857">
    <StyleName>parcels</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/county.gpkg</Parameter>
      <Parameter name="layer">parcels</Parameter>
    </Datasource>
  </Layer>
  <Layer name="buildings" srs="epsg:3857">
    <StyleName>buildings</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/county.gpkg</Parameter>
      <Parameter name="layer">buildings</Parameter>
    </Datasource>
  </Layer>
  <Layer name="roads" srs="epsg:3857">
    <StyleName>roads</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/county.gpkg</Parameter>
      <Parameter name="layer">roads</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


#: The opt-in hillshade layer (``generate(..., hillshade=True)``): drawn first, under the
#: vectors, from a GeoTIFF in UTM zone 10N that Mapnik reprojects.
HILLSHADE_STYLE = """  <Style name="hillshade">
    <Rule><RasterSymbolizer opacity="0.55" scaling="bilinear"/></Rule>
  </Style>
  <Layer name="hillshade" srs="epsg:26910">
    <StyleName>hillshade</StyleName>
    <Datasource>
      <Parameter name="type">gdal</Parameter>
      <Parameter name="file">data/hillshade.tif</Parameter>
    </Datasource>
  </Layer>
"""
#: The hillshade's grid: UTM 10N, 2 m pixels, internally tiled 256 x 256.
HILLSHADE_ORIGIN = (434700.0, 5112100.0)  # upper-left corner (easting, northing)
HILLSHADE_SIZE = (1024, 768)  # width, height in pixels
HILLSHADE_PIXEL = 2.0
#: The demo's hillshade edit: (row, col, radius) of a new mound, inside one 256 x 256 block.
HILLSHADE_BUMP = (400, 600, 40)


def _hillshade(dem: np.ndarray, pixel: float) -> np.ndarray:
    """Hillshade (sun at azimuth 315 degrees, altitude 45) as uint8 1..255 (0 is nodata)."""
    gy, gx = np.gradient(dem, pixel)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(360.0 - 315.0 + 90.0), np.radians(45.0)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return (1 + np.clip(shade, 0, 1) * 254).round().astype(np.uint8)


def write_hillshade(folder: Path, *, bump: tuple[int, int, int] | None = None) -> Path:
    """Write ``folder/data/hillshade.tif`` from a procedural elevation model (hills and a
    valley, from a fixed formula); ``bump`` = (row, col, radius) adds a new mound there,
    written into that window only (as a re-flown LiDAR tile would be)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    w, h = HILLSHADE_SIZE
    path = folder / "data" / "hillshade.tif"
    if bump is None:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        dem = (
            60 * np.sin(xx / 41.0) * np.cos(yy / 57.0)
            + 25 * np.sin((xx + 2 * yy) / 23.0)
            + 90 * np.exp(-(((xx - 300) / 120) ** 2 + ((yy - 500) / 90) ** 2))
        )
        profile = {
            "driver": "GTiff",
            "width": w,
            "height": h,
            "count": 1,
            "dtype": "uint8",
            "crs": "EPSG:26910",
            "nodata": 0,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "transform": from_origin(*HILLSHADE_ORIGIN, HILLSHADE_PIXEL, HILLSHADE_PIXEL),
        }
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(_hillshade(dem, HILLSHADE_PIXEL), 1)
        return path
    row, col, r = bump
    win = Window(col - r, row - r, 2 * r, 2 * r)
    yy, xx = np.mgrid[-r:r, -r:r].astype(np.float64)
    mound = 30 * np.exp(-(xx**2 + yy**2) / (r / 2) ** 2)
    with rasterio.open(path, "r+") as ds:
        ds.write(_hillshade(mound, HILLSHADE_PIXEL)[None], window=win)
    return path


def _write(path: Path, layer: str, geoms: list, fields: dict[str, list], gtype: str) -> None:
    names = list(fields)
    data = [
        np.asarray(fields[n], dtype=object if isinstance(fields[n][0], str) else None)
        for n in names
    ]
    pyogrio.raw.write(
        str(path),
        np.asarray(shapely.to_wkb(geoms), dtype=object),
        data,
        names,
        layer=layer,
        driver="GPKG",
        geometry_type=gtype,
        crs="EPSG:3857",
        append=False,
    )


def generate(folder: Path, *, hillshade: bool = False) -> dict[str, int]:
    """Write ``folder/data/county.gpkg`` and ``folder/style.xml``; return feature counts.
    ``hillshade`` adds a raster layer under the vectors (:func:`write_hillshade`)."""
    rng = random.Random(20261124)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    gpkg = data / "county.gpkg"
    if gpkg.exists():
        gpkg.unlink()
    pitch = BLOCK + STREET
    width, height = NX * pitch + STREET, NY * pitch + STREET

    # Water: a river along the north edge and a bay to the west.
    river = Polygon(
        [
            (X0 - 800, Y0 + height + 60),
            (X0 + width + 800, Y0 + height + 140),
            (X0 + width + 800, Y0 + height + 900),
            (X0 - 800, Y0 + height + 820),
        ]
    )
    bay = shapely.buffer(shapely.Point(X0 - 500, Y0 + height * 0.4), 420, quad_segs=16)
    _write(gpkg, "water", [river, bay], {"name": ["Columbia River", "Youngs Bay"]}, "Polygon")

    roads, names, classes = [], [], []
    for j in range(NY + 1):
        y = Y0 + j * pitch + STREET / 2
        roads.append(LineString([(X0, y), (X0 + width, y)]))
        names.append(EAST_WEST[j % len(EAST_WEST)])
        classes.append("arterial" if j % 3 == 0 else "local")
    for i in range(NX + 1):
        x = X0 + i * pitch + STREET / 2
        roads.append(LineString([(x, Y0), (x, Y0 + height)]))
        names.append(NORTH_SOUTH[i % len(NORTH_SOUTH)])
        classes.append("local")
    roads.append(
        LineString([(X0 - 600, Y0 - 300), (X0 + width / 2, Y0 - 120), (X0 + width + 600, Y0 - 380)])
    )
    names.append("Highway 30")
    classes.append("highway")
    ids = list(range(1, len(roads) + 1))
    _write(gpkg, "roads", roads, {"road_id": ids, "name": names, "class": classes}, "LineString")

    parcels, pnos, owners, buildings, bkinds, byears = [], [], [], [], [], []
    n = 1000
    for j in range(NY):
        for i in range(NX):
            bx, by = X0 + STREET + i * pitch, Y0 + STREET + j * pitch
            cols, rows = rng.choice([(2, 2), (3, 2), (4, 2)])
            pw, ph = BLOCK / cols, BLOCK / rows
            for r in range(rows):
                for c in range(cols):
                    p = box(bx + c * pw, by + r * ph, bx + (c + 1) * pw, by + (r + 1) * ph)
                    parcels.append(p)
                    n += 1
                    pnos.append(f"{n}")
                    owners.append(f"Owner {rng.randint(1, 500)}")
                    if rng.random() < 0.8:
                        m = rng.uniform(8, 16)
                        bw, bh = rng.uniform(10, pw - 2 * m), rng.uniform(10, ph - 2 * m)
                        x = rng.uniform(p.bounds[0] + m, p.bounds[2] - m - bw)
                        y = rng.uniform(p.bounds[1] + m, p.bounds[3] - m - bh)
                        buildings.append(box(x, y, x + bw, y + bh))
                        bkinds.append("commercial" if j < 2 else "residential")
                        byears.append(rng.randint(1890, 2024))
    _write(gpkg, "parcels", parcels, {"parcel_no": pnos, "owner": owners}, "Polygon")
    _write(gpkg, "buildings", buildings, {"kind": bkinds, "year_built": byears}, "Polygon")
    style = STYLE
    if hillshade:
        write_hillshade(folder)
        first = style.index("  <Layer ")
        style = style[:first] + HILLSHADE_STYLE + style[first:]
    (folder / "style.xml").write_text(style, encoding="utf-8")
    return {"water": 2, "roads": len(roads), "parcels": len(parcels), "buildings": len(buildings)}


def _read(path: Path, layer: str):
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer=layer, return_fids=True)
    return list(shapely.from_wkb(geoms)), dict(
        zip(meta["fields"], [list(v) for v in values], strict=True)
    )


def apply_edits(folder: Path) -> list[str]:
    """The README's scripted edit: move a road, delete a building, rename a street,
    add parcels. Returns a line per edit."""
    gpkg = folder / "data" / "county.gpkg"
    done = []
    geoms, f = _read(gpkg, "roads")
    i = f["name"].index("Highway 30")
    geoms[i] = shapely.affinity.translate(geoms[i], 0, -60)
    done.append("moved Highway 30 60 m south")
    old, new = ("Duane St", "Duane Street")
    if old not in f["name"]:  # a second run renames it back
        old, new = new, old
    f["name"][f["name"].index(old)] = new
    done.append(f"renamed {old} to {new}")
    _write(gpkg, "roads", geoms, f, "LineString")

    geoms, f = _read(gpkg, "buildings")
    k = len(geoms) // 2
    del geoms[k]
    for v in f.values():
        del v[k]
    done.append("deleted one building in the middle of town")
    _write(gpkg, "buildings", geoms, f, "Polygon")

    geoms, f = _read(gpkg, "parcels")
    x = X0 + NX * (BLOCK + STREET) + 2 * STREET
    for r in range(3):
        geoms.append(box(x, Y0 + STREET + r * 60, x + 80, Y0 + STREET + r * 60 + 55))
        f["parcel_no"].append(f"9{r:03d}")
        f["owner"].append("New subdivision")
    done.append("added 3 parcels east of town")
    _write(gpkg, "parcels", geoms, f, "Polygon")
    if (folder / "data" / "hillshade.tif").exists():  # generate(..., hillshade=True)
        write_hillshade(folder, bump=HILLSHADE_BUMP)
        done.append("wrote a new mound into one block of the hillshade (a re-flown LiDAR tile)")
    return done
