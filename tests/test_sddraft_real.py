"""The sharing-draft editor on drafts shaped as ArcGIS writes them, across releases.

Each fixture is a small *structural* draft written from what public sources show of
real ``.sddraft`` files (no proprietary text copied; see docs/arcgis.md, "Sharing drafts",
for the sources and what each one shows):

- ArcMap 10.x ``CreateMapSDDraft`` (stand-alone): ``typens`` = ``.../ArcGIS/10.1``, one
  line, single-quoted attributes, a full ``CacheSchema`` (``TileCacheInfo``,
  ``TileImageInfo``, ``CacheStorageInfo``), ``StagingSettings`` and ``Extensions``;
- the same draft after a county script's ``xml.dom.minidom`` ``writexml`` (double quotes,
  ``<?xml version="1.0" ?>``), as Esri's ArcMap samples edit drafts;
- ArcGIS Pro 2.x ``getWebLayerSharingDraft`` (federated map image), pretty-printed with
  CRLF line ends, a comment and CDATA, and a UTF-8 byte-order mark;
- ArcGIS Pro 3.x, ``copyDataToServer = True``, an empty ``CacheSchema``, and no
  ``KeepExistingMapCache`` / ``cacheOnDemand`` at all; also in UTF-16;
- a draft rewritten by ElementTree with the stripped namespaces put back as attributes
  (as one public script does), and one where they were not (corrupt: refused).

Oracles independent of the editor: lxml (namespace-aware) reads every result; a
regex normalisation of input and output must give identical text (so nothing but the
intended values and insertions changed); the stand-in ``StageService`` (lxml) stages the
result into a 7-Zip ``.sd`` read back with py7zr.
"""

from __future__ import annotations

import difflib
import re
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import py7zr
import pytest
from lxml import etree

from tiledelta.grid import web_mercator
from tiledelta.publish.arcgis.sddraft import SDDraftError, edit_for_cached_overwrite

XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"


def _ns(typens: str, q: str = "'") -> str:
    return (
        f"xmlns:xsi={q}{XSI}{q} xmlns:xs={q}{XS}{q} xmlns:typens={q}{typens}{q} "
        f"xsi:type={q}typens:SVCManifest{q}"
    )


def _props(pairs: list[tuple[str, str]]) -> str:
    return "".join(
        "<PropertySetProperty xsi:type='typens:PropertySetProperty'>"
        f"<Key>{k}</Key><Value xsi:type='xs:string'>{v}</Value></PropertySetProperty>"
        for k, v in pairs
    )


def _pset(tag: str, pairs: list[tuple[str, str]]) -> str:
    return (
        f"<{tag} xsi:type='typens:PropertySet'>"
        f"<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>{_props(pairs)}"
        f"</PropertyArray></{tag}>"
    )


#: ArcGIS Online / Bing tiling scheme as ArcMap drafts carry by default (two levels here).
_AGOL_SCHEMA = (
    "<CacheSchema xsi:type='typens:CacheInfo'>"
    "<TileCacheInfo xsi:type='typens:TileCacheInfo'>"
    "<SpatialReference xsi:type='typens:ProjectedCoordinateSystem'><WKT>PROJCS[...]</WKT>"
    "<XOrigin>-20037700</XOrigin><YOrigin>-30241100</YOrigin><XYScale>10000</XYScale>"
    "<HighPrecision>true</HighPrecision><WKID>102100</WKID><LatestWKID>3857</LatestWKID>"
    "</SpatialReference>"
    "<TileOrigin xsi:type='typens:PointN'><X>-20037508.342787</X><Y>20037508.342787</Y>"
    "</TileOrigin><TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI>"
    "<PreciseDPI>96</PreciseDPI><LODInfos xsi:type='typens:ArrayOfLODInfo'>"
    "<LODInfo xsi:type='typens:LODInfo'><LevelID>0</LevelID><Scale>591657527.591555</Scale>"
    "<Resolution>156543.03392800014</Resolution></LODInfo>"
    "<LODInfo xsi:type='typens:LODInfo'><LevelID>1</LevelID><Scale>295828763.79577702</Scale>"
    "<Resolution>78271.516963999937</Resolution></LODInfo></LODInfos></TileCacheInfo>"
    "<TileImageInfo xsi:type='typens:TileImageInfo'><CacheTileFormat>PNG</CacheTileFormat>"
    "<CompressionQuality>0</CompressionQuality><Antialiasing>false</Antialiasing>"
    "</TileImageInfo><CacheStorageInfo xsi:type='typens:CacheStorageInfo'>"
    "<StorageFormat>esriMapCacheStorageModeCompact</StorageFormat><PacketSize>128</PacketSize>"
    "</CacheStorageInfo></CacheSchema>"
)

