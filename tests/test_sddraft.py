"""Sharing drafts edited for a cached overwrite, staged and published against the emulator.

The oracles are independent of tiledelta's editor: lxml (namespace-aware) reads the
results, a byte diff (difflib) shows what changed, the stand-in arcpy's StageService
(lxml) refuses corrupt drafts, and the emulator's tiles show whether a cache survived.
"""

from __future__ import annotations

import difflib
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree
from support.emulator import Emulator, make_service_definition

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.config import ArcGISConfig
from tiledelta.grid import web_mercator
from tiledelta.project import Project
from tiledelta.publish.arcgis import publish as publish_mod
from tiledelta.publish.arcgis.client import ArcGISError
from tiledelta.publish.arcgis.publish import keep_existing_cache, publish
from tiledelta.publish.arcgis.sddraft import SDDraftError, edit_for_cached_overwrite
from tiledelta.stores import read_compact_cache

USER, PASSWORD = "publisher", "dr4ft-Pa55!"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
TYPENS = "http://www.esri.com/schemas/ArcGIS/3.3"

#: A draft shaped as ArcGIS Pro writes them: one line, single-quoted attributes, the Esri
#: types and XML Schema namespaces used only inside xsi:type values.
PRO_DRAFT = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    "<SVCManifest xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' "
    "xmlns:xs='http://www.w3.org/2001/XMLSchema' "
    f"xmlns:typens='{TYPENS}' xsi:type='typens:SVCManifest'>"
    "<ID>{A7C3B3E8-1D3C-4D1B-9E66-3C5A2B1F0E11}</ID><Name>County</Name>"
    "<Type>esriServiceDefinitionType_Replacement</Type><State>esriSDState_Draft</State>"
    "<ServerType>esriServiceDefinitionServerType_ArcGISServer</ServerType>"
    "<ByReference>true</ByReference><KeepExistingData>false</KeepExistingData>"
    "<KeepExistingMapCache>false</KeepExistingMapCache>"
    "<Databases xsi:type='typens:ArrayOfSVCDatabase'><SVCDatabase xsi:type='typens:SVCDatabase'>"
    "<OnPremiseConnectionString>DATABASE=K:\\webmaps\\County.gdb</OnPremiseConnectionString>"
    "<Datasets xsi:type='typens:ArrayOfSVCDataset'/></SVCDatabase></Databases>"
    "<StagingSettings xsi:type='typens:PropertySet'>"
    "<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'/></StagingSettings>"
    "<Configurations xsi:type='typens:ArrayOfSVCConfiguration'>"
    "<SVCConfiguration xsi:type='typens:SVCConfiguration'><Name>County</Name>"
    "<TypeName>MapServer</TypeName><State>esriSVCState_Stopped</State>"
    "<Definition xsi:type='typens:ServiceDefinition'>"
    "<ConfigurationProperties xsi:type='typens:PropertySet'>"
    "<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>"
    "<PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>cacheDir</Key>"
    "<Value xsi:type='xs:string'>c:\\arcgisserver\\directories\\arcgiscache</Value>"
    "</PropertySetProperty>"
    "<PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>isCached</Key>"
    "<Value xsi:type='xs:string'>false</Value></PropertySetProperty>"
    "<PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>cacheOnDemand</Key>"
    "<Value xsi:type='xs:string'>true</Value></PropertySetProperty>"
    "<PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>maxRecordCount</Key>"
    "<Value xsi:type='xs:string'>2000</Value></PropertySetProperty>"
    "</PropertyArray></ConfigurationProperties>"
    "<Props xsi:type='typens:PropertySet'>"
    "<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>"
    "<PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>MinInstances</Key>"
    "<Value xsi:type='xs:string'>1</Value></PropertySetProperty></PropertyArray></Props>"
    "</Definition></SVCConfiguration></Configurations>"
    "<ItemInfo xsi:type='typens:ItemInfo'><Description>Clatsop County &amp; basemap</Description>"
    "</ItemInfo></SVCManifest>"
).encode()

