"""A county .aprx written the way ArcGIS Pro 2.8 writes one, by a generator of its own.

Independent of ``test_pro_maps``'s fixtures (which turn CIM JSON into XML): the documents
here are written as Pro 2.x serialises CIM XML — a UTF-8 BOM and XML declaration, the
``typens`` namespace of 2.8.0, ``xsi:type`` on every object and array, booleans written
``true``/``false`` and omitted when false, ``MinScale``/``MaxScale`` only when set,
``CIMPATH=`` layer URIs in ``map/`` (member names lower case with underscores, one URL-
escaped), a ``GISProject.xml`` listing the maps under ``ProjectItems``, ``DocumentInfo.xml``
and a layout beside them, Windows paths relative to the project (``DATABASE=.\\Data\\...``)
and SQL Server enterprise connections with an encrypted password. Element names, nesting
and the connection-string keys follow Esri/cim-spec (v2) and the CIM samples of the Pro
SDK; see docs/pro-maps.md ("Checked against").

The map has ten layers of every kind a county basemap holds: parcels (FileGDB, unique
values, a VBScript label with its own scale range), roads (SDE, class breaks, an Arcade
label), buildings (SDE, simple), address points (shapefile, a definition query), a group
with a scale range holding hydrants and an invisible water-mains layer, a raster, an
annotation, a dimension and a tiled basemap service layer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
import shapely
from pyogrio.raw import write

from tiledelta.api import load_project
from tiledelta.change import detect_changes
from tiledelta.config import LayerConfig
from tiledelta.errors import StyleError
from tiledelta.plan import visible_levels
from tiledelta.sources import read_layers
from tiledelta.style.cim import load_pro_map, read_pro_map

X0, Y0 = -13_776_000.0, 5_831_000.0  # Astoria, Oregon, in EPSG:3857
LEVELS = "13-16"  # ArcGIS scales 72,223.8 / 36,111.9 / 18,056.0 / 9,028.0
NS = (
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    'xmlns:typens="http://www.esri.com/schemas/ArcGIS/2.8.0"'
)
SDE_CONN = (
    "ENCRYPTED_PASSWORD=00022e684d4b4235766e4b6e324f5a4c5a3d3d2a00;"
    "SERVER=gisdb01;INSTANCE=sde:sqlserver:gisdb01\\gis;DBCLIENT=sqlserver;"
    "DB_CONNECTION_PROPERTIES=gisdb01\\gis;DATABASE=County;USER=gisviewer;"
    "VERSION=sde.DEFAULT;AUTHENTICATION_MODE=DBMS"
)


# --- data ------------------------------------------------------------------------------------


def _write(path: Path, layer: str, geoms: list, fields: dict, gtype: str, driver: str) -> None:
    names = list(fields)
    arrays = []
    for v in fields.values():
        arrays.append(np.array(v, dtype=np.int32 if isinstance(v[0], int) else object))
    write(
        str(path),
        np.array(shapely.to_wkb(geoms), dtype=object),
        arrays,
        names,
        driver=driver,
        layer=layer,
        geometry_type=gtype,
        crs="EPSG:3857",
    )


def parcel_boxes() -> list:
    return [
        shapely.box(
            X0 + 500 * (i % 4),
            Y0 + 500 * (i // 4),
            X0 + 500 * (i % 4) + 400,
            Y0 + 500 * (i // 4) + 400,
        )
        for i in range(12)
    ]


def write_parcels(gdb: Path, zone: list[str] | None = None, owner=None, notes=None) -> None:
    n = 12
    _write(
        gdb,
        "Parcels",
        parcel_boxes(),
        {
            "PARCEL_ID": [f"P{i:03d}" for i in range(n)],
            "ZONE": zone or ["R1", "R2", "C1", "I1"] * 3,
            "OWNER": owner or [f"Owner {i}" for i in range(n)],
            "NOTES": notes or [f"note {i}" for i in range(n)],
        },
        "MultiPolygon",
        "OpenFileGDB",
    )


def write_utilities(gdb: Path, notes: list[str] | None = None, main_y: float = 450) -> None:
    """Hydrants (drawn from 1:30,000 in, by their group) and Water Mains (turned off)."""
    pts = [shapely.Point(X0 + 450 + 500 * i, Y0 + 450) for i in range(3)]
    hyd = {"HYD_ID": [1, 2, 3], "NOTES": notes or ["a", "b", "c"]}
    _write(gdb, "Hydrants", pts, hyd, "Point", "OpenFileGDB")
    mains = [shapely.LineString([(X0, Y0 + main_y), (X0 + 2000, Y0 + main_y)])]
    _write(gdb, "WaterMains", mains, {"DIAMETER": [8]}, "LineString", "OpenFileGDB")


def write_address_points(folder: Path, status: list[str] | None = None, address=None, notes=None):
    folder.mkdir(parents=True, exist_ok=True)
    pts = [shapely.Point(X0 + 200 + 500 * (i % 4), Y0 + 200 + 500 * (i // 4)) for i in range(8)]
    _write(
        folder / "AddressPoints.shp",
        "AddressPoints",
        pts,
        {
            "ADDRESS": address or [f"{100 + i} Main St" for i in range(8)],
            "STATUS": status or ["Active"] * 7 + ["Retired"],
            "NOTES": notes or [f"n{i}" for i in range(8)],
        },
        "Point",
        "ESRI Shapefile",
    )


def write_sde_copy(
    gdb: Path, speed: list[int] | None = None, name=None, notes=None, bldg_type=None
) -> None:
    """The FileGDB copies of the two enterprise layers (Roads, Buildings)."""
    roads = [
        shapely.LineString([(X0 - 300, Y0 + 450 + 500 * i), (X0 + 2300, Y0 + 450 + 500 * i)])
        for i in range(3)
    ]
    _write(
        gdb,
        "Roads",
        roads,
        {
            "NAME": name or ["Marine Dr", "Exchange St", "Franklin Ave"],
            "SPEED": speed or [25, 35, 45],
            "NOTES": notes or ["x", "y", "z"],
        },
        "LineString",
        "OpenFileGDB",
    )
    blds = [shapely.box(X0 + 50 + 500 * i, Y0 + 50, X0 + 150 + 500 * i, Y0 + 150) for i in range(4)]
    _write(
        gdb,
        "Buildings",
        blds,
        {"BLDG_TYPE": bldg_type or ["house"] * 4, "NOTES": ["q"] * 4},
        "Polygon",
        "OpenFileGDB",
    )


# --- CIM XML as Pro 2.8 writes it --------------------------------------------------------------


def color(r: int, g: int, b: int) -> str:
    return (
        '<Color xsi:type="typens:CIMRGBColor"><Values xsi:type="typens:ArrayOfDouble">'
        f"<Double>{r}</Double><Double>{g}</Double><Double>{b}</Double><Double>100</Double>"
        "</Values></Color>"
    )


def stroke(width: float, rgb=(110, 110, 110)) -> str:
    return (
        '<CIMSymbolLayer xsi:type="typens:CIMSolidStroke"><Enable>true</Enable>'
        "<CapStyle>Round</CapStyle><JoinStyle>Round</JoinStyle>"
        "<LineStyle3D>Strip</LineStyle3D><MiterLimit>10</MiterLimit>"
        f"<Width>{width}</Width>{color(*rgb)}</CIMSymbolLayer>"
    )


def fill(rgb) -> str:
    return (
        '<CIMSymbolLayer xsi:type="typens:CIMSolidFill"><Enable>true</Enable>'
        f"{color(*rgb)}</CIMSymbolLayer>"
    )


def polygon_ref(rgb, outline: float = 0.7) -> str:
    return (
        '<Symbol xsi:type="typens:CIMSymbolReference"><Symbol xsi:type="typens:CIMPolygonSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{stroke(outline)}{fill(rgb)}</SymbolLayers></Symbol></Symbol>"
    )


def line_ref(width: float) -> str:
    return (
        '<Symbol xsi:type="typens:CIMSymbolReference"><Symbol xsi:type="typens:CIMLineSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{stroke(width, (156, 156, 156))}</SymbolLayers></Symbol></Symbol>"
    )


def marker_ref(size: float, wide: float = 1.0) -> str:
    """A circle vector marker; ``wide`` widens its frame (an ellipse)."""
    return (
        '<Symbol xsi:type="typens:CIMSymbolReference"><Symbol xsi:type="typens:CIMPointSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        '<CIMSymbolLayer xsi:type="typens:CIMVectorMarker"><Enable>true</Enable>'
        "<AnchorPointUnits>Relative</AnchorPointUnits><DominantSizeAxis3D>Z</DominantSizeAxis3D>"
        f"<Size>{size}</Size><BillboardMode3D>FaceNearPlane</BillboardMode3D>"
        f'<Frame xsi:type="typens:EnvelopeN"><XMin>{-2 * wide}</XMin><YMin>-2</YMin>'
        f"<XMax>{2 * wide}</XMax><YMax>2</YMax></Frame>"
        '<MarkerGraphics xsi:type="typens:ArrayOfCIMMarkerGraphic">'
        '<CIMMarkerGraphic xsi:type="typens:CIMMarkerGraphic">'
        '<Geometry xsi:type="typens:PolygonN"><HasID>false</HasID><HasZ>false</HasZ>'
        "<HasM>false</HasM>"
        '<RingArray xsi:type="typens:ArrayOfRing"><Ring xsi:type="typens:Ring">'
        '<PointArray xsi:type="typens:ArrayOfPoint">'
        '<Point xsi:type="typens:PointN"><X>0</X><Y>2</Y></Point>'
        '<Point xsi:type="typens:PointN"><X>2</X><Y>0</Y></Point>'
        '<Point xsi:type="typens:PointN"><X>0</X><Y>-2</Y></Point>'
        '<Point xsi:type="typens:PointN"><X>0</X><Y>2</Y></Point>'
        "</PointArray></Ring></RingArray></Geometry>"
        '<Symbol xsi:type="typens:CIMPolygonSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{stroke(0.7, (0, 0, 0))}{fill((255, 0, 0))}</SymbolLayers></Symbol>"
        "</CIMMarkerGraphic></MarkerGraphics>"
        "<ScaleSymbolsProportionally>true</ScaleSymbolsProportionally>"
        "<RespectFrame>true</RespectFrame></CIMSymbolLayer>"
        "</SymbolLayers><HaloSize>1</HaloSize><ScaleX>1</ScaleX>"
        "<AngleAlignment>Display</AngleAlignment></Symbol></Symbol>"
    )


def text_ref(height: float, halo: float = 1.0) -> str:
    return (
        '<TextSymbol xsi:type="typens:CIMSymbolReference"><Symbol xsi:type="typens:CIMTextSymbol">'
        "<BlockProgression>TTB</BlockProgression><Depth3D>1</Depth3D>"
        "<ExtrapolateBaselines>true</ExtrapolateBaselines><FontEffects>Normal</FontEffects>"
        "<FontEncoding>Unicode</FontEncoding><FontFamilyName>Tahoma</FontFamilyName>"
        "<FontStyleName>Regular</FontStyleName><FontType>Unspecified</FontType>"
        "<GlyphRotation>0</GlyphRotation>"
        '<HaloSymbol xsi:type="typens:CIMPolygonSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{fill((255, 255, 255))}</SymbolLayers></HaloSymbol>"
        f"<HaloSize>{halo}</HaloSize><Height>{height}</Height>"
        "<HorizontalAlignment>Center</HorizontalAlignment><KerningOff>true</KerningOff>"
        "<LineGapType>ExtraLeading</LineGapType>"
        '<Symbol xsi:type="typens:CIMPolygonSymbol">'
        '<SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{fill((0, 0, 0))}</SymbolLayers></Symbol>"
        "<TextCase>Normal</TextCase><TextDirection>LTR</TextDirection>"
        "<VerticalAlignment>Bottom</VerticalAlignment><VerticalGlyphOrientation>Right"
        "</VerticalGlyphOrientation><WordSpacing>100</WordSpacing>"
        "<BillboardMode3D>FaceNearPlane</BillboardMode3D></Symbol></TextSymbol>"
    )


def label_class(
    name: str, expr: str, engine: str, height: float, min_scale: float = 0, where: str = ""
) -> str:
    return (
        '<CIMLabelClass xsi:type="typens:CIMLabelClass">'
        f"<Expression>{escape(expr)}</Expression>"
        f"<ExpressionEngine>{engine}</ExpressionEngine>"
        f"<ExpressionTitle>Custom</ExpressionTitle>"
        "<FeaturesToLabel>AllVisibleFeatures</FeaturesToLabel>"
        '<MaplexLabelPlacementProperties xsi:type="typens:CIMMaplexLabelPlacementProperties">'
        "<AlignLabelToLineDirection>true</AlignLabelToLineDirection>"
        "<FeatureType>Polygon</FeatureType><PrimaryOffset>1</PrimaryOffset>"
        "<PrimaryOffsetUnit>Point</PrimaryOffsetUnit>"
        "</MaplexLabelPlacementProperties>"
        + (f"<MinimumScale>{min_scale:g}</MinimumScale>" if min_scale else "")
        + f"<Name>{escape(name)}</Name><Priority>-1</Priority>"
        + text_ref(height)
        + "<UseCodedValue>true</UseCodedValue>"
        + (f"<WhereClause>{escape(where)}</WhereClause>" if where else "")
        + "<Visibility>true</Visibility></CIMLabelClass>"
    )


def connection(workspace: str, factory: str, dataset: str) -> str:
    return (
        '<DataConnection xsi:type="typens:CIMStandardDataConnection">'
        f"<WorkspaceConnectionString>{escape(workspace)}</WorkspaceConnectionString>"
        f"<WorkspaceFactory>{factory}</WorkspaceFactory>"
        f"<Dataset>{dataset}</Dataset><DatasetType>esriDTFeatureClass</DatasetType>"
        "</DataConnection>"
    )


def feature_layer(
    name: str,
    uri: str,
    conn: str,
    renderer: str,
    *,
    visible: bool = True,
    min_scale: float = 0,
    labels: str = "",
    definition: str = "",
) -> str:
    """A CIMFeatureLayer document (false booleans left out, as Pro does)."""
    defn = ""
    if definition:
        defn = (
            f"<DefinitionExpression>{escape(definition)}</DefinitionExpression>"
            "<DefinitionExpressionName>Query 1</DefinitionExpressionName>"
            '<DefinitionFilterChoices xsi:type="typens:ArrayOfCIMDefinitionFilter">'
            '<CIMDefinitionFilter xsi:type="typens:CIMDefinitionFilter"><Name>Query 1</Name>'
            f"<DefinitionExpression>{escape(definition)}</DefinitionExpression>"
            "</CIMDefinitionFilter></DefinitionFilterChoices>"
        )
    return (
        f'<CIMFeatureLayer xsi:type="typens:CIMFeatureLayer" {NS}>'
        f"<Name>{escape(name)}</Name><URI>{uri}</URI><SourceModifiedTime "
        'xsi:type="typens:TimeInstant" />'
        '<Metadata xsi:type="typens:CIMMetadata"><XMLDocument>&lt;?xml version="1.0"?&gt;'
        '&lt;metadata xml:lang="en"&gt;&lt;/metadata&gt;</XMLDocument></Metadata>'
        "<Description>" + escape(name) + "</Description>"
        "<Expanded>true</Expanded><LayerType>Operational</LayerType>"
        + (f"<MinScale>{min_scale:g}</MinScale>" if min_scale else "")
        + "<ShowLegends>true</ShowLegends><ShowPopups>true</ShowPopups>"
        + ("<Visibility>true</Visibility>" if visible else "")
        + "<DisplayCacheType>Permanent</DisplayCacheType><MaxDisplayCacheAge>5</MaxDisplayCacheAge>"
        '<PopupInfo xsi:type="typens:CIMPopupInfo"><FieldDescriptions '
        'xsi:type="typens:ArrayOfCIMPopupFieldDescription" /></PopupInfo>'
        "<ShowPopups>true</ShowPopups><AutoGenerateFeatureTemplates>true</AutoGenerateFeatureTemplates>"
        "<FeatureElevationExpression>0</FeatureElevationExpression>"
        '<FeatureTable xsi:type="typens:CIMFeatureTable">'
        f"<DisplayField>{'OWNER' if 'Parcel' in name else 'NOTES'}</DisplayField>"
        "<Editable>true</Editable>"
        '<FieldDescriptions xsi:type="typens:ArrayOfCIMFieldDescription">'
        '<CIMFieldDescription xsi:type="typens:CIMFieldDescription">'
        "<Alias>Notes</Alias><FieldName>NOTES</FieldName><Visible>true</Visible>"
        "</CIMFieldDescription></FieldDescriptions>"
        f"{conn}{defn}<StudyAreaSpatialRel>esriSpatialRelUndefined</StudyAreaSpatialRel>"
        "<SearchOrder>esriSearchOrderSpatial</SearchOrder></FeatureTable>"
        '<FeatureTemplates xsi:type="typens:ArrayOfCIMFeatureTemplate">'
        '<CIMFeatureTemplate xsi:type="typens:CIMFeatureTemplate"><Name>' + escape(name) + "</Name>"
        '<DefaultValues xsi:type="typens:PropertySet"><PropertyArray '
        'xsi:type="typens:ArrayOfPropertySetProperty"><PropertySetProperty '
        'xsi:type="typens:PropertySetProperty"><Key>NOTES</Key><Value xsi:type="xs:string">'
        "new</Value></PropertySetProperty></PropertyArray></DefaultValues>"
        "</CIMFeatureTemplate></FeatureTemplates>"
        '<HtmlPopupFormat xsi:type="typens:CIMHtmlPopupFormat"><HtmlUseCodedDomainValues>true'
        "</HtmlUseCodedDomainValues><HtmlPresentationStyle>TwoColumnTable"
        "</HtmlPresentationStyle></HtmlPopupFormat>"
        "<Selectable>true</Selectable>"
        '<SelectionSymbol xsi:type="typens:CIMSymbolReference"><Symbol '
        'xsi:type="typens:CIMPolygonSymbol"><SymbolLayers xsi:type="typens:ArrayOfCIMSymbolLayer">'
        f"{stroke(40, (0, 255, 255))}</SymbolLayers></Symbol></SelectionSymbol>"
        "<FeatureCacheType>Session</FeatureCacheType>"
        + (
            f'<LabelClasses xsi:type="typens:ArrayOfCIMLabelClass">{labels}</LabelClasses>'
            if labels
            else ""
        )
        + ("<LabelVisibility>true</LabelVisibility>" if labels else "")
        + renderer
        + "<Scaleable>true</Scaleable><SymbolLayerDrawing "
        'xsi:type="typens:CIMSymbolLayerDrawing" /><SnappingEnabled>true</SnappingEnabled>'
        "</CIMFeatureLayer>"
    )


def unique_values(field: str, zones: dict[str, tuple]) -> str:
    classes = "".join(
        '<CIMUniqueValueClass xsi:type="typens:CIMUniqueValueClass">'
        f"<Label>{z}</Label><Patch>Default</Patch>{polygon_ref(rgb)}"
        '<Values xsi:type="typens:ArrayOfCIMUniqueValue"><CIMUniqueValue '
        'xsi:type="typens:CIMUniqueValue"><FieldValues xsi:type="typens:ArrayOfString">'
        f"<String>{z}</String></FieldValues></CIMUniqueValue></Values>"
        "<Visible>true</Visible></CIMUniqueValueClass>"
        for z, rgb in zones.items()
    )
    return (
        '<Renderer xsi:type="typens:CIMUniqueValueRenderer">'
        '<ColorRamp xsi:type="typens:CIMRandomHSVColorRamp"><ColorSpace '
        'xsi:type="typens:SpatialReference"><WKID>104726</WKID></ColorSpace>'
        "<MaxH>360</MaxH><MinS>15</MinS><MaxS>30</MaxS><MinAlpha>100</MinAlpha>"
        "<MaxAlpha>100</MaxAlpha></ColorRamp>"
        f"<DefaultLabel>&lt;all other values&gt;</DefaultLabel>{polygon_ref((130, 130, 130))}"
        "<DefaultSymbolPatch>Default</DefaultSymbolPatch>"
        f'<Fields xsi:type="typens:ArrayOfString"><String>{field}</String></Fields>'
        '<Groups xsi:type="typens:ArrayOfCIMUniqueValueGroup">'
        '<CIMUniqueValueGroup xsi:type="typens:CIMUniqueValueGroup">'
        f'<Classes xsi:type="typens:ArrayOfCIMUniqueValueClass">{classes}</Classes>'
        f"<Heading>{field}</Heading></CIMUniqueValueGroup></Groups>"
        "<UseDefaultSymbol>true</UseDefaultSymbol>"
        "<PolygonSymbolColorTarget>Fill</PolygonSymbolColorTarget></Renderer>"
    )


def class_breaks(field: str) -> str:
    breaks = "".join(
        f'<CIMClassBreak xsi:type="typens:CIMClassBreak"><Label>{lo} - {hi}</Label>'
        f"<Patch>Default</Patch>{line_ref(w)}<UpperBound>{hi}</UpperBound></CIMClassBreak>"
        for lo, hi, w in ((0, 30, 1.5), (30, 40, 2.5), (40, 70, 4))
    )
    return (
        '<Renderer xsi:type="typens:CIMClassBreaksRenderer">'
        f'<BackgroundSymbol xsi:type="typens:CIMSymbolReference" />'
        f'<Breaks xsi:type="typens:ArrayOfCIMClassBreak">{breaks}</Breaks>'
        "<ClassBreakType>GraduatedSymbol</ClassBreakType>"
        "<ClassificationMethod>Manual</ClassificationMethod>"
        f"<Field>{field}</Field><MinimumBreak>0</MinimumBreak>"
        '<NumberFormat xsi:type="typens:CIMNumericFormat"><RoundingOption>esriRoundNumberOfDecimals'
        "</RoundingOption><RoundingValue>0</RoundingValue></NumberFormat>"
        "<ShowInAscendingOrder>true</ShowInAscendingOrder><Heading>Speed</Heading>"
        "<SampleSize>10000</SampleSize><DefaultSymbolPatch>Default</DefaultSymbolPatch>"
        "<NormalizationType>Nothing</NormalizationType>"
        "<ExclusionLabel>&lt;excluded&gt;</ExclusionLabel><ExclusionSymbol "
        'xsi:type="typens:CIMSymbolReference" /><UseExclusionSymbol>false</UseExclusionSymbol>'
        "<PolygonSymbolColorTarget>Fill</PolygonSymbolColorTarget></Renderer>"
    )


def simple(symbol: str) -> str:
    return (
        f'<Renderer xsi:type="typens:CIMSimpleRenderer"><Patch>Default</Patch>{symbol}</Renderer>'
    )


def other_layer(kind: str, name: str, uri: str, extra: str = "") -> str:
    return (
        f'<{kind} xsi:type="typens:{kind}" {NS}><Name>{escape(name)}</Name><URI>{uri}</URI>'
        "<Expanded>true</Expanded><LayerType>Operational</LayerType>"
        f"<ShowLegends>true</ShowLegends><Visibility>true</Visibility>{extra}</{kind}>"
    )


def strings(uris: list[str]) -> str:
    return "".join(f"<String>{u}</String>" for u in uris)


def county_members(sde_dataset_prefix: str = "County.GIS.") -> dict[str, str]:
    """The archive members of County.aprx (member name -> XML text)."""
    m: dict[str, str] = {}
    shp = r"DATABASE=.\Data\Shapefiles"
    gdb = r"DATABASE=.\Data\County.gdb"
    m["map/address_points.xml"] = feature_layer(
        "Address Points",
        "CIMPATH=map/address_points.xml",
        connection(shp, "Shapefile", "AddressPoints"),
        simple(marker_ref(6, wide=1.5)),
        min_scale=40000,
        definition="STATUS = 'Active'",
    )
    m["map/hydrants.xml"] = feature_layer(
        "Hydrants",
        "CIMPATH=map/hydrants.xml",
        connection(gdb, "FileGDB", "Hydrants"),
        simple(marker_ref(8)),
    )
    m["map/water_mains.xml"] = feature_layer(
        "Water Mains",
        "CIMPATH=map/water_mains.xml",
        connection(gdb, "FileGDB", "WaterMains"),
        simple(line_ref(2)),
        visible=False,
    )
    m["map/utilities.xml"] = (
        f'<CIMGroupLayer xsi:type="typens:CIMGroupLayer" {NS}><Name>Utilities</Name>'
        "<URI>CIMPATH=map/utilities.xml</URI><Expanded>true</Expanded>"
        "<LayerType>Operational</LayerType><MinScale>30000</MinScale>"
        "<ShowLegends>true</ShowLegends><Visibility>true</Visibility>"
        '<Layers xsi:type="typens:ArrayOfString">'
        + strings(["CIMPATH=map/hydrants.xml", "CIMPATH=map/water_mains.xml"])
        + "</Layers></CIMGroupLayer>"
    )
    m["map/roads.xml"] = feature_layer(
        "Roads",
        "CIMPATH=map/roads.xml",
        connection(SDE_CONN, "SDE", f"{sde_dataset_prefix}Roads"),
        class_breaks("SPEED"),
        labels=label_class("Street names", "$feature.NAME", "Arcade", 8),
    )
    m["map/buildings.xml"] = feature_layer(
        "Buildings",
        "CIMPATH=map/buildings.xml",
        connection(SDE_CONN, "SDE", f"{sde_dataset_prefix}Buildings"),
        simple(polygon_ref((200, 180, 160))),
        min_scale=20000,
    )
    m["map/parcels.xml"] = feature_layer(
        "Parcels",
        "CIMPATH=map/parcels.xml",
        connection(gdb, "FileGDB", "Parcels"),
        unique_values(
            "ZONE",
            {
                "R1": (255, 255, 190),
                "R2": (255, 211, 127),
                "C1": (255, 127, 127),
                "I1": (190, 190, 255),
            },
        ),
        min_scale=50000,
        labels=label_class("Owners", "[OWNER]", "VBScript", 9, min_scale=20000),
    )
    m["map/hillshade.xml"] = other_layer(
        "CIMRasterLayer",
        "Hillshade",
        "CIMPATH=map/hillshade.xml",
        '<DataConnection xsi:type="typens:CIMStandardDataConnection">'
        r"<WorkspaceConnectionString>DATABASE=.\Data\Rasters</WorkspaceConnectionString>"
        "<WorkspaceFactory>Raster</WorkspaceFactory><Dataset>hillshade.tif</Dataset>"
        "<DatasetType>esriDTAny</DatasetType></DataConnection>",
    )
    m["map/street_names_anno.xml"] = other_layer(
        "CIMAnnotationLayer", "Street Names Anno", "CIMPATH=map/street_names_anno.xml"
    )
    m["map/parcel dimensions.xml"] = other_layer(
        "CIMDimensionLayer", "Parcel Dimensions", "CIMPATH=map/parcel%20dimensions.xml"
    )
    m["map/world_topographic_map.xml"] = other_layer(
        "CIMTiledServiceLayer",
        "World Topographic Map",
        "CIMPATH=map/world_topographic_map.xml",
        '<ServiceConnection xsi:type="typens:CIMAGSServiceConnection"><ObjectName>'
        "World_Topo_Map</ObjectName><ObjectType>MapServer</ObjectType><URL>"
        "https://services.arcgisonline.com/ArcGIS/rest/services/World_Topo_Map/MapServer"
        "</URL></ServiceConnection>",
    )
    order = [
        "address_points",
        "utilities",
        "roads",
        "buildings",
        "parcels",
        "street_names_anno",
        "parcel%20dimensions",
        "hillshade",
        "world_topographic_map",
    ]
    m["map/map.xml"] = (
        f'<CIMMap xsi:type="typens:CIMMap" {NS}><Name>County Basemap</Name>'
        '<URI>CIMPATH=map/map.xml</URI><SourceModifiedTime xsi:type="typens:TimeInstant" />'
        "<MapType>Map</MapType><DefaultViewingMode>Map</DefaultViewingMode>"
        '<DefaultExtent xsi:type="typens:EnvelopeN"><XMin>-13778000</XMin><YMin>5829000</YMin>'
        "<XMax>-13772000</XMax><YMax>5834000</YMax></DefaultExtent>"
        '<Layers xsi:type="typens:ArrayOfString">'
        + strings([f"CIMPATH=map/{u}.xml" for u in order])
        + "</Layers>"
        '<SpatialReference xsi:type="typens:ProjectedCoordinateSystem"><WKT>PROJCS["WGS_1984_Web'
        '_Mercator_Auxiliary_Sphere"]</WKT><WKID>102100</WKID><LatestWKID>3857</LatestWKID>'
        "</SpatialReference><Basemap>World Topographic Map</Basemap>"
        + color(255, 255, 255)
        .replace("<Color ", "<BackgroundColor ")
        .replace("</Color>", "</BackgroundColor>")
        + "</CIMMap>"
    )
    m["layout/layout.xml"] = (
        f'<CIMLayout xsi:type="typens:CIMLayout" {NS}><Name>Layout</Name>'
        "<URI>CIMPATH=layout/layout.xml</URI></CIMLayout>"
    )
    m["GISProject.xml"] = (
        f'<CIMGISProject xsi:type="typens:CIMGISProject" {NS}>'
        '<ProjectItems xsi:type="typens:ArrayOfCIMProjectItem">'
        '<CIMProjectItem xsi:type="typens:CIMProjectItem"><CatalogPath>CIMPATH=map/map.xml'
        "</CatalogPath><ItemType>Map</ItemType><Name>County Basemap</Name></CIMProjectItem>"
        '<CIMProjectItem xsi:type="typens:CIMProjectItem"><CatalogPath>CIMPATH=layout/layout.xml'
        "</CatalogPath><ItemType>Layout</ItemType><Name>Layout</Name></CIMProjectItem>"
        '<CIMProjectItem xsi:type="typens:CIMProjectItem"><CatalogPath>'
        r"K:\webmaps\Basemap\County.gdb</CatalogPath><ItemType>FileGDB</ItemType>"
        "<Name>County.gdb</Name></CIMProjectItem></ProjectItems>"
        '<ProjectSettings xsi:type="typens:CIMProjectSettings"><HomeFolder>'
        r"K:\webmaps\Basemap</HomeFolder></ProjectSettings></CIMGISProject>"
    )
    m["DocumentInfo.xml"] = (
        f'<CIMDocumentInfo xsi:type="typens:CIMDocumentInfo" {NS}>'
        "<DocumentTitle>County</DocumentTitle><UseRelativePath>true</UseRelativePath>"
        "</CIMDocumentInfo>"
    )
    return m


def write_county_aprx(
    path: Path, members: dict[str, str] | None = None, utf16: tuple[str, ...] = ()
) -> Path:
    """County.aprx: each member UTF-8 with a BOM and an XML declaration, as .NET writes
    (the members named in ``utf16`` as UTF-16, .NET's other default)."""
    members = members or county_members()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            if name in utf16:
                body = '<?xml version="1.0" encoding="utf-16"?>\r\n' + text
                zf.writestr(name, body.encode("utf-16"))
                continue
            body = '<?xml version="1.0" encoding="utf-8"?>\r\n' + text
            zf.writestr(name, b"\xef\xbb\xbf" + body.encode("utf-8"))
        zf.writestr("Index/ThumbnailImage.png", b"\x89PNG\r\n\x1a\n")
    return path


@pytest.fixture
def county(tmp_path: Path) -> Path:
    """K:\\webmaps\\Basemap as copied to this machine: County.aprx, its data, and FileGDB
    copies of the enterprise layers in exports/."""
    root = tmp_path / "Basemap"
    (root / "Data").mkdir(parents=True)
    write_parcels(root / "Data" / "County.gdb")
    write_utilities(root / "Data" / "County.gdb")
    write_address_points(root / "Data" / "Shapefiles")
    (root / "exports").mkdir()
    write_sde_copy(root / "exports" / "sde_copy.gdb")
    write_county_aprx(root / "County.aprx")
    return root


MAPPINGS = ("Roads=exports/sde_copy.gdb/Roads", "Buildings=exports/sde_copy.gdb/Buildings")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", *args], capture_output=True, text=True, cwd=cwd
    )


