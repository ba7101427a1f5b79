"""Every datasource kind a style can use: read in stable order, diffed, updated exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely

from tiledelta.api import init_project, load_project, seed, update
from tiledelta.change import detect_changes
from tiledelta.config import LayerConfig
from tiledelta.errors import SourceError
from tiledelta.project import Project
from tiledelta.sources import read_layers
from tiledelta.stores import open_project_store
from tiledelta.style import load_style

STYLE = """<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="b">
    <Rule><Filter>[kind] = 'commercial'</Filter><PolygonSymbolizer fill="#cc8844"/></Rule>
    <Rule><ElseFilter/><PolygonSymbolizer fill="#888888"/>
      <LineSymbolizer stroke="#333333" stroke-width="0.5"/></Rule>
  </Style>
  <Layer name="buildings" srs="epsg:3857"><StyleName>b</StyleName>
    <Datasource>{params}</Datasource></Layer>
</Map>
"""

FORMATS = {
    # kind: (driver, file name, datasource parameters)
    "shape": ("ESRI Shapefile", "buildings.shp", {"type": "shape", "file": "buildings.shp"}),
    "geojson": ("GeoJSON", "buildings.geojson", {"type": "geojson", "file": "buildings.geojson"}),
    "sqlite": (
        "SQLite",
        "buildings.sqlite",
        {"type": "sqlite", "file": "buildings.sqlite", "table": "buildings"},
    ),
    "filegdb": (
        "OpenFileGDB",
        "buildings.gdb",
        {"type": "ogr", "file": "buildings.gdb", "layer": "buildings"},
    ),
    "gpkg": (
        "GPKG",
        "buildings.gpkg",
        {"type": "ogr", "file": "buildings.gpkg", "layer": "buildings"},
    ),
}


def _write(path: Path, driver: str, geoms, fields: dict) -> None:
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for side in path.parent.glob(path.stem + ".*"):
        if driver == "ESRI Shapefile":
            side.unlink()
    pyogrio.raw.write(
        str(path),
        np.asarray(shapely.to_wkb(geoms), dtype=object),
        [np.asarray(v, dtype=object if isinstance(v[0], str) else None) for v in fields.values()],
        list(fields),
        layer="buildings",
        driver=driver,
        geometry_type="Polygon",
        crs="EPSG:3857",
    )


def _all_tiles(project_dir: Path) -> dict:
    with open_project_store(Project.load(project_dir), create=False) as s:
        return {a: s.get(*a) for a in s.iter_tiles()}


@pytest.fixture(scope="module")
def buildings(sample_template: Path):
    meta, _f, geoms, values = pyogrio.raw.read(
        str(sample_template / "data" / "county.gpkg"), layer="buildings", return_fids=True
    )
    fields = {k: list(v) for k, v in zip(meta["fields"], values, strict=True)}
    fields["bid"] = list(range(1, len(geoms) + 1))
    return list(shapely.from_wkb(geoms)), fields


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_format_updates_to_a_fresh_seed(kind: str, buildings, tmp_path: Path) -> None:
    driver, name, params = FORMATS[kind]
    geoms, fields = buildings[0][:], {k: v[:] for k, v in buildings[1].items()}
    root = tmp_path / "p"
    root.mkdir()
    _write(root / name, driver, geoms, fields)
    xml_params = "".join(f'<Parameter name="{k}">{v}</Parameter>' for k, v in params.items())
    (root / "style.xml").write_text(STYLE.format(params=xml_params))
    init_project(root, style=root / "style.xml", levels="14-16", force=True)
    project = Project.load(root)
    project = project.updated(render={"processes": 1})
    project = project.updated(layers={"buildings": LayerConfig(key="bid")})
    project.save()
    seed(load_project(root))

    # Delete one building, move another, restyle a third, and edit an unused attribute.
    del geoms[10]
    for v in fields.values():
        del v[10]
    geoms[20] = shapely.affinity.translate(geoms[20], 40, 0)
    fields["kind"][30] = "commercial" if fields["kind"][30] != "commercial" else "residential"
    fields["year_built"] = [y + 1 for y in fields["year_built"]]
    _write(root / name, driver, geoms, fields)

    ch = detect_changes(load_project(root)).layers["buildings"]
    assert (ch.added, ch.modified, ch.deleted) == (0, 2, 1)
    update(load_project(root))

    fresh = tmp_path / "fresh"
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    seed(load_project(fresh))
    assert _all_tiles(root) == _all_tiles(fresh)


def test_features_are_read_in_file_order_not_index_order(buildings, tmp_path: Path) -> None:
    geoms, fields = buildings
    path = tmp_path / "b.gpkg"
    _write(path, "GPKG", geoms, fields)
    (tmp_path / "style.xml").write_text(
        STYLE.format(
            params=(
                '<Parameter name="type">ogr</Parameter><Parameter name="file">b.gpkg</Parameter>'
                '<Parameter name="layer">buildings</Parameter>'
            )
        )
    )
    init_project(tmp_path, style=tmp_path / "style.xml", levels="14", force=True)
    data = read_layers(load_project(tmp_path))["buildings"]
    assert list(data.keys) == sorted(data.keys)  # GeoPackage row order (fid), not R-tree order


def test_geojson_is_reprojected_and_a_wrong_key_is_named(tmp_path: Path, buildings) -> None:
    geoms, fields = buildings
    path = tmp_path / "b.geojson"
    to_wgs84 = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    degrees = shapely.transform(geoms[:5], lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    pyogrio.raw.write(
        str(path),
        np.asarray(shapely.to_wkb(degrees), dtype=object),
        [np.asarray(fields["kind"][:5], dtype=object)],
        ["kind"],
        driver="GeoJSON",
        geometry_type="Polygon",
    )
    style = tmp_path / "style.xml"
    style.write_text(
        STYLE.format(
            params=(
                '<Parameter name="type">geojson</Parameter>'
                '<Parameter name="file">b.geojson</Parameter>'
            )
        ).replace(' srs="epsg:3857"><StyleName>', "><StyleName>")
    )
    init_project(tmp_path, style=style, levels="14", force=True)
    src = load_style(style).layer("buildings")
    from tiledelta.sources import read_layer

    data = read_layer(src, "EPSG:3857")  # GeoJSON is WGS 84 by definition
    assert len(data) == 5
    assert abs(data.bounds[0, 0]) > 1000  # reprojected from degrees to metres
    with pytest.raises(SourceError, match="key field"):
        read_layer(src, "EPSG:3857", key="nope")