#: The same kind of draft pretty-printed, double quotes, with no cacheOnDemand property.
PRETTY_DRAFT = b"""<?xml version="1.0" encoding="utf-8"?>
<SVCManifest NAMESPACES xsi:type="typens:SVCManifest">
  <Name>County</Name>
  <State>esriSDState_Draft</State>
  <KeepExistingMapCache>false</KeepExistingMapCache>
  <Configurations xsi:type="typens:ArrayOfSVCConfiguration">
    <SVCConfiguration xsi:type="typens:SVCConfiguration">
      <Name>County</Name>
      <TypeName>MapServer</TypeName>
      <Definition xsi:type="typens:ServiceDefinition">
        <ConfigurationProperties xsi:type="typens:PropertySet">
          <PropertyArray xsi:type="typens:ArrayOfPropertySetProperty">
            <PropertySetProperty xsi:type="typens:PropertySetProperty">
              <Key>isCached</Key>
              <Value xsi:type="xs:string">false</Value>
            </PropertySetProperty>
          </PropertyArray>
        </ConfigurationProperties>
      </Definition>
    </SVCConfiguration>
  </Configurations>
  <CacheSchema xsi:type="typens:CacheInfo"/>
</SVCManifest>
""".replace(
    b"NAMESPACES",
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    b'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    b'xmlns:typens="http://www.esri.com/schemas/ArcGIS/3.3"',
)