# --- listing ---------------------------------------------------------------------------------


def test_map_info_lists_layers_scales_and_labels(county: Path) -> None:
    out = cli("map-info", str(county / "County.aprx"), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["map"] == "County Basemap" and info["generation"] == "Pro 2.x CIM XML"
    layers = {lyr["name"]: lyr for lyr in info["layers"]}
    # top of the Contents pane first; the invisible Water Mains is not drawn
    assert list(layers) == ["Address Points", "Hydrants", "Roads", "Buildings", "Parcels"]
    scales = {
        n: (v["scale_range"]["min_scale"], v["scale_range"]["max_scale"]) for n, v in layers.items()
    }
    assert scales == {
        "Address Points": (40000, None),
        "Hydrants": (30000, None),  # the group's range
        "Roads": (None, None),
        "Buildings": (20000, None),
        "Parcels": (50000, None),
    }
    assert layers["Parcels"]["labels"] == [
        {
            "name": "Owners",
            "expression": "[OWNER]",
            "engine": "VBScript",
            "where": None,
            "min_scale": 20000,
            "max_scale": None,
        }
    ]
    assert [(lc["expression"], lc["engine"]) for lc in layers["Roads"]["labels"]] == [
        ("$feature.NAME", "Arcade")
    ]
    assert layers["Parcels"]["fields"] == ["OWNER", "ZONE"]
    assert layers["Roads"]["fields"] == ["NAME", "SPEED"]
    assert layers["Buildings"]["fields"] == [] and layers["Hydrants"]["fields"] == []
    assert layers["Address Points"]["fields"] == []
    assert layers["Address Points"]["definition_query"] == "STATUS = 'Active'"
    assert layers["Parcels"]["source"]["factory"] == "FileGDB"
    assert layers["Address Points"]["source"]["factory"] == "Shapefile"
    for name in ("Roads", "Buildings"):
        src = layers[name]["source"]
        assert src["factory"] == "SDE" and not src["readable_here"] and src["workspace"] is None
    other = {o["name"]: o["reason"] for o in info["other"]}
    assert other == {
        "Utilities/Water Mains": "feature layer turned off in the map (not drawn)",
        "Street Names Anno": "annotation layer",
        "Parcel Dimensions": "dimension layer",
        "Hillshade": "raster layer",
        "World Topographic Map": "tile service layer",
    }
    # the text form names the same things, and never the connection's secrets
    text = cli("map-info", str(county / "County.aprx"))
    assert text.returncode == 0, text.stderr
    for words in (
        "'Parcels'",
        "[OWNER] (VBScript, out beyond 1:20,000",
        "1:50,000",
        "$feature.NAME",
    ):
        assert words in text.stdout, words
    for secret in ("ENCRYPTED_PASSWORD", "00022e68", "gisviewer", "gisdb01"):
        assert secret not in text.stdout + out.stdout


def test_the_wide_marker_and_labels_give_the_buffers(county: Path) -> None:
    """Buffers from the XML symbols: the marker frame 1.5 times as wide as tall widens it."""
    pro = read_pro_map(county / "County.aprx")
    buf = {lyr.name: lyr.buffer_px for lyr in pro.layers.feature}
    # address point: 6 pt marker, frame 6x4 -> 3 * 1.5 * sqrt2 + outline 0.35 + halo 1
    assert buf["Address Points"] == int(np.ceil((3 * 1.5 * 2**0.5 + 0.35 + 1) * 96 / 72)) + 1
    # hydrant: 8 pt round marker -> 4 * sqrt2 + 0.35 + 1
    assert buf["Hydrants"] == int(np.ceil((4 * 2**0.5 + 0.35 + 1) * 96 / 72)) + 1
    # parcels: a 9 pt label, 1 pt halo, 1 pt Maplex offset
    assert buf["Parcels"] == int(np.ceil((9 + 1 + 1) * 96 / 72)) + 1


def test_scale_ranges_give_the_levels(county: Path, tmp_path: Path) -> None:
    out = cli(
        "init",
        str(tmp_path / "p"),
        "--map",
        str(county / "County.aprx"),
        "--levels",
        LEVELS,
        *[a for m in MAPPINGS for a in ("--layer-source", m)],
        cwd=county,
    )
    assert out.returncode == 0, out.stderr
    project = load_project(tmp_path / "p")
    # ArcGIS scales: 13 = 72,224, 14 = 36,112, 15 = 18,056, 16 = 9,028
    assert visible_levels(project.style, project.scheme, project.levels) == {
        "Address Points": [14, 15, 16],
        "Hydrants": [15, 16],
        "Roads": [13, 14, 15, 16],
        "Buildings": [15, 16],
        "Parcels": [14, 15, 16],
    }


# --- enterprise sources ---------------------------------------------------------------------


def test_enterprise_layers_are_reported_with_the_mapping_advice(
    county: Path, tmp_path: Path
) -> None:
    out = cli(
        "init", str(tmp_path / "new"), "--map", str(county / "County.aprx"), "--levels", LEVELS
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    for words in (
        "'Roads'",
        "'Buildings'",
        "enterprise geodatabase",
        "County.GIS.Roads",
        "County.GIS.Buildings",
        '[layers."Roads"] source = ',
        '[layers."Buildings"] source = ',
    ):
        assert words in line, words
    for secret in ("ENCRYPTED_PASSWORD", "00022e68", "gisviewer", "gisdb01", "sqlserver"):
        assert secret not in out.stderr + out.stdout
    assert not (tmp_path / "new").exists()
    # one mapping only: the other layer is still named, still nothing written
    out = cli(
        "init",
        str(tmp_path / "new"),
        "--map",
        str(county / "County.aprx"),
        "--layer-source",
        MAPPINGS[0],
        cwd=county,
    )
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert "'Buildings'" in out.stderr and "'Roads'" not in out.stderr
    assert not (tmp_path / "new").exists()


def test_init_with_mappings_reads_every_layer(county: Path) -> None:
    out = cli(
        "init",
        str(county),
        "--map",
        "County.aprx",
        "--levels",
        LEVELS,
        *[a for m in MAPPINGS for a in ("--layer-source", m)],
        cwd=county,
    )
    assert out.returncode == 0, out.stderr
    for words in ("layer 'Roads'", "not used for change detection", "'Hillshade'"):
        assert words in out.stdout
    project = load_project(county)
    data = read_layers(project)
    assert {n: len(v) for n, v in data.items()} == {
        "Address Points": 7,  # the definition query drops the retired one
        "Hydrants": 3,
        "Roads": 3,
        "Buildings": 4,
        "Parcels": 12,
    }
    assert project.style.layer("Roads").attributes == ("NAME", "SPEED")
    assert project.style.layer("Parcels").attributes == ("OWNER", "ZONE")


def test_the_generator_writes_what_a_cim_reader_expects(county: Path) -> None:
    """The fixture itself: every member parses as XML with the 2.8.0 typens namespace and
    the map's URIs name members (with one written URL-escaped)."""
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(county / "County.aprx") as zf:
        names = set(zf.namelist())
        for n in names:
            if n.endswith(".xml"):
                raw = zf.read(n)
                assert raw.startswith(b"\xef\xbb\xbf")
                ET.fromstring(raw)
        assert "map/parcel dimensions.xml" in names
    with pytest.raises(StyleError):
        load_pro_map(county / "County.aprx")  # the SDE layers need their mapping


# --- against the ArcGIS Server emulator ------------------------------------------------------

USER, PASSWORD = "publisher", "c0unty-Pa55!"


@pytest.fixture
def served(county: Path, tmp_path: Path):
    """The county project (SDE layers mapped to their FileGDB copies), seeded, published on
    the emulator with its cache, and the server's cache marked current."""
    pytest.importorskip("mapnik", reason="the emulator renders its cache jobs with Mapnik")
    from support.emulator import Emulator
    from support.published import publish_on_emulator

    out = cli(
        "init", str(county), "--map", "County.aprx", "--levels", LEVELS,
        *[a for m in MAPPINGS for a in ("--layer-source", m)], cwd=county,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    publish_on_emulator(
        county, emu, USER, PASSWORD, service="Basemaps/County", cache={"blank_tiles": "skip"}
    )
    yield county, emu
    emu.stop()


def give_server(county: Path, emu, *rel: str) -> None:
    """The server reads its own registered copy of the project's data: give it the edit."""
    import shutil

    root = emu.service("Basemaps", "County").path
    for r in rel:
        src, dst = county / r, root / r
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst)
        else:
            for f in src.parent.glob(src.stem + ".*"):
                shutil.copy2(f, dst.parent / f.name)


def aoi_of(record: dict):
    aoi = record["aoi"] if isinstance(record["aoi"], dict) else json.loads(record["aoi"])
    assert aoi["spatialReference"]["wkid"] in (102100, 3857)
    rings = [r for f in aoi["features"] for r in f["geometry"]["rings"]]
    return shapely.union_all([shapely.Polygon(r) for r in rings])


def run_server_update(county: Path, emu, *rel: str) -> list:
    """``update --target arcgis`` through the CLI; the jobs it sent, with an AOI each."""
    give_server(county, emu, *rel)
    before = len(emu.jobs)
    out = cli("update", "--project", str(county), "--target", "arcgis", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = list(emu.jobs.values())[before:]
    assert all(j.record.get("aoi") for j in jobs), [j.record for j in jobs]
    return jobs


def assert_covers(
    county: Path, jobs: list, layer: str, geom, levels: list[int], within: list[int] | None = None
) -> None:
    """A job at every level in ``levels`` (and none outside ``within``, default ``levels``),
    each AOI covering the feature and its symbol buffer at that level (the tiles ArcGIS
    redraws for it)."""
    project = load_project(county)
    buffer_px = project.style.layer(layer).buffer_size
    by_level: dict[int, list] = {}
    for j in jobs:
        for lv in j.record["levels"]:
            by_level.setdefault(int(lv), []).append(aoi_of(j.record))
    assert set(levels) <= set(by_level) <= set(within or levels), sorted(by_level)
    for lv, shapes in by_level.items():
        reach = geom.buffer(buffer_px * project.scheme.resolution(lv) * 0.99)
        assert shapely.union_all(shapes).covers(reach), (layer, lv)


def test_server_aois_follow_the_fields_the_map_draws(served) -> None:
    county, emu = served
    gdb, copy = county / "Data" / "County.gdb", county / "exports" / "sde_copy.gdb"
    shp = "Data/Shapefiles/AddressPoints.shp"
    # edits to fields the map neither draws nor labels: no job at all
    write_parcels(gdb, notes=[f"edited {i}" for i in range(12)])
    write_utilities(gdb, notes=["a1", "b1", "c1"], main_y=900)  # Water Mains is off: moved
    write_sde_copy(copy, notes=["x1", "y1", "z1"], bldg_type=["shed"] * 4)  # simple: undrawn
    write_address_points(county / "Data" / "Shapefiles", notes=[f"e{i}" for i in range(8)])
    jobs = run_server_update(county, emu, "Data/County.gdb", "exports/sde_copy.gdb", shp)
    assert jobs == []
    st = cli("status", "--project", str(county), "--json")
    assert st.returncode == 0, st.stderr
    changes = json.loads(st.stdout)
    assert changes["restyled"] == [] and changes["rebuild"] is None

    # Parcels: ZONE (unique values) of parcel 5, drawn from 1:50,000 (levels 14-16)
    zone = ["R1", "R2", "C1", "I1"] * 3
    zone[5] = "C1"
    write_parcels(gdb, zone=zone, notes=[f"edited {i}" for i in range(12)])
    jobs = run_server_update(county, emu, "Data/County.gdb")
    assert_covers(county, jobs, "Parcels", parcel_boxes()[5], [14, 15, 16])

    # Parcels: OWNER, labelled from 1:20,000 in: the label's levels (15, 16); fields are
    # fingerprinted per layer, not per level, so level 14 (parcels drawn, labels not) may
    # be sent too: more than needed, never less (docs/pro-maps.md, Limits)
    owner = [f"Owner {i}" for i in range(12)]
    owner[10] = "Clatsop County"
    write_parcels(gdb, zone=zone, owner=owner, notes=[f"edited {i}" for i in range(12)])
    jobs = run_server_update(county, emu, "Data/County.gdb")
    assert_covers(county, jobs, "Parcels", parcel_boxes()[10], [15, 16], within=[14, 15, 16])

    # Roads (the SDE layer, read from its copy): SPEED (class breaks) at every level
    write_sde_copy(copy, speed=[25, 55, 45], notes=["x1", "y1", "z1"], bldg_type=["shed"] * 4)
    jobs = run_server_update(county, emu, "exports/sde_copy.gdb")
    road = shapely.LineString([(X0 - 300, Y0 + 950), (X0 + 2300, Y0 + 950)])
    assert_covers(county, jobs, "Roads", road, [13, 14, 15, 16])

    # Address Points: a retired point made active enters the definition query (14-16)
    write_address_points(
        county / "Data" / "Shapefiles", status=["Active"] * 8, notes=[f"e{i}" for i in range(8)]
    )
    jobs = run_server_update(county, emu, shp)
    assert_covers(county, jobs, "Address Points", shapely.Point(X0 + 1700, Y0 + 700), [14, 15, 16])
    assert not detect_changes(load_project(county), target="arcgis").any


def test_utf16_members_and_feature_dataset_connections(tmp_path: Path) -> None:
    """A map and a layer document in UTF-16, and an SDE layer inside a feature dataset
    (``CIMFeatureDatasetDataConnection``): read alike."""
    members = county_members()
    members["map/buildings.xml"] = members["map/buildings.xml"].replace(
        '<DataConnection xsi:type="typens:CIMStandardDataConnection">',
        '<DataConnection xsi:type="typens:CIMFeatureDatasetDataConnection">'
        "<FeatureDataset>County.GIS.Structures</FeatureDataset>",
    )
    path = write_county_aprx(
        tmp_path / "County.aprx", members, utf16=("map/map.xml", "map/parcels.xml")
    )
    pro = read_pro_map(path)
    names = [lyr.name for lyr in pro.layers.feature]
    assert names == ["Address Points", "Hydrants", "Roads", "Buildings", "Parcels"]
    parcels = pro.layers.feature[-1]
    assert parcels.fields == {"OWNER", "ZONE"} and parcels.scales.largest == 50000
    bld = pro.layers.feature[3].source
    assert bld is not None and bld.factory == "SDE" and bld.dataset == "County.GIS.Buildings"


def test_a_query_layer_is_an_enterprise_source(tmp_path: Path) -> None:
    """A query layer (``CIMSqlQueryDataConnection`` on SQL Server) needs a mapping like
    any enterprise layer, and its SQL and connection stay out of the message."""
    members = county_members()
    members["map/buildings.xml"] = members["map/buildings.xml"].replace(
        connection(SDE_CONN, "SDE", "County.GIS.Buildings"),
        '<DataConnection xsi:type="typens:CIMSqlQueryDataConnection">'
        f"<WorkspaceConnectionString>{escape(SDE_CONN)}</WorkspaceConnectionString>"
        "<WorkspaceFactory>SDE</WorkspaceFactory><Dataset>County.%BuildingsQuery</Dataset>"
        "<DatasetType>esriDTFeatureClass</DatasetType>"
        "<SqlQuery>select * from County.GIS.Buildings where SECRET_COL = 1</SqlQuery>"
        "<SrID>3857</SrID><GeometryType>esriGeometryPolygon</GeometryType>"
        "<OIDFields>OBJECTID</OIDFields></DataConnection>",
    )
    path = write_county_aprx(tmp_path / "County.aprx", members)
    with pytest.raises(StyleError) as exc:
        load_pro_map(path)
    msg = str(exc.value)
    assert "'Buildings'" in msg and "enterprise geodatabase" in msg
    assert '[layers."Buildings"] source = ' in msg
    assert "SECRET_COL" not in msg and "gisviewer" not in msg


def test_an_archive_zipfile_cannot_decompress_is_one_line(county: Path, tmp_path: Path) -> None:
    """A member compressed with a method Python's zipfile lacks (Deflate64, method 9)."""
    stored = tmp_path / "stored.aprx"
    with zipfile.ZipFile(county / "County.aprx") as src, zipfile.ZipFile(stored, "w") as zf:
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info))
    raw = bytearray(stored.read_bytes())
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = raw.find(sig)
        while at != -1:
            raw[at + off : at + off + 2] = (9).to_bytes(2, "little")
            at = raw.find(sig, at + 4)
    bad = tmp_path / "County.aprx"
    bad.write_bytes(bytes(raw))
    out = cli("map-info", str(bad))
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot read" in out.stderr and "Traceback" not in out.stderr


def test_absolute_paths_of_the_office_are_found_in_the_copied_tree(county: Path) -> None:
    """Saved with absolute paths on K:, copied here with its folder tree: the data is
    found beside the map; a path with no such tail is still the missing-data line."""
    members = county_members()
    members["map/parcels.xml"] = members["map/parcels.xml"].replace(
        r"DATABASE=.\Data\County.gdb", r"DATABASE=K:\webmaps\Basemap\Data\County.gdb"
    )
    members["map/address_points.xml"] = members["map/address_points.xml"].replace(
        r"DATABASE=.\Data\Shapefiles", r"DATABASE=\\gisfs01\gis\Basemap\data\shapefiles"
    )
    write_county_aprx(county / "County.aprx", members)
    cfgs = {k: LayerConfig(source=v) for k, v in (m.split("=", 1) for m in MAPPINGS)}
    style = load_pro_map(county / "County.aprx", layers=cfgs, project_root=county)
    assert style.layer("Parcels").path == str((county / "Data" / "County.gdb").resolve())
    shp = county / "Data" / "Shapefiles" / "AddressPoints.shp"
    assert Path(style.layer("Address Points").path) == shp.resolve()

    members["map/parcels.xml"] = members["map/parcels.xml"].replace(
        r"K:\webmaps\Basemap\Data\County.gdb", r"K:\webmaps\Other\Parcels2019.gdb"
    )
    write_county_aprx(county / "County.aprx", members)
    with pytest.raises(StyleError) as exc:
        load_pro_map(county / "County.aprx", layers=cfgs, project_root=county)
    assert "'Parcels'" in str(exc.value) and "K:/webmaps/Other/Parcels2019.gdb" in str(exc.value)