_MAP_CONFIG = [
    ("cacheDir", "c:\\arcgisserver\\directories\\arcgiscache"),
    ("isCached", "false"),
    ("cacheOnDemand", "false"),
    ("ignoreCache", "false"),
    ("clientCachingAllowed", "true"),
    ("useLocalCacheDir", "true"),
    ("maxRecordCount", "1000"),
    ("antialiasingMode", "None"),
    ("textAntialiasingMode", "Force"),
]

_EXTENSIONS = (
    "<Extensions xsi:type='typens:ArrayOfSVCExtension'>"
    "<SVCExtension xsi:type='typens:SVCExtension'><Enabled>false</Enabled>"
    "<Info xsi:type='typens:PropertySet'><PropertyArray "
    "xsi:type='typens:ArrayOfPropertySetProperty'>"
    + _props([("WebCapabilities", "Query,Create,Update,Delete,Uploads,Editing")])
    + "</PropertyArray></Info>"
    + _pset("Props", [("maxRecordCount", "1000")])
    + "<TypeName>FeatureServer</TypeName></SVCExtension>"
    "<SVCExtension xsi:type='typens:SVCExtension'><Enabled>true</Enabled>"
    + _pset("Props", [("isCached", "keep-me")])  # a same-named key elsewhere: untouched
    + "<TypeName>KmlServer</TypeName></SVCExtension></Extensions>"
)

ARCMAP_10 = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    f"<SVCManifest {_ns('http://www.esri.com/schemas/ArcGIS/10.1')}>"
    "<ID>{3F2C8A11-9B6D-4E1A-8C0F-2D7E5B4A6C90}</ID><Name>County</Name>"
    "<Type>esriServiceDefinitionType_New</Type><State>esriSDState_Draft</State>"
    "<ServerType>esriServiceDefinitionServerType_ArcGISServer</ServerType>"
    "<ByReference>true</ByReference><KeepExistingData>false</KeepExistingData>"
    "<KeepExistingMapCache>false</KeepExistingMapCache>"
    "<Databases xsi:type='typens:ArrayOfSVCDatabase'/>"
    "<Resources xsi:type='typens:ArrayOfSVCResource'><SVCResource xsi:type='typens:SVCResource'>"
    "<ID>{6B1D...}</ID><Name>County.msd</Name><OnPremisePath>@HOME@</OnPremisePath>"
    "<InPackagePath>v101\\County.msd</InPackagePath></SVCResource></Resources>"
    + _pset("StagingSettings", [("IncludeDataInSDFile", "false"), ("CallingContext", "0")])
    + "<Configurations xsi:type='typens:ArrayOfSVCConfiguration'>"
    "<SVCConfiguration xsi:type='typens:SVCConfiguration'><Name>County</Name>"
    "<TypeName>MapServer</TypeName><State>esriSVCState_Stopped</State>"
    "<Definition xsi:type='typens:ServiceDefinition'>"
    + _pset("ConfigurationProperties", _MAP_CONFIG)
    + _pset("Props", [("MinInstances", "1"), ("MaxInstances", "2")])
    + _EXTENSIONS
    + "</Definition></SVCConfiguration></Configurations>"
    + _AGOL_SCHEMA
    + "<ItemInfo xsi:type='typens:ItemInfo'><Description>Roads &amp; parcels</Description>"
    "<Tags xsi:type='typens:ArrayOfString'><String>county</String></Tags></ItemInfo>"
    "</SVCManifest>"
).encode("utf-8")