def lx(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def top(root: etree._Element, name: str) -> str | None:
    el = root.find(name)
    return None if el is None else el.text


def config_props(root: etree._Element) -> dict[str, str]:
    arr = root.find(
        "Configurations/SVCConfiguration/Definition/ConfigurationProperties/PropertyArray"
    )
    return {p.findtext("Key"): p.findtext("Value") for p in arr.findall("PropertySetProperty")}


def unbound_type_prefixes(root: etree._Element) -> list[str]:
    out = []
    for el in root.iter():
        t = el.get(f"{{{XSI}}}type")
        if t and ":" in t and t.split(":")[0] not in el.nsmap:
            out.append(t)
    return out


def value_span(data: bytes, before: bytes) -> tuple[int, int]:
    """The byte span of the text right after ``before`` up to the next '<'."""
    i = data.index(before) + len(before)
    return i, data.index(b"<", i)


# ----------------------------------------------------------------------------- the editor


def test_pro_draft_edited_for_a_cached_overwrite_changes_only_the_values() -> None:
    out, changes = edit_for_cached_overwrite(PRO_DRAFT)
    root = lx(out)
    assert (
        root.nsmap
        == lx(PRO_DRAFT).nsmap
        == {
            "xsi": XSI,
            "xs": "http://www.w3.org/2001/XMLSchema",
            "typens": TYPENS,
        }
    )
    assert unbound_type_prefixes(root) == []
    assert top(root, "KeepExistingMapCache") == "true"
    props = config_props(root)
    assert props["isCached"] == "true" and props["cacheOnDemand"] == "false"
    assert props["maxRecordCount"] == "2000"
    assert len(changes) == 3, changes

    # Byte diff: every changed byte of the input lies inside one of the three values.
    allowed = [
        value_span(PRO_DRAFT, b"<KeepExistingMapCache>"),
        value_span(PRO_DRAFT, b"<Key>isCached</Key><Value xsi:type='xs:string'>"),
        value_span(PRO_DRAFT, b"<Key>cacheOnDemand</Key><Value xsi:type='xs:string'>"),
    ]
    ops = [o for o in difflib.SequenceMatcher(None, PRO_DRAFT, out, autojunk=False).get_opcodes()]
    changed = [(i1, i2) for tag, i1, i2, _j1, _j2 in ops if tag != "equal"]
    assert changed
    for i1, i2 in changed:
        assert any(a <= i1 and i2 <= b for a, b in allowed), (i1, i2, PRO_DRAFT[i1 - 20 : i2 + 20])
    # ... and putting the three old values back gives the input, byte for byte.
    undone = out
    for key, old in ((b"KeepExistingMapCache>", b"false"),):
        undone = undone.replace(b"<" + key + b"true<", b"<" + key + old + b"<", 1)
    undone = undone.replace(
        b"<Key>isCached</Key><Value xsi:type='xs:string'>true<",
        b"<Key>isCached</Key><Value xsi:type='xs:string'>false<",
    ).replace(
        b"<Key>cacheOnDemand</Key><Value xsi:type='xs:string'>false<",
        b"<Key>cacheOnDemand</Key><Value xsi:type='xs:string'>true<",
    )
    assert undone == PRO_DRAFT


def test_the_tiling_scheme_goes_in_with_the_drafts_own_prefixes() -> None:
    scheme = web_mercator()
    out, changes = edit_for_cached_overwrite(PRO_DRAFT, scheme=scheme, tile_format="png")
    root = lx(out)
    assert any("CacheSchema" in c for c in changes)
    schema = root.find("CacheSchema")  # top level, as ArcGIS drafts have it
    assert schema is not None and schema.get(f"{{{XSI}}}type") == "typens:CacheInfo"
    assert unbound_type_prefixes(root) == []
    lods = schema.findall("TileCacheInfo/LODInfos/LODInfo")
    assert [int(lod.findtext("LevelID")) for lod in lods] == [lod.level for lod in scheme.lods]
    for el, lod in zip(lods, scheme.lods, strict=True):
        assert float(el.findtext("Scale")) == pytest.approx(lod.scale, rel=1e-12)
    assert schema.findtext("TileCacheInfo/TileCols") == "256"
    assert schema.findtext("TileImageInfo/CacheTileFormat") == "PNG32"
    assert schema.findtext("CacheStorageInfo/StorageFormat") == ("esriMapCacheStorageModeCompactV2")
    assert "\n" not in out.split(b"\n", 1)[1].decode()  # still one line after the declaration
    # Editing again changes nothing.
    again, _ = edit_for_cached_overwrite(out, scheme=scheme, tile_format="png")
    assert again == out


def test_a_missing_property_is_added_in_the_drafts_own_layout() -> None:
    out, changes = edit_for_cached_overwrite(PRETTY_DRAFT)
    root = lx(out)
    assert config_props(root) == {"isCached": "true", "cacheOnDemand": "false"}
    assert any("added cacheOnDemand" in c for c in changes)
    assert unbound_type_prefixes(root) == []
    text = out.decode()
    assert (
        '            <PropertySetProperty xsi:type="typens:PropertySetProperty">\n'
        "              <Key>cacheOnDemand</Key>\n"
        '              <Value xsi:type="xs:string">false</Value>\n'
        "            </PropertySetProperty>\n"
    ) in text
    # Only insertions and the two values: the input's lines are all still there, in order.
    kept = [
        ln
        for ln in PRETTY_DRAFT.decode().splitlines()
        if "KeepExistingMapCache" not in ln and "xs:string" not in ln
    ]
    out_lines = text.splitlines()
    it = iter(out_lines)
    assert all(any(ln == o for o in it) for ln in kept)


def test_the_file_edit_is_in_place_and_refuses_what_is_not_a_draft(tmp_path: Path) -> None:
    f = tmp_path / "County.sddraft"
    f.write_bytes(PRO_DRAFT)
    changes = keep_existing_cache(f)
    assert len(changes) == 3 and top(lx(f.read_bytes()), "KeepExistingMapCache") == "true"
    # A draft without the element gets it, at the top level, after KeepExistingData.
    no_keep = PRO_DRAFT.replace(b"<KeepExistingMapCache>false</KeepExistingMapCache>", b"")
    f.write_bytes(no_keep)
    assert "added KeepExistingMapCache = true" in keep_existing_cache(f)
    assert b"</KeepExistingData><KeepExistingMapCache>true</" in f.read_bytes()
    not_a_draft = no_keep.replace(b"SVCManifest", b"Manifest")
    f.write_bytes(not_a_draft)
    with pytest.raises(ArcGISError, match="SVCManifest"):
        keep_existing_cache(f)
    assert f.read_bytes() == not_a_draft  # nothing half-written
    with pytest.raises(SDDraftError, match="SVCManifest"):
        edit_for_cached_overwrite(b"<?xml version='1.0'?><CacheInfo/>")
    with pytest.raises(SDDraftError, match="not well-formed"):
        edit_for_cached_overwrite(PRO_DRAFT[:-20])


def old_elementtree_edit(data: bytes) -> bytes:
    """What tiledelta used to do: ElementTree parse, set the value, write back."""
    root = ET.fromstring(data)
    for el in root.iter("KeepExistingMapCache"):
        el.text = "true"
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def test_the_old_elementtree_rewrite_corrupts_the_draft() -> None:
    broken = old_elementtree_edit(PRO_DRAFT)
    root = lx(broken)  # well-formed ...
    assert "typens" not in root.nsmap  # ... but the declaration is gone
    assert "typens:SVCManifest" in unbound_type_prefixes(root)
    with pytest.raises(SDDraftError, match="'typens' is not declared"):
        edit_for_cached_overwrite(broken)


# ------------------------------------------------------------------- the stand-in arcpy


def test_stage_service_refuses_corrupt_drafts(arcpy, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    draft = tmp_path / "County.sddraft"
    good = PRO_DRAFT.replace(
        b"<Databases",
        b"<Resources xsi:type='typens:ArrayOfSVCResource'><SVCResource xsi:type="
        b"'typens:SVCResource'><OnPremisePath>" + str(home).encode() + b"</OnPremisePath>"
        b"</SVCResource></Resources><Databases",
    )
    for bad, why in (
        (old_elementtree_edit(good), "typens"),
        (good.replace(b"SVCManifest", b"Manifest"), "SVCManifest"),
        (good.replace(b"xmlns:xs='http://www.w3.org/2001/XMLSchema' ", b""), "'xs'"),
    ):
        draft.write_bytes(bad)
        with pytest.raises(arcpy.ExecuteError, match=why):
            arcpy.server.StageService(str(draft), str(tmp_path / "County.sd"))
        assert not (tmp_path / "County.sd").exists()
    draft.write_bytes(edit_for_cached_overwrite(good)[0])
    arcpy.server.StageService(str(draft), str(tmp_path / "County.sd"))
    with pytest.raises(arcpy.ExecuteError, match="000725"):  # exists: staging refuses
        arcpy.server.StageService(str(draft), str(tmp_path / "County.sd"))


# ------------------------------------------------------------ publish through the stand-in


def tiles_of(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        return store.get_many(list(store.iter_tiles()))


@pytest.fixture
def county_site(tmp_path: Path):
    """The sample county (with County.aprx) published with its cache on an emulator
    that has a portal (the server is federated with it)."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-14", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True).start()
    project = Project.load(county).updated(
        render={"processes": 1},
        cache={"blank_tiles": "skip"},
        arcgis=ArcGISConfig(
            server=emu.url,
            portal=emu.portal_url,
            service="Tests/County",
            sd="County.sd",
            aprx="County.aprx",
            map="County",
            poll_seconds=0.05,
        ),
    )
    project.save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    seed(load_project(county))
    sd = make_service_definition(
        county, tmp_path / "first.sd", "Tests", "County", include_cache=True
    )
    shutil.move(sd, county / "County.sd")
    yield county, emu
    emu.stop()


def first_publish(county: Path) -> None:
    """The first publish (over REST, no arcpy), with the cache inside the .sd."""
    project = load_project(county)
    rest_only = project.config.arcgis.model_copy(update={"aprx": None})
    publish(project.updated(arcgis=rest_only), say=lambda m: None, update_cache=False)
    (county / "County.sd").unlink()


def aprx_for(arcpy, county: Path, generation: int) -> None:
    arcpy.standin.make_aprx(
        county / "County.aprx", {"County": ["buildings", "roads"]}, generation=generation
    )


@pytest.mark.parametrize("generation", [3, 2])
def test_federated_publish_keeps_the_cache_unattended(
    arcpy, county_site, generation, monkeypatch
) -> None:
    county, emu = county_site
    first_publish(county)
    cache = emu.service("Tests", "County").cache_path
    before = tiles_of(cache)
    assert before
    aprx_for(arcpy, county, generation)
    said: list[str] = []
    assert arcpy.GetSigninToken() is None  # nobody is signed in: an unattended run
    calls: list[str] = []
    sign_in, export = arcpy.SignInToPortal, arcpy.sharing.MapImageSharingDraft.exportToSDDraft

    def logged_sign_in(*a, **k):
        calls.append("SignInToPortal")
        return sign_in(*a, **k)

    def logged_export(self, *a, **k):
        calls.append("exportToSDDraft")
        return export(self, *a, **k)

    monkeypatch.setattr(arcpy, "SignInToPortal", logged_sign_in)
    monkeypatch.setattr(arcpy.sharing.MapImageSharingDraft, "exportToSDDraft", logged_export)
    result = publish(load_project(county), say=said.append, update_cache=False)
    assert calls == ["SignInToPortal", "exportToSDDraft"]
    assert result["published"] == "Tests/County"
    assert f"signed in to {emu.portal_url} as {USER}" in said
    assert arcpy.GetSigninToken() is not None
    assert tiles_of(cache) == before  # the overwrite kept the cache
    job = [j for j in emu.jobs.values() if "Publish" in j.task][-1]
    assert job.record["keepExistingMapCache"] is True and job.record["isCached"] is True
    draft = county / ".tiledelta" / "publish" / "County.sddraft"
    root = lx(draft.read_bytes())
    assert unbound_type_prefixes(root) == [] and top(root, "KeepExistingMapCache") == "true"
    assert root.find("CacheSchema/TileCacheInfo") is not None
    # the sign-in happened before the draft was exported (the stand-in refuses otherwise)
    sign_ins = [r for r in emu.requests if r.path.endswith("/sharing/rest/generateToken")]
    assert sign_ins and sign_ins[0].params.get("password") == "***"
    assert PASSWORD not in " ".join(said)


def test_exporting_a_federated_draft_needs_a_sign_in(arcpy, county_site, tmp_path) -> None:
    county, emu = county_site
    first_publish(county)
    aprx_for(arcpy, county, 3)
    m = arcpy.mp.ArcGISProject(str(county / "County.aprx")).listMaps("County")[0]
    draft = m.getWebLayerSharingDraft("FEDERATED_SERVER", "MAP_IMAGE", "County")
    draft.federatedServerUrl = emu.url
    with pytest.raises(ValueError, match="signed in"):
        draft.exportToSDDraft(str(tmp_path / "x.sddraft"))
    (county / ".env").unlink()
    with pytest.raises(ArcGISError, match="not signed in to .*ARCGIS_USERNAME"):
        publish(load_project(county), say=lambda m: None, update_cache=False)
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD=wrong-one\n")
    with pytest.raises(ArcGISError, match="signing in to .* failed") as err:
        publish(load_project(county), say=lambda m: None, update_cache=False)
    assert "wrong-one" not in str(err.value)


def test_federated_publish_with_pros_own_sign_in(arcpy, county_site) -> None:
    county, emu = county_site
    first_publish(county)
    cache = emu.service("Tests", "County").cache_path
    before = tiles_of(cache)
    aprx_for(arcpy, county, 3)
    (county / ".env").unlink()  # no password anywhere
    referer = "https://pro.arcgis.example/signin"
    arcpy.standin.configure(
        portal_url=emu.portal_url, token=emu.issue_portal_token(referer), referer=referer
    )
    said: list[str] = []
    n = len(emu.requests)
    publish(load_project(county), say=said.append, update_cache=False)
    assert f"signed in to {emu.portal_url} through ArcGIS Pro" in said
    assert tiles_of(cache) == before
    assert len(emu.requests) > n
    assert not [r for r in emu.requests[n:] if r.params.get("username")]  # no password


def standalone(arcpy, county: Path, emu: Emulator) -> None:
    ags = arcpy.mp.CreateGISServerConnectionFile(
        "PUBLISH_GIS_SERVICES",
        str(county),
        "server.ags",
        emu.url,
        "ARCGIS_SERVER",
        username=USER,
        password=PASSWORD,
    )
    project = load_project(county)
    cfg = project.config.arcgis.model_copy(
        update={"portal": None, "server_connection": Path(ags).name}
    )
    project.updated(arcgis=cfg).save()


def test_standalone_publish_keeps_the_cache(arcpy, county_site) -> None:
    county, emu = county_site
    first_publish(county)
    aprx_for(arcpy, county, 3)
    standalone(arcpy, county, emu)
    cache = emu.service("Tests", "County").cache_path
    before = tiles_of(cache)
    publish(load_project(county), say=lambda m: None, update_cache=False)
    assert tiles_of(cache) == before
    assert arcpy.GetSigninToken() is None  # a stand-alone server needs no portal sign-in
    draft = (county / ".tiledelta" / "publish" / "County.sddraft").read_bytes()
    assert config_props(lx(draft))["isCached"] == "true"


def test_without_the_edit_a_standalone_overwrite_loses_the_cache(
    arcpy, county_site, monkeypatch
) -> None:
    """The fault the edit fixes is visible: the draft's defaults throw the cache away."""
    county, emu = county_site
    first_publish(county)
    aprx_for(arcpy, county, 3)
    standalone(arcpy, county, emu)
    cache = emu.service("Tests", "County").cache_path
    assert tiles_of(cache)
    monkeypatch.setattr(publish_mod, "keep_existing_cache", lambda path, scheme=None: [])
    publish(load_project(county), say=lambda m: None, update_cache=False)
    assert tiles_of(cache) == {}
    job = [j for j in emu.jobs.values() if "Publish" in j.task][-1]
    assert any("deleted" in m["description"] for m in job.messages)


def test_the_emulator_refuses_what_is_not_a_staged_sd(county_site, tmp_path) -> None:
    county, emu = county_site
    import zipfile

    bogus = county / "County.sd"
    with zipfile.ZipFile(bogus, "w") as zf:
        zf.writestr("serviceinfo.json", '{"folder": "Tests", "name": "County"}')
    with pytest.raises(ArcGISError, match=r"ERROR 001369.*7-Zip"):
        publish(load_project(county), say=lambda m: None, update_cache=False)
    # a 7z without the manifest
    import py7zr

    bogus.unlink()
    with py7zr.SevenZipFile(bogus, "w") as z:
        z.writestr(b"{}", "serviceconfiguration.json")
    with pytest.raises(ArcGISError, match="no manifest.xml"):
        publish(load_project(county), say=lambda m: None, update_cache=False)
    # a manifest whose xsi:type prefixes are unbound (an ElementTree rewrite)
    bogus.unlink()
    good = make_service_definition(county, tmp_path / "g.sd", "Tests", "County")
    with py7zr.SevenZipFile(good) as z:
        z.extractall(tmp_path / "x")
    manifest = (tmp_path / "x" / "manifest.xml").read_bytes()
    broken = re.sub(rb" xmlns:typens='[^']*'", b"", manifest)
    (tmp_path / "x" / "manifest.xml").write_bytes(broken)
    with py7zr.SevenZipFile(bogus, "w") as z:
        for p in sorted((tmp_path / "x").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp_path / "x").as_posix())
    with pytest.raises(ArcGISError, match="undeclared prefix"):
        publish(load_project(county), say=lambda m: None, update_cache=False)


def test_an_empty_cache_schema_is_filled_in_place() -> None:
    out, changes = edit_for_cached_overwrite(PRETTY_DRAFT, scheme=web_mercator())
    root = lx(out)
    assert "CacheSchema = the service's tiling scheme" in changes
    assert len(root.findall("CacheSchema")) == 1
    assert root.find("CacheSchema/TileCacheInfo/SpatialReference/WKID").text == "102100"
    assert unbound_type_prefixes(root) == []
    head, tail = PRETTY_DRAFT.split(b'<CacheSchema xsi:type="typens:CacheInfo"/>')
    assert out.startswith(
        head.replace(b"<KeepExistingMapCache>false", b"<KeepExistingMapCache>true")[:200]
    )
    assert out.endswith(tail)


def test_a_draft_without_the_configurations_wrapper_is_edited_too() -> None:
    flat = PRETTY_DRAFT.replace(
        b'<Configurations xsi:type="typens:ArrayOfSVCConfiguration">', b""
    ).replace(b"</Configurations>", b"")
    out, _changes = edit_for_cached_overwrite(flat)
    root = lx(out)
    arr = root.find("SVCConfiguration/Definition/ConfigurationProperties/PropertyArray")
    values = {p.findtext("Key"): p.findtext("Value") for p in arr.findall("PropertySetProperty")}
    assert values == {"isCached": "true", "cacheOnDemand": "false"}
    assert top(root, "KeepExistingMapCache") == "true"


def test_a_utf16_draft_stays_utf16() -> None:
    text = PRETTY_DRAFT.decode().replace('encoding="utf-8"', 'encoding="utf-16"')
    data = "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")
    out, changes = edit_for_cached_overwrite(data)
    assert out.startswith(b"\xff\xfe") and len(changes) == 3
    root = lx(out)
    assert top(root, "KeepExistingMapCache") == "true"
    assert config_props(root) == {"isCached": "true", "cacheOnDemand": "false"}
