"""ArcGIS Pro maps (.aprx of both generations, .mapx, .lyrx) as the project's input.

The .aprx fixtures are built here as Pro writes them: a zip of CIM documents, CIM XML
with PascalCase elements and ``xsi:type`` for Pro 2.x, CIM JSON for Pro 3.x; maps list
their layers by ``CIMPATH=`` URI. Their data is a FileGDB and a GeoPackage written with
GDAL (pyogrio). The real layer files Pro wrote come from ../shared/data/arcgis_pro.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import shapely
from conftest import shared_path
from pyogrio.raw import write

from tiledelta.api import init_project, load_project
from tiledelta.change import detect_changes, record_build
from tiledelta.errors import StyleError
from tiledelta.grid import mapnik_scale_denominator, metatiles_for_boxes, query_pad
from tiledelta.plan import update_plan, visible_levels
from tiledelta.publish.arcgis.cache import level_areas
from tiledelta.sources import read_layers
from tiledelta.style.cim import load_pro_map, read_pro_map
from tiledelta.style.cim.expressions import (
    SqlError,
    arcade_fields,
    bracket_fields,
    sql_fields,
    translate_where,
)

X0, Y0 = -13_775_000.0, 5_830_000.0  # near Astoria, Oregon (EPSG:3857)
LEVELS = "13-16"  # ArcGIS scales 72,224 / 36,112 / 18,056 / 9,028


# --- data -------------------------------------------------------------------------------------


def write_parcels(
    path: Path,
    zoning: list[str] | None = None,
    notes: list[str] | None = None,
    owner: list[str] | None = None,
) -> None:
    """Nine parcels in a FileGDB: ZONING (drawn), OWNER (labelled), NOTES (not drawn),
    STATUS (the definition query keeps STATUS <> 'RETIRED')."""
    n = 9
    boxes = [
        shapely.box(
            X0 + 400 * (i % 3),
            Y0 + 400 * (i // 3),
            X0 + 400 * (i % 3) + 300,
            Y0 + 400 * (i // 3) + 300,
        )
        for i in range(n)
    ]
    zoning = zoning or ["R1", "R2", "C1"] * 3
    notes = notes or [f"note {i}" for i in range(n)]
    owner = owner or [f"Owner {i}" for i in range(n)]
    status = ["ACTIVE"] * (n - 1) + ["RETIRED"]
    write(
        str(path),
        np.array(shapely.to_wkb(boxes), dtype=object),
        [
            np.array(zoning, dtype=object),
            np.array(owner, dtype=object),
            np.array(notes, dtype=object),
            np.array(status, dtype=object),
            np.arange(n, dtype=np.int32),
        ],
        ["ZONING", "OWNER", "NOTES", "STATUS", "PID"],
        driver="OpenFileGDB",
        layer="parcels",
        geometry_type="MultiPolygon",
        crs="EPSG:3857",
    )


def write_roads(path: Path, speed: list[int] | None = None) -> None:
    lines = [
        shapely.LineString([(X0 - 200, Y0 + 150 + 400 * i), (X0 + 1400, Y0 + 150 + 400 * i)])
        for i in range(3)
    ]
    write(
        str(path),
        np.array(shapely.to_wkb(lines), dtype=object),
        [
            np.array(["Main St", "Oak Ave", "Pine Rd"], dtype=object),
            np.array(speed or [25, 35, 45], dtype=np.int32),
        ],
        ["NAME", "SPEED"],
        driver="GPKG",
        layer="roads",
        geometry_type="LineString",
        crs="EPSG:3857",
    )


# --- CIM documents --------------------------------------------------------------------------


def rgb(r: int, g: int, b: int) -> dict:
    return {"type": "CIMRGBColor", "values": [r, g, b, 100]}


def polygon_symbol(fill: dict, outline: float = 0.7) -> dict:
    return {
        "type": "CIMSymbolReference",
        "symbol": {
            "type": "CIMPolygonSymbol",
            "symbolLayers": [
                {
                    "type": "CIMSolidStroke",
                    "enable": True,
                    "width": outline,
                    "color": rgb(80, 80, 80),
                },
                {"type": "CIMSolidFill", "enable": True, "color": fill},
            ],
        },
    }


def line_symbol(width: float) -> dict:
    return {
        "type": "CIMSymbolReference",
        "symbol": {
            "type": "CIMLineSymbol",
            "symbolLayers": [
                {"type": "CIMSolidStroke", "enable": True, "width": width, "color": rgb(200, 60, 0)}
            ],
        },
    }


def text_symbol(height: float = 9, halo: float = 1) -> dict:
    return {
        "type": "CIMSymbolReference",
        "symbol": {
            "type": "CIMTextSymbol",
            "height": height,
            "haloSize": halo,
            "haloSymbol": {
                "type": "CIMPolygonSymbol",
                "symbolLayers": [
                    {"type": "CIMSolidFill", "enable": True, "color": rgb(255, 255, 255)}
                ],
            },
            "symbol": {
                "type": "CIMPolygonSymbol",
                "symbolLayers": [{"type": "CIMSolidFill", "enable": True, "color": rgb(0, 0, 0)}],
            },
        },
    }


def parcels_layer(uri: str, gdb: str, zone_colors: dict[str, tuple] | None = None) -> dict:
    colors = zone_colors or {"R1": (255, 255, 190), "R2": (255, 210, 120), "C1": (230, 120, 120)}
    return {
        "type": "CIMFeatureLayer",
        "name": "Parcels",
        "uRI": uri,
        "visibility": True,
        "labelVisibility": True,
        "featureTable": {
            "type": "CIMFeatureTable",
            "definitionExpression": "STATUS <> 'RETIRED'",
            "dataConnection": {
                "type": "CIMStandardDataConnection",
                "workspaceConnectionString": f"DATABASE={gdb}",
                "workspaceFactory": "FileGDB",
                "dataset": "parcels",
                "datasetType": "esriDTFeatureClass",
            },
        },
        "renderer": {
            "type": "CIMUniqueValueRenderer",
            "fields": ["ZONING"],
            "groups": [
                {
                    "type": "CIMUniqueValueGroup",
                    "classes": [
                        {
                            "type": "CIMUniqueValueClass",
                            "label": z,
                            "visible": True,
                            "symbol": polygon_symbol(rgb(*c)),
                            "values": [{"type": "CIMUniqueValue", "fieldValues": [z]}],
                        }
                        for z, c in colors.items()
                    ],
                }
            ],
        },
        "labelClasses": [
            {
                "type": "CIMLabelClass",
                "name": "Owners",
                "visibility": True,
                "expression": "$feature.OWNER",
                "expressionEngine": "Arcade",
                "minimumScale": 20000,
                "textSymbol": text_symbol(),
            }
        ],
    }


def roads_layer(uri: str, gpkg: str, width: float = 2.0) -> dict:
    return {
        "type": "CIMFeatureLayer",
        "name": "Roads",
        "uRI": uri,
        "visibility": True,
        "maxScale": 1000,
        "labelVisibility": True,
        "featureTable": {
            "type": "CIMFeatureTable",
            "dataConnection": {
                "type": "CIMStandardDataConnection",
                "workspaceConnectionString": f"DATABASE={gpkg}",
                "workspaceFactory": "SQLite",
                "dataset": "main.roads",
            },
        },
        "renderer": {"type": "CIMSimpleRenderer", "symbol": line_symbol(width)},
        "labelClasses": [
            {
                "type": "CIMLabelClass",
                "name": "Names",
                "visibility": True,
                "expression": "[NAME]",
                "expressionEngine": "VBScript",
                "textSymbol": text_symbol(10, 1.5),
            },
            {
                "type": "CIMLabelClass",
                "name": "Hidden",
                "visibility": False,
                "expression": "[SPEED]",
                "expressionEngine": "VBScript",
            },
        ],
    }


def county_documents(
    ext: str,
    gdb: str = "data\\county.gdb",
    gpkg: str = ".\\data\\roads.gpkg",
    *,
    zone_colors: dict | None = None,
    road_width: float = 2.0,
    extra_map: bool = False,
) -> dict[str, dict]:
    """The CIM documents of County.aprx: one map (top to bottom): the Transport group
    (Roads; group minScale 50,000), Parcels, an annotation layer and a raster."""
    u = lambda name: f"CIMPATH=map/{name}.{ext}"  # noqa: E731
    docs = {
        f"map/transport.{ext}": {
            "type": "CIMGroupLayer",
            "name": "Transport",
            "uRI": u("transport"),
            "visibility": True,
            "minScale": 50000,
            "layers": [u("roads")],
        },
        f"map/roads.{ext}": roads_layer(u("roads"), gpkg, road_width),
        f"map/parcels.{ext}": parcels_layer(u("parcels"), gdb, zone_colors),
        f"map/anno.{ext}": {
            "type": "CIMAnnotationLayer",
            "name": "Street Anno",
            "uRI": u("anno"),
            "visibility": True,
        },
        f"map/hillshade.{ext}": {
            "type": "CIMRasterLayer",
            "name": "Hillshade",
            "uRI": u("hillshade"),
            "visibility": True,
        },
        f"map/map.{ext}": {
            "type": "CIMMap",
            "name": "County",
            "uRI": u("map"),
            "layers": [u("transport"), u("parcels"), u("anno"), u("hillshade")],
            "backgroundColor": rgb(250, 250, 245),
        },
    }
    items = [
        {"type": "CIMProjectItem", "name": "County", "itemType": "Map", "catalogPath": u("map")}
    ]
    if extra_map:
        docs[f"map/taxlots.{ext}"] = {
            "type": "CIMFeatureLayer",
            "name": "Taxlots",
            "uRI": u("taxlots"),
            "visibility": True,
            "featureTable": {
                "type": "CIMFeatureTable",
                "dataConnection": {
                    "type": "CIMStandardDataConnection",
                    "workspaceConnectionString": (
                        "ENCRYPTED_PASSWORD=00022e68secret;SERVER=gis01;INSTANCE=sde:sqlserver:gis01;"
                        "DBCLIENT=sqlserver;DATABASE=county;USER=gisadmin;VERSION=sde.DEFAULT"
                    ),
                    "workspaceFactory": "SDE",
                    "dataset": "county.DBO.taxlots",
                },
            },
            "renderer": {
                "type": "CIMClassBreaksRenderer",
                "field": "ASSESSED",
                "normalizationField": "ACRES",
                "minimumBreak": 0,
                "breaks": [
                    {
                        "type": "CIMClassBreak",
                        "upperBound": 1e6,
                        "symbol": polygon_symbol(rgb(200, 200, 255)),
                    }
                ],
            },
        }
        docs[f"map/assessor.{ext}"] = {
            "type": "CIMMap",
            "name": "Assessor",
            "uRI": u("assessor"),
            "layers": [u("taxlots")],
        }
        items.append(
            {
                "type": "CIMProjectItem",
                "name": "Assessor",
                "itemType": "Map",
                "catalogPath": u("assessor"),
            }
        )
    docs[f"GISProject.{ext}"] = {"type": "CIMGISProject", "projectItems": items}
    return docs


def _pascal(key: str) -> str:
    return key[:1].upper() + key[1:]


def cim_xml(tag: str, value: Any) -> ET.Element:
    """A CIM object as Pro 2.x writes it: PascalCase elements, ``xsi:type`` on objects and
    arrays (``typens:ArrayOfString``, ``typens:ArrayOfCIMLabelClass``...)."""
    el = ET.Element(tag)
    if isinstance(value, dict):
        if "type" in value:
            el.set("xsi:type", f"typens:{value['type']}")
        for k, v in value.items():
            if k != "type":
                el.append(cim_xml(_pascal(k), v))
    elif isinstance(value, list):
        item_types = {v.get("type") for v in value if isinstance(v, dict)}
        if all(isinstance(v, str) for v in value):
            el.set("xsi:type", "typens:ArrayOfString")
            for v in value:
                ET.SubElement(el, "String").text = v
        elif all(isinstance(v, int | float) for v in value):
            el.set("xsi:type", "typens:ArrayOfDouble")
            for v in value:
                ET.SubElement(el, "Double").text = repr(v)
        else:
            base = item_types.pop() if len(item_types) == 1 else "CIMObject"
            el.set("xsi:type", f"typens:ArrayOf{base}")
            for v in value:
                el.append(cim_xml(v.get("type", "CIMObject"), v))
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    else:
        el.text = str(value)
    return el


def xml_bytes(doc: dict) -> bytes:
    root = cim_xml(doc["type"], doc)
    root.set("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance")
    root.set("xmlns:xs", "http://www.w3.org/2001/XMLSchema")
    root.set("xmlns:typens", "http://www.esri.com/schemas/ArcGIS/2.8.0")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root)


def write_aprx(path: Path, generation: str, edit: Any = None, **kw: Any) -> Path:
    """County.aprx as Pro ``generation`` ("2.x": XML, "3.x": JSON) writes it; ``edit(docs,
    ext)`` may change the documents first."""
    ext = "xml" if generation == "2.x" else "json"
    docs = county_documents(ext, **kw)
    if edit is not None:
        edit(docs, ext)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, doc in docs.items():
            data = xml_bytes(doc) if ext == "xml" else json.dumps(doc, indent=2).encode()
            zf.writestr(name, data)
        zf.writestr("Index.json", b"{}")
    return path


@pytest.fixture(params=["2.x", "3.x"])
def county(request, tmp_path: Path) -> tuple[Path, str]:
    """A folder with County.aprx (Pro 2.x CIM XML or 3.x CIM JSON) and its data."""
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")
    write_aprx(root / "County.aprx", request.param)
    return root, request.param


# --- reading the map ---------------------------------------------------------------------------


def test_both_generations_read_the_same_layers(county) -> None:
    root, _gen = county
    pro = read_pro_map(root / "County.aprx")
    assert pro.name == "County"
    names = [lyr.name for lyr in pro.layers.feature]
    assert names == ["Roads", "Parcels"]  # top first, the group flattened
    roads, parcels = pro.layers.feature
    # group minScale 50,000 is combined with the layer's own maxScale 1,000
    assert (roads.scales.smallest, roads.scales.largest) == (1000.0, 50000.0)
    assert parcels.scales.largest == float("inf")
    assert parcels.definition == "STATUS <> 'RETIRED'"
    assert parcels.fields == {"ZONING", "OWNER"}
    assert roads.fields == {"NAME"}  # the hidden label class (SPEED) does not draw
    assert [lc["name"] for lc in roads.labels] == ["Names"]
    assert roads.source is not None and roads.source.factory == "SQLite"
    # one line per other layer, never dropped
    lines = [o.line() for o in pro.layers.other]
    assert lines == [
        "layer 'Street Anno': annotation layer; not used for change detection",
        "layer 'Hillshade': raster layer; not used for change detection",
    ]


def test_buffers_follow_symbols_and_labels(county) -> None:
    root, _gen = county
    roads, parcels = read_pro_map(root / "County.aprx").layers.feature
    # Roads: label text 10 pt + halo 1.5 pt = 11.5 pt > stroke 1 pt; at 96 dpi: 15.33 px
    assert roads.buffer_px == 16 + 1
    # Parcels: label 9 pt + 1 pt halo = 10 pt = 13.33 px
    assert parcels.buffer_px == 14 + 1


def test_the_style_model(county) -> None:
    root, _gen = county
    style = load_pro_map(root / "County.aprx")
    by = {s.name: s for s in style.layers}
    assert by["Parcels"].path == str((root / "data" / "county.gdb").resolve())
    assert by["Parcels"].layer == "parcels"
    assert by["Parcels"].where == "STATUS <> 'RETIRED'"
    assert by["Parcels"].attributes == ("OWNER", "ZONING")
    assert by["Roads"].path == str((root / "data" / "roads.gpkg").resolve())
    assert by["Roads"].layer == "roads"  # "main.roads" in the map
    assert set(style.layer_digests) == {"Roads", "Parcels"}
    assert any("Hillshade" in n for n in style.notes)


def test_scale_ranges_give_the_levels_arcgis_draws(county, tmp_path: Path) -> None:
    root, _gen = county
    init_project(tmp_path / "p", map_path=root / "County.aprx", levels="10-21")
    project = load_project(tmp_path / "p")
    vis = visible_levels(project.style, project.scheme, project.levels)
    scales = {lv: project.scheme.lod(lv).scale for lv in project.levels}
    # independent oracle: ArcGIS draws Roads where 1,000 <= scale <= 50,000
    assert vis["Roads"] == [lv for lv, s in scales.items() if 1000 <= s <= 50000]
    assert vis["Roads"] == [14, 15, 16, 17, 18, 19]
    assert vis["Parcels"] == list(range(10, 22))
    # the label class (minimumScale 20,000) is a rule with its own range
    sd15 = mapnik_scale_denominator(project.scheme, 15)
    root_xml = ET.fromstring(project.style.xml_without_datasources)
    maxes = [float(e.text or 0) for e in root_xml.iter("MaxScaleDenominator")]
    # ArcGIS's scale counts 96 dpi of 1/39.37 m; Mapnik's 0.28 mm pixels
    assert any(abs(m - 20000 / (39.37 * 96 * 0.00028)) < 1e-3 for m in maxes), maxes
    assert sd15 < min(maxes)


def test_a_mapnik_reader_loads_the_translation(county, tmp_path: Path) -> None:
    mapnik = pytest.importorskip("mapnik", reason="the preview needs the render extra")
    root, _gen = county
    style = load_pro_map(root / "County.aprx")
    m = mapnik.Map(256, 256)
    mapnik.load_map_from_string(m, style.xml_without_datasources, True, str(root))
    assert [lyr.name for lyr in m.layers] == ["Parcels", "Roads"]  # bottom first
    assert m.layers[1].maximum_scale_denominator == pytest.approx(50000 / (39.37 * 96 * 0.00028))


# --- real layer files ---------------------------------------------------------------------------


def test_every_real_layer_file_parses() -> None:
    folder = shared_path("data", "arcgis_pro")
    files = sorted(folder.rglob("*.lyrx"))
    assert len(files) >= 8
    seen = {}
    for f in files:
        pro = read_pro_map(f)
        assert pro.layers.feature, f
        for lyr in pro.layers.feature:
            seen[lyr.name] = lyr
    assert seen["Cities"].fields == {"SCALERANK", "ADM0CAP", "NAME"}  # UV + VBScript label
    assert seen["Cities"].source.factory == "Shapefile"
    assert seen["FlowLines"].fields == {"CalculatedFlow"}
    assert seen["FlowLines"].source.factory == "FileGDB"
    assert seen["Fire_Stations"].source.dataset == "Fire_Stations"


def test_real_layer_file_with_missing_data_names_the_layer_and_path() -> None:
    lyrx = shared_path("data", "arcgis_pro", "esri_pro_sdk_samples", "FlowLines.lyrx")
    with pytest.raises(StyleError) as exc:
        load_pro_map(lyrx)
    msg = str(exc.value)
    assert "'FlowLines'" in msg and "Electric Utility Network Foundation.gdb" in msg
    assert 'source = "' in msg and "\n" not in msg


# --- expressions ----------------------------------------------------------------------------------


def test_expression_fields() -> None:
    assert arcade_fields('$feature.NAME + " " + $feature["Suffix"]') == {"NAME", "Suffix"}
    assert arcade_fields("DomainName($feature, 'ZONE')") == {"ZONE"}
    assert arcade_fields("var f = 'NAME'; return $feature[f]") is None
    assert arcade_fields("Count(FeatureSetByName($map, 'x'))") is None
    assert bracket_fields('[NAME] & " " & [TYPE]') == {"NAME", "TYPE"}
    assert bracket_fields("def FindLabel ( [OWNER] ):\n  return [OWNER]") == {"OWNER"}
    assert sql_fields("\"SCALERANK\" = 0 AND ADM0CAP IN (1, 2) AND NAME LIKE 'A%'") == {
        "SCALERANK",
        "ADM0CAP",
        "NAME",
    }
    assert sql_fields("UPPER(t.OWNER) = 'X' AND D > date '2020-01-01'") == {"OWNER", "D"}


def test_where_translation_is_applied_by_gdal(tmp_path: Path) -> None:
    gdb = tmp_path / "c.gdb"
    write_parcels(gdb)
    where = translate_where("[STATUS] <> 'RETIRED' AND PID BETWEEN 1 AND 5", "ogr")
    _m, _f, geoms, _v = pyogrio.raw.read(str(gdb), layer="parcels", where=where)
    assert len(geoms) == 5
    with pytest.raises(SqlError, match="UPPER"):
        translate_where("UPPER(OWNER) = 'X'", "ogr")
    assert translate_where("UPPER(OWNER) = 'X'", "sqlite") == "UPPER ( OWNER ) = 'X'"


# --- a project from the map, end to end ----------------------------------------------------


def test_drawn_field_edits_are_changes_undrawn_are_not(county, tmp_path: Path) -> None:
    root, _gen = county
    init_project(tmp_path / "p", map_path=root / "County.aprx", levels=LEVELS)
    project = load_project(tmp_path / "p")
    layers = read_layers(project)
    assert len(layers["Parcels"]) == 8  # the definition query drops the retired parcel
    record_build(project, layers, project.levels, kind="arcgis-baseline", target="arcgis")

    write_parcels(root / "data" / "county.gdb", notes=[f"edited {i}" for i in range(9)])
    ch = detect_changes(load_project(tmp_path / "p"), target="arcgis")
    assert not ch.any  # NOTES is not drawn

    zoning = ["R1", "R2", "C1"] * 3
    zoning[4] = "C1"  # parcel 4: R2 -> C1, a class the renderer draws in another colour
    write_parcels(root / "data" / "county.gdb", zoning=zoning)
    project = load_project(tmp_path / "p")
    ch = detect_changes(project, target="arcgis")
    # no key field: the edited parcel is matched by content (one out, one in, same place)
    c = ch.layers["Parcels"]
    assert (c.added, c.deleted) == (1, 1) and ch.rebuild is None and not ch.layers["Roads"].changed
    boxes = ch.boxes()
    areas = level_areas(project, project.scheme, boxes, project.levels)
    edited = shapely.box(X0 + 400, Y0 + 400, X0 + 700, Y0 + 700)
    assert set(areas) == set(project.levels)
    assert all(a.covers(edited) for a in areas.values())


def test_symbology_edit_rebuilds_that_layers_levels_only(county, tmp_path: Path) -> None:
    root, gen = county
    init_project(tmp_path / "p", map_path=root / "County.aprx", levels=LEVELS)
    project = load_project(tmp_path / "p")
    layers = read_layers(project)
    (project.cache_path).mkdir(parents=True)
    record_build(project, layers, project.levels, kind="seed")
    assert not detect_changes(project).any

    write_aprx(root / "County.aprx", gen, road_width=4.0)  # Roads: a wider stroke
    project = load_project(tmp_path / "p")
    ch = detect_changes(project)
    assert ch.rebuild is None and sorted(ch.restyled) == ["Roads"]
    assert ch.as_dict()["restyled"] == ["Roads"]
    plan = update_plan(project, ch, read_layers(project))
    assert sorted(plan.levels) == [14, 15, 16]  # where Roads draws; not 13
    # exactly the meta-tiles the roads (old = new places) reach with their buffer
    meta = project.settings.metatile
    for level, mts in plan.levels.items():
        pad = query_pad(project.scheme, level, project.style.layer("Roads").buffer_size or 0)
        want = metatiles_for_boxes(project.scheme, level, layers["Roads"].bounds, pad, meta)
        assert {tuple(m) for m in mts.tolist()} == {tuple(m) for m in want.tolist()}
    # the status line names the layer
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "status", "--project", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "Roads: its symbology" in out.stdout


def test_sde_layer_needs_a_mapping_then_uses_it(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")
    write_aprx(root / "County.aprx", "2.x", extra_map=True)
    with pytest.raises(StyleError) as exc:
        load_pro_map(root / "County.aprx", "Assessor")
    msg = str(exc.value)
    assert "'Taxlots'" in msg and "enterprise geodatabase" in msg and "county.DBO.taxlots" in msg
    assert '[layers."Taxlots"] source = ' in msg
    assert "secret" not in msg and "gisadmin" not in msg  # no connection details
    # a FileGDB copy of the enterprise layer
    copy_gdb = tmp_path / "exports" / "county.gdb"
    copy_gdb.parent.mkdir()
    boxes = [shapely.box(X0, Y0, X0 + 100, Y0 + 100)]
    write(
        str(copy_gdb),
        np.array(shapely.to_wkb(boxes), dtype=object),
        [np.array([5.0]), np.array([1.0]), np.array(["x"], dtype=object)],
        ["ASSESSED", "ACRES", "OTHER"],
        driver="OpenFileGDB",
        layer="taxlots",
        geometry_type="Polygon",
        crs="EPSG:3857",
    )
    init_project(
        tmp_path / "p",
        map_path=root / "County.aprx",
        map_name="Assessor",
        layer_sources={"Taxlots": str(copy_gdb / "taxlots")},
        levels=LEVELS,
    )
    project = load_project(tmp_path / "p")
    src = project.style.layer("Taxlots")
    assert src.path == str(copy_gdb.resolve()) and src.layer == "taxlots"
    assert src.attributes == ("ACRES", "ASSESSED")  # class breaks field + normalisation
    assert len(read_layers(project)["Taxlots"]) == 1


# --- bad input: one line, non-zero exit, nothing written ----------------------------------------


def run_init(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "init", str(tmp_path / "new"), *args],
        capture_output=True,
        text=True,
    )


def assert_refused(out: subprocess.CompletedProcess, tmp_path: Path, *words: str) -> None:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / "new").exists()


def test_bad_maps_are_refused_in_one_line(county, tmp_path: Path) -> None:
    root, gen = county
    not_zip = tmp_path / "Not.aprx"
    not_zip.write_text("hello")
    assert_refused(
        run_init(tmp_path, "--map", str(not_zip)), tmp_path, "zip archive, this file is not one"
    )

    damaged = tmp_path / "Damaged.aprx"
    raw = (root / "County.aprx").read_bytes()
    damaged.write_bytes(raw[: len(raw) // 2])
    assert_refused(run_init(tmp_path, "--map", str(damaged)), tmp_path, "Damaged.aprx")

    corrupt = tmp_path / "Corrupt.aprx"
    data = bytearray(raw)
    with zipfile.ZipFile(root / "County.aprx") as zf:
        info = zf.getinfo("map/parcels." + ("xml" if gen == "2.x" else "json"))
    start = info.header_offset + 30 + len(info.filename) + 10
    data[start : start + 40] = b"\x00" * 40
    corrupt.write_bytes(bytes(data))
    assert_refused(run_init(tmp_path, "--map", str(corrupt)), tmp_path, "damaged")

    assert_refused(
        run_init(tmp_path, "--map", str(root / "County.aprx"), "--map-name", "Nope"),
        tmp_path,
        "'Nope'",
        "'County'",
    )


def test_several_maps_need_a_name(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")
    write_aprx(root / "County.aprx", "3.x", extra_map=True)
    out = run_init(tmp_path, "--map", str(root / "County.aprx"))
    assert_refused(out, tmp_path, "'County'", "'Assessor'", "--map-name")
    out = run_init(tmp_path, "--map", str(root / "County.aprx"), "--map-name", "Assessor")
    assert_refused(out, tmp_path, "'Taxlots'", "enterprise geodatabase")


def test_missing_data_names_the_layer_and_path(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_roads(root / "data" / "roads.gpkg")
    write_aprx(root / "County.aprx", "3.x", gdb="K:\\webmaps\\Basemap\\County.gdb")
    out = run_init(tmp_path, "--map", str(root / "County.aprx"))
    assert_refused(out, tmp_path, "'Parcels'", "K:/webmaps/Basemap/County.gdb", "source =")


def test_unappliable_definition_query(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")
    path = write_aprx(root / "County.aprx", "3.x")
    with zipfile.ZipFile(path) as zf:
        docs = {n: zf.read(n) for n in zf.namelist()}
    parcels = json.loads(docs["map/parcels.json"])
    parcels["featureTable"]["definitionExpression"] = "EXTRACT(YEAR FROM CURRENT_DATE) > 2000"
    docs["map/parcels.json"] = json.dumps(parcels).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in docs.items():
            zf.writestr(n, b)
    out = run_init(tmp_path, "--map", str(path))
    assert_refused(out, tmp_path, "'Parcels'", "definition query", "CURRENT_DATE")


def test_mapx_reads_like_the_aprx(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")
    write_aprx(root / "County.aprx", "3.x")
    docs = county_documents("json")
    mdef = copy.deepcopy(docs["map/map.json"])
    defs = [d for k, d in docs.items() if k not in ("map/map.json", "GISProject.json")]
    mapx = root / "County.mapx"
    mapx.write_text(
        json.dumps({"type": "CIMMapDocument", "mapDefinition": mdef, "layerDefinitions": defs})
    )
    pro = read_pro_map(mapx)
    assert [lyr.name for lyr in pro.layers.feature] == ["Roads", "Parcels"]
    assert load_pro_map(mapx).layer_digests == load_pro_map(root / "County.aprx").layer_digests


def test_fields_and_notes_follow_what_the_map_draws(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_parcels(root / "data" / "county.gdb")
    write_roads(root / "data" / "roads.gpkg")

    def edit(docs: dict, ext: str) -> None:
        parcels = docs[f"map/parcels.{ext}"]
        parcels["labelClasses"][0].update(
            expression="[owner]", expressionEngine="Python", whereClause='"PID" > 2'
        )
        parcels["renderer"]["visualVariables"] = [
            {
                "type": "CIMRotationVisualVariable",
                "visualVariableInfoZ": {
                    "type": "CIMVisualVariableInfo",
                    "valueExpressionInfo": {
                        "type": "CIMExpressionInfo",
                        "expression": "$feature.NOTES",
                    },
                },
            }
        ]
        roads = docs[f"map/roads.{ext}"]
        roads["renderer"] = {"type": "CIMHeatMapRenderer", "weightField": "SPEED"}
        docs[f"map/transport.{ext}"]["visibility"] = False  # the group is off: Roads too

    write_aprx(root / "County.aprx", "3.x", edit=edit)
    pro = read_pro_map(root / "County.aprx")
    assert [lyr.name for lyr in pro.layers.feature] == ["Parcels"]
    assert "layer 'Transport/Roads': feature layer turned off" in pro.layers.other[0].line()
    (parcels,) = pro.layers.feature
    assert parcels.fields == {"ZONING", "owner", "PID", "NOTES"}
    # the data spells it OWNER: matched without regard to case, as ArcGIS does
    project_dir = tmp_path / "p"
    init_project(project_dir, map_path=root / "County.aprx", levels=LEVELS)
    data = read_layers(load_project(project_dir))["Parcels"]
    assert sorted(data.attrs) == ["NOTES", "OWNER", "PID", "ZONING"]

    def unknown(docs: dict, ext: str) -> None:
        docs[f"map/parcels.{ext}"]["renderer"] = {"type": "CIMDictionaryRenderer"}

    write_aprx(root / "County.aprx", "3.x", edit=unknown)
    style = load_pro_map(root / "County.aprx")
    assert style.layer("Parcels").attributes == ("*",)
    lines = [n for n in style.notes if "every field" in n]
    assert len(lines) == 1 and "'Parcels'" in lines[0] and "CIMDictionaryRenderer" in lines[0]
    init_project(tmp_path / "q", map_path=root / "County.aprx", levels=LEVELS)
    data = read_layers(load_project(tmp_path / "q"))["Parcels"]
    assert sorted(data.attrs) == ["NOTES", "OWNER", "PID", "STATUS", "ZONING"]


def test_every_unreadable_layer_is_named_at_once(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "data").mkdir(parents=True)
    write_aprx(root / "County.aprx", "2.x", gdb="\\\\gisfs\\data\\County.gdb")
    with pytest.raises(StyleError) as exc:
        load_pro_map(root / "County.aprx")
    msg = str(exc.value)
    assert msg.startswith("2 layers cannot be used") and "\n" not in msg
    assert "'Parcels'" in msg and "\\\\gisfs\\data\\County.gdb" in msg and "'Roads'" in msg


def test_data_paths_match_without_regard_to_case(tmp_path: Path) -> None:
    root = tmp_path / "gis"
    (root / "Data").mkdir(parents=True)
    write_parcels(root / "Data" / "County.gdb")
    write_roads(root / "Data" / "roads.gpkg")
    write_aprx(root / "County.aprx", "2.x", gdb="DATA\\county.gdb", gpkg="data\\ROADS.gpkg")
    style = load_pro_map(root / "County.aprx")
    assert style.layer("Parcels").path == str(root / "Data" / "County.gdb")
    assert style.layer("Roads").path == str(root / "Data" / "roads.gpkg")


def test_scale_ranges_in_a_feet_scheme_include_their_bounds(county, tmp_path: Path) -> None:
    """Oregon State Plane North (US feet): ArcGIS scales are not Mapnik's 0.28 mm ones
    there (a factor 3.1, not 0.945); a LOD at exactly 1:50,000 draws a layer whose
    minScale is 50,000 (ArcGIS includes the bound)."""
    root, _gen = county
    scheme = Path(__file__).resolve().parents[1] / "examples" / "schemes" / "oregon_north_2913.json"
    init_project(tmp_path / "p", map_path=root / "County.aprx", levels="0-11", scheme=str(scheme))
    project = load_project(tmp_path / "p")
    vis = visible_levels(project.style, project.scheme, project.levels)
    scales = {lv: project.scheme.lod(lv).scale for lv in project.levels}
    assert scales[5] == 50000.0
    assert vis["Roads"] == [lv for lv, s in scales.items() if 1000 <= s <= 50000]
    assert vis["Roads"] == [5, 6, 7, 8, 9, 10]
    assert vis["Parcels"] == project.levels


def test_map_info_lists_layers_without_their_data(tmp_path: Path) -> None:
    """``map-info`` lists what is read even where no data is (enterprise layers included)."""
    write_aprx(tmp_path / "County.aprx", "2.x", extra_map=True)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiledelta.cli",
            "map-info",
            str(tmp_path / "County.aprx"),
            "--map-name",
            "Assessor",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "layer 'Taxlots': an enterprise geodatabase (dataset county.DBO.taxlots)" in out.stdout
    assert '[layers."Taxlots"] source = "exports/data.gdb/taxlots"' in out.stdout
    assert "secret" not in out.stdout and "gisadmin" not in out.stdout
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiledelta.cli",
            "map-info",
            str(tmp_path / "County.aprx"),
            "--map-name",
            "County",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    info = json.loads(out.stdout)
    assert info["maps"] == ["County", "Assessor"] and info["generation"] == "Pro 2.x CIM XML"
    roads = next(lyr for lyr in info["layers"] if lyr["name"] == "Roads")
    assert roads["scale_range"] == {"min_scale": 50000.0, "max_scale": 1000.0}
    assert roads["labels"] == [
        {
            "name": "Names",
            "expression": "[NAME]",
            "engine": "VBScript",
            "where": None,
            "min_scale": None,
            "max_scale": None,
        }
    ]
    parcels = next(lyr for lyr in info["layers"] if lyr["name"] == "Parcels")
    assert parcels["labels"][0]["expression"] == "$feature.OWNER"
    assert parcels["labels"][0]["min_scale"] == 20000.0
    assert parcels["definition_query"] == "STATUS <> 'RETIRED'"
    assert [o["name"] for o in info["other"]] == ["Street Anno", "Hillshade"]


def test_mappings_are_checked(county, tmp_path: Path) -> None:
    root, _gen = county
    init_project(tmp_path / "p", map_path=root / "County.aprx", levels=LEVELS)
    toml = tmp_path / "p" / "tiledelta.toml"
    text = toml.read_text()
    toml.write_text(text + '\n[layers."Parcel"]\nsource = "x.gdb/parcels"\n')
    with pytest.raises(StyleError, match=r"\[layers.\"Parcel\"\] maps a layer .* 'Parcels'"):
        load_project(tmp_path / "p").style  # noqa: B018
    # a where clause of one's own replaces the map's definition query
    toml.write_text(text + '\n[layers."Parcels"]\nwhere = "PID < 3"\n')
    assert len(read_layers(load_project(tmp_path / "p"))["Parcels"]) == 3
    # a Mapnik style takes no mapping
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "status", "--project", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    toml.write_text('style = "s.xml"\n[layers.a]\nsource = "x.gpkg"\n')
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "status", "--project", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "source/layer/where map a Pro map" in out.stderr