PRO_2X = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    f"<SVCManifest {_ns('http://www.esri.com/schemas/ArcGIS/2.9.0')}>"
    "<ID>{0D9E...}</ID><Name>County</Name>"
    "<Type>esriServiceDefinitionType_Replacement</Type><State>esriSDState_Draft</State>"
    "<ServerType>esriServiceDefinitionServerType_ArcGISServer</ServerType>"
    "<ByReference>true</ByReference><KeepExistingData>false</KeepExistingData>"
    "<KeepExistingMapCache>false</KeepExistingMapCache>"
    "<Resources xsi:type='typens:ArrayOfSVCResource'><SVCResource xsi:type='typens:SVCResource'>"
    "<Name>County.mapx</Name><OnPremisePath>@HOME@</OnPremisePath>"
    "<InPackagePath>p20\\County.mapx</InPackagePath></SVCResource></Resources>"
    + _pset("StagingSettings", [("IncludeDataInSDFile", "false")])
    + "<Configurations xsi:type='typens:ArrayOfSVCConfiguration'>"
    "<SVCConfiguration xsi:type='typens:SVCConfiguration'><Name>County</Name>"
    "<TypeName>MapServer</TypeName><State>esriSVCState_Stopped</State>"
    "<ServerFolder>Basemaps</ServerFolder>"
    "<TargetServer xsi:type='xs:string'>https://gis.example.org/server</TargetServer>"
    "<Definition xsi:type='typens:ServiceDefinition'>"
    + _pset("ConfigurationProperties", _MAP_CONFIG)
    + _pset("Props", [("MinInstances", "1")])
    + _EXTENSIONS
    + "</Definition></SVCConfiguration></Configurations>"
    "<CacheSchema xsi:type='typens:CacheInfo'/>"
    "<ItemInfo xsi:type='typens:ItemInfo'><Description>DESC</Description></ItemInfo>"
    "</SVCManifest>"
).encode("utf-8")

_PRO3_CONFIG = [(k, v) for k, v in _MAP_CONFIG if k != "cacheOnDemand"]
PRO_3X_COPY = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    f"<SVCManifest {_ns('http://www.esri.com/schemas/ArcGIS/3.3.0')}>"
    "<ID>{9A7F...}</ID><Name>County</Name>"
    "<Type>esriServiceDefinitionType_Replacement</Type><State>esriSDState_Draft</State>"
    "<ServerType>esriServiceDefinitionServerType_ArcGISServer</ServerType>"
    "<ByReference>false</ByReference><KeepExistingData>false</KeepExistingData>"
    "<Resources xsi:type='typens:ArrayOfSVCResource'><SVCResource xsi:type='typens:SVCResource'>"
    "<Name>County.mapx</Name><OnPremisePath>@HOME@</OnPremisePath>"
    "<InPackagePath>p30\\County.mapx</InPackagePath></SVCResource></Resources>"
    + _pset("StagingSettings", [("IncludeDataInSDFile", "true")])
    + "<Configurations xsi:type='typens:ArrayOfSVCConfiguration'>"
    "<SVCConfiguration xsi:type='typens:SVCConfiguration'><Name>County</Name>"
    "<TypeName>MapServer</TypeName><State>esriSVCState_Stopped</State>"
    "<Definition xsi:type='typens:ServiceDefinition'>"
    + _pset("ConfigurationProperties", _PRO3_CONFIG)
    + _pset("Props", [("MinInstances", "1")])
    + "<Extensions xsi:type='typens:ArrayOfSVCExtension'/>"
    "</Definition></SVCConfiguration></Configurations>"
    "<ItemInfo xsi:type='typens:ItemInfo'><Description>Ünïcode näme</Description></ItemInfo>"
    "</SVCManifest>"
).encode("utf-8")


def minidom_rewrite(data: bytes) -> bytes:
    """What Esri's ArcMap samples and many county scripts do: minidom ``writexml``."""
    doc = xml.dom.minidom.parseString(data)
    return doc.toxml(encoding="utf-8")


def pretty_crlf_bom(data: bytes) -> bytes:
    """Pretty-printed with CRLF line ends, a comment, CDATA and a UTF-8 byte-order mark."""
    doc = xml.dom.minidom.parseString(data.replace(b"DESC", b"<![CDATA[Roads <b>&</b>]]>"))
    top = doc.documentElement
    assert top is not None
    top.insertBefore(doc.createComment(" edited by hand "), top.firstChild)
    return b"\xef\xbb\xbf" + doc.toprettyxml(indent="  ", newl="\r\n", encoding="utf-8")


def utf16(data: bytes) -> bytes:
    text = data.decode("utf-8").replace("encoding='utf-8'", "encoding='utf-16'")
    return text.encode("utf-16")  # with a byte-order mark, as Windows tools write it


def elementtree_rewrite_restored(data: bytes) -> bytes:
    """ElementTree rewrite with the stripped declarations put back as attributes."""
    root = ET.fromstring(data)
    root.attrib["xmlns:typens"] = "http://www.esri.com/schemas/ArcGIS/10.1"
    root.attrib["xmlns:xs"] = XS
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


DRAFTS = {
    "arcmap-10x": ARCMAP_10,
    "arcmap-10x-minidom": minidom_rewrite(ARCMAP_10),
    "pro-2x-federated": PRO_2X,
    "pro-2x-pretty-crlf-bom": pretty_crlf_bom(PRO_2X),
    "pro-3x-copydata-no-keep": PRO_3X_COPY,
    "pro-3x-utf16": utf16(PRO_3X_COPY),
    "elementtree-restored": elementtree_rewrite_restored(ARCMAP_10),
}


# ------------------------------------------------------------------------------- oracles


def decode(data: bytes) -> str:
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(codec)
    return data.decode("utf-8")


def root_declarations(text: str) -> list[str]:
    start = re.search(r"<SVCManifest\b[^>]*>", text)
    assert start is not None
    return re.findall(r"xmlns(?::\w+)?\s*=\s*(?:'[^']*'|\"[^\"]*\")", start.group(0))


def config_array(root: etree._Element) -> etree._Element:
    arr = root.find(
        "Configurations/SVCConfiguration/Definition/ConfigurationProperties/PropertyArray"
    )
    assert arr is not None
    return arr


def config(root: etree._Element) -> dict[str, str]:
    return {
        p.findtext("Key"): (p.findtext("Value") or "")
        for p in config_array(root).findall("PropertySetProperty")
    }


_VALUE = r"(<Key>{key}</Key>\s*<Value\b[^>]*?)(?:\s*/>|>[^<]*</Value>)"
_PSP = r"<PropertySetProperty\b[^>]*>\s*<Key>{key}</Key>.*?</PropertySetProperty>"
_SCHEMA = r"<CacheSchema\b[^>]*/>|<CacheSchema\b.*?</CacheSchema>"


def normalise(text: str, original: str) -> str:
    """``text`` with the intended values blanked and the intended insertions removed.

    Written without the editor's scanner: plain regexes over the text. Input and output
    of a correct edit normalise to the same string."""
    conf = re.search(r"<ConfigurationProperties\b.*?</ConfigurationProperties>", text, re.S)
    assert conf is not None
    block = conf.group(0)
    first = re.search(r"<PropertyArray\b[^>]*>(\s*)<PropertySetProperty", decode_conf(original))
    indent = re.escape(first.group(1)) if first else ""
    for key in ("isCached", "cacheOnDemand"):
        if f"<Key>{key}</Key>" not in decode_conf(original):
            block = re.sub(indent + _PSP.format(key=key), "", block, flags=re.S)
        block = re.sub(_VALUE.format(key=key), r"\1>@</Value>", block, flags=re.S)
    block = re.sub(r"(<PropertyArray\b[^>]*?)\s*/>", r"\1></PropertyArray>", block)
    text = text[: conf.start()] + block + text[conf.end() :]
    if "<KeepExistingMapCache" not in original:
        ws = re.search(r"(\s*)<KeepExistingData>", original)
        lead = re.escape(ws.group(1)) if ws else ""
        text = re.sub(lead + "<KeepExistingMapCache>true</KeepExistingMapCache>", "", text)
    text = re.sub(r"(<KeepExistingMapCache>)[^<]*(</KeepExistingMapCache>)", r"\1@\2", text)
    if "<CacheSchema" in original:
        text = re.sub(_SCHEMA, "<CacheSchema/>", text, flags=re.S)
    else:
        text = re.sub(_SCHEMA, "", text, flags=re.S)
    return text


def decode_conf(text: str) -> str:
    m = re.search(r"<ConfigurationProperties\b.*?</ConfigurationProperties>", text, re.S)
    return m.group(0) if m else ""


def subtree(root: etree._Element, path: str) -> bytes:
    el = root.find(path)
    return b"" if el is None else etree.tostring(el, method="c14n")


# --------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(DRAFTS))
@pytest.mark.parametrize("with_scheme", [False, True], ids=["values", "with-scheme"])
def test_a_real_shaped_draft_is_edited_for_a_cached_overwrite(name: str, with_scheme: bool) -> None:
    data = DRAFTS[name]
    before = etree.fromstring(data)
    scheme = web_mercator(max_level=19) if with_scheme else None
    out, changes = edit_for_cached_overwrite(data, scheme=scheme)
    assert changes

    # It parses, namespace-aware, and every xsi:type prefix is bound.
    root = etree.fromstring(out)
    assert etree.QName(root).localname == "SVCManifest"
    for el in root.iter(etree.Element):
        t = el.get(f"{{{XSI}}}type")
        assert not t or ":" not in t or t.split(":")[0] in el.nsmap, (name, t)
    # Every namespace declaration is kept, as written.
    src, res = decode(data), decode(out)
    assert root_declarations(res) == root_declarations(src)
    assert root.nsmap == before.nsmap
    # Same encoding and byte-order mark; the declaration untouched.
    assert out[:3] == data[:3]
    assert res.split(">", 1)[0] == src.split(">", 1)[0]

    # The cache settings are carried.
    tops = [
        c
        for c in root.iterchildren(etree.Element)
        if etree.QName(c).localname == "KeepExistingMapCache"
    ]
    assert [c.text for c in tops] == ["true"]
    props = config(root)
    assert props["isCached"] == "true" and props["cacheOnDemand"] == "false"
    # Nothing else in the service's configuration changed.
    old = config(before)
    assert {k: v for k, v in props.items() if k not in ("isCached", "cacheOnDemand")} == {
        k: v for k, v in old.items() if k not in ("isCached", "cacheOnDemand")
    }
    for path in (
        "StagingSettings",
        "Resources",
        "ItemInfo",
        "Configurations/SVCConfiguration/Definition/Props",
        "Configurations/SVCConfiguration/Definition/Extensions",
    ):
        assert subtree(root, path) == subtree(before, path), path
    if with_scheme:
        schema = root.findall("CacheSchema")
        assert len(schema) == 1 and schema[0].get(f"{{{XSI}}}type") == "typens:CacheInfo"
        levels = [int(x) for x in schema[0].xpath("TileCacheInfo/LODInfos/LODInfo/LevelID/text()")]
        assert levels == list(range(20))
        assert schema[0].findtext("TileCacheInfo/SpatialReference/WKID") == "102100"
        assert schema[0].findtext("CacheStorageInfo/StorageFormat") == (
            "esriMapCacheStorageModeCompactV2"
        )
    else:
        assert subtree(root, "CacheSchema") == subtree(before, "CacheSchema")

    # Byte diff: with the intended values blanked and insertions removed, identical.
    a, b = normalise(src, src), normalise(res, src)
    assert a == b, "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm=""))

    # Editing the result again changes nothing.
    again, _ = edit_for_cached_overwrite(out, scheme=scheme)
    assert again == out


def test_inserted_properties_follow_the_drafts_layout() -> None:
    out, changes = edit_for_cached_overwrite(pretty_crlf_bom(PRO_3X_COPY))
    text = decode(out)
    assert "added cacheOnDemand = false" in changes
    assert "added KeepExistingMapCache = true" in changes
    # CRLF and the draft's indentation, as the neighbouring elements.
    assert re.search(
        r"\r\n {12}<PropertySetProperty xsi:type=\"typens:PropertySetProperty\">\r\n {14}"
        r"<Key>cacheOnDemand</Key>\r\n {14}<Value xsi:type=\"xs:string\">false</Value>"
        r"\r\n {12}</PropertySetProperty>\r\n {10}</PropertyArray>",
        text,
    )
    assert re.search(
        r"<KeepExistingData>false</KeepExistingData>\r\n  "
        r"<KeepExistingMapCache>true</KeepExistingMapCache>\r\n  <Resources",
        text,
    )
    assert "\n" not in text.replace("\r\n", "")  # no bare LF slipped in


def test_an_empty_configuration_array_is_opened() -> None:
    empty = re.sub(
        rb"(<ConfigurationProperties[^>]*><PropertyArray[^>]*?)>.*?</PropertyArray>",
        rb"\1/>",
        PRO_2X,
        flags=re.S,
    )
    assert b"ArrayOfPropertySetProperty'/></ConfigurationProperties>" in empty
    out, _ = edit_for_cached_overwrite(empty)
    assert config(etree.fromstring(out)) == {"isCached": "true", "cacheOnDemand": "false"}


def test_a_draft_rewritten_without_its_namespaces_is_refused_clearly() -> None:
    broken = ET.tostring(ET.fromstring(ARCMAP_10), encoding="utf-8", xml_declaration=True)
    assert b"xmlns:typens" not in broken  # what ElementTree does to a draft
    with pytest.raises(SDDraftError, match="prefix 'typens' is not declared"):
        edit_for_cached_overwrite(broken)


# ------------------------------------------------------------------- the stand-in arcpy


def _with_home(data: bytes, home: Path) -> bytes:
    text = decode(data)
    enc = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"
    bom = data.startswith(b"\xef\xbb\xbf")
    out = text.replace("@HOME@", str(home)).encode(enc)
    return b"\xef\xbb\xbf" + out if bom else out


@pytest.mark.parametrize("name", list(DRAFTS))
def test_stage_service_accepts_the_edited_draft(arcpy, tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "County.mapx").write_text("{}")
    draft = tmp_path / "County.sddraft"
    edited, _ = edit_for_cached_overwrite(_with_home(DRAFTS[name], home), scheme=web_mercator())
    draft.write_bytes(edited)
    sd = tmp_path / "County.sd"
    arcpy.server.StageService(str(draft), str(sd))
    with py7zr.SevenZipFile(sd) as z:
        names = z.getnames()
        z.extractall(tmp_path / "sd")
    manifest = etree.fromstring((tmp_path / "sd" / "manifest.xml").read_bytes())
    assert manifest.findtext("State") == "esriSDState_Staged"
    assert manifest.findtext("KeepExistingMapCache") == "true"
    assert config(manifest)["isCached"] == "true"
    assert manifest.find("CacheSchema/TileCacheInfo") is not None
    assert "p30/County.mapx" in names


def test_a_draft_that_never_declared_xs_gets_it_only_where_needed() -> None:
    no_xs = PRO_3X_COPY.replace(f" xmlns:xs='{XS}'".encode(), b"").replace(
        b"xsi:type='xs:string'", b"xsi:type='typens:String'"
    )
    assert b"xmlns:xs=" not in no_xs
    out, changes = edit_for_cached_overwrite(no_xs)
    assert "added cacheOnDemand = false" in changes
    root = etree.fromstring(out)
    assert "xs" not in root.nsmap and config(root)["cacheOnDemand"] == "false"
    value = config_array(root).xpath("PropertySetProperty[Key='cacheOnDemand']/Value")[0]
    assert value.nsmap["xs"] == XS and value.get(f"{{{XSI}}}type") == "xs:string"
    assert root_declarations(decode(out)) == root_declarations(decode(no_xs))
