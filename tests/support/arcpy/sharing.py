"""``arcpy.sharing`` stand-in: map image (federated) and map service (stand-alone) drafts
and ``exportToSDDraft``, which writes a real-shaped ``.sddraft`` (an ``SVCManifest``)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from . import _state

TYPENS = "http://www.esri.com/schemas/ArcGIS/3.3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_]{1,120}$")


def check_service_name(name: str) -> None:
    if not isinstance(name, str) or not _SERVICE_NAME.match(name):
        raise ValueError(
            f"service_name {name!r}: use letters, digits and underscores only (at most 120)"
        )


class CacheSettings:
    """``draft.cache``: the cache properties of a map image sharing draft."""

    def __init__(self) -> None:
        self.cacheOnDemand = False
        self.useExistingCache = False

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in ("cacheOnDemand", "useExistingCache"):
            raise AttributeError(f"the draft's cache has no property {key!r}")
        if not isinstance(value, bool):
            raise TypeError(f"cache.{key} takes True or False")
        object.__setattr__(self, key, value)


class _Draft:
    """What both drafts share: metadata, overwrite, folder, data copying."""

    _props = (
        "overwriteExistingService",
        "copyDataToServer",
        "serverFolder",
        "description",
        "summary",
        "tags",
        "credits",
        "useLimitations",
    )

    def __init__(self, map_: Any, name: str) -> None:
        self._map = map_
        self.name = name
        self.overwriteExistingService = False
        self.copyDataToServer = False
        self.serverFolder: str | None = None
        self.description = ""
        self.summary = ""
        self.tags = ""
        self.credits = ""
        self.useLimitations = ""

    def _check_common(self, out: str) -> Path:
        if not str(out).lower().endswith(".sddraft"):
            raise ValueError(f"{out}: the output file must be a .sddraft")
        check_service_name(self.name)
        if self.serverFolder and not _SERVICE_NAME.match(self.serverFolder):
            raise ValueError(f"serverFolder {self.serverFolder!r}: letters, digits, underscores")
        path = Path(out)
        if not path.parent.is_dir():
            raise ValueError(f"{out}: the folder does not exist")
        return path

    def _write(self, path: Path, server_kind: str, target: str) -> None:
        # Pro's docs: cache.useExistingCache "is only supported when enableCache is True";
        # the stand-in ignores it otherwise (the draft keeps KeepExistingMapCache false).
        cached = bool(getattr(self, "enableCache", False))
        keep = cached and bool(getattr(getattr(self, "cache", None), "useExistingCache", False))
        on_demand = bool(getattr(getattr(self, "cache", None), "cacheOnDemand", False))
        path.write_bytes(
            sddraft_bytes(
                name=self.name,
                folder=self.serverFolder or "",
                replace=self.overwriteExistingService,
                keep_cache=keep,
                cached=cached,
                cache_on_demand=on_demand,
                server_kind=server_kind,
                target=target,
                home=self._map.project.homeFolder,
                map_name=self._map.name,
                description=self.description,
                summary=self.summary,
                tags=self.tags,
                copy_data=self.copyDataToServer,
            )
        )


class MapImageSharingDraft(_Draft):
    """``getWebLayerSharingDraft("FEDERATED_SERVER", "MAP_IMAGE", name)``."""

    def __init__(self, map_: Any, name: str) -> None:
        super().__init__(map_, name)
        self.serverType = "FEDERATED_SERVER"
        self.federatedServerUrl: str | None = None
        self.portalFolder: str | None = None
        self.offline = False
        self.enableCache = False
        self.cache = CacheSettings()

    def exportToSDDraft(self, out_sddraft: str) -> None:  # noqa: N802
        """Write the draft; needs a portal sign-in (unless ``offline``), as arcpy does."""
        path = self._check_common(out_sddraft)
        if not self.federatedServerUrl:
            raise ValueError("federatedServerUrl is not set")
        server = self.federatedServerUrl.rstrip("/")
        if not self.offline:
            s = _state.session
            from . import GetSigninToken

            if GetSigninToken() is None:
                raise ValueError(
                    "You must be signed in to ArcGIS Enterprise to export this draft "
                    "(sign in with arcpy.SignInToPortal or in ArcGIS Pro)"
                )
            try:
                info = httpx.get(f"{server}/rest/info", params={"f": "json"}, timeout=30).json()
            except (httpx.HTTPError, ValueError):
                raise ValueError(f"federatedServerUrl {server} cannot be reached") from None
            owner = str(info.get("owningSystemUrl") or "").rstrip("/")
            if not owner or owner != (s.portal_url or "").rstrip("/"):
                raise ValueError(
                    f"federatedServerUrl {server} is not a server federated with the active "
                    f"portal {s.portal_url}"
                )
        self._write(path, "FEDERATED_SERVER", server)


class MapServiceDraft(_Draft):
    """``CreateSharingDraft("STANDALONE_SERVER", "MAP_SERVICE", name, map)``."""

    def __init__(self, map_: Any, name: str) -> None:
        super().__init__(map_, name)
        self.serverType = "STANDALONE_SERVER"
        self.targetServer: str | None = None
        self.offline = False

    def exportToSDDraft(self, out_sddraft: str) -> None:  # noqa: N802
        """Write the draft; ``targetServer`` must be a server connection file (.ags)."""
        path = self._check_common(out_sddraft)
        if not self.targetServer:
            raise ValueError("targetServer is not set: give an ArcGIS Server connection (.ags)")
        from .mp import read_ags

        doc = read_ags(self.targetServer)
        self._write(path, "STANDALONE_SERVER", doc["url"])


def CreateSharingDraft(  # noqa: N802
    server_type: str, service_type: str, service_name: str, draft_value: Any
) -> MapServiceDraft:
    """A sharing draft for a stand-alone server (``STANDALONE_SERVER``, ``MAP_SERVICE``)."""
    if server_type != "STANDALONE_SERVER":
        raise ValueError(f"server_type {server_type!r}: CreateSharingDraft takes STANDALONE_SERVER")
    if service_type != "MAP_SERVICE":
        raise ValueError(f"service_type {service_type!r}: MAP_SERVICE")
    from .mp import Map

    if not isinstance(draft_value, Map):
        raise ValueError("draft_value must be a Map (or a list of layers, not in the stand-in)")
    check_service_name(service_name)
    return MapServiceDraft(draft_value, service_name)


def _prop(key: str, value: str) -> str:
    return (
        "<PropertySetProperty xsi:type='typens:PropertySetProperty'>"
        f"<Key>{escape(key)}</Key><Value xsi:type='xs:string'>{escape(value)}</Value>"
        "</PropertySetProperty>"
    )


def sddraft_bytes(
    *,
    name: str,
    folder: str,
    replace: bool,
    keep_cache: bool,
    cache_on_demand: bool,
    cached: bool = False,
    server_kind: str,
    target: str,
    home: str,
    map_name: str,
    description: str = "",
    summary: str = "",
    tags: str = "",
    copy_data: bool = False,
) -> bytes:
    """A sharing draft as ArcGIS Pro writes one: a single line, single-quoted attributes."""
    config = "".join(
        _prop(k, v)
        for k, v in (
            ("cacheDir", "c:\\arcgisserver\\directories\\arcgiscache"),
            ("isCached", str(cached).lower()),
            ("cacheOnDemand", "true" if cache_on_demand else "false"),
            ("ignoreCache", "false"),
            ("clientCachingAllowed", "true"),
            ("useLocalCacheDir", "true"),
            ("maxRecordCount", "2000"),
            ("antialiasingMode", "None"),
            ("textAntialiasingMode", "Force"),
        )
    )
    props = "".join(
        _prop(k, v)
        for k, v in (
            ("MinInstances", "1"),
            ("MaxInstances", "2"),
            ("InstancesPerContainer", "1"),
        )
    )
    kind = "esriServiceDefinitionType_Replacement" if replace else "esriServiceDefinitionType_New"
    text = (
        "<?xml version='1.0' encoding='utf-8'?>\n"
        f"<SVCManifest xmlns:xsi='{XSI}' xmlns:xs='{XS}' xmlns:typens='{TYPENS}' "
        "xsi:type='typens:SVCManifest'>"
        f"<ID>{{{uuid.uuid4()}}}</ID><Name>{escape(name)}</Name>"
        f"<Type>{kind}</Type><State>esriSDState_Draft</State>"
        "<ServerType>esriServiceDefinitionServerType_ArcGISServer</ServerType>"
        "<ClientHostName>standin</ClientHostName>"
        f"<ByReference>{str(not copy_data).lower()}</ByReference>"
        "<KeepExistingData>false</KeepExistingData>"
        f"<KeepExistingMapCache>{str(keep_cache).lower()}</KeepExistingMapCache>"
        "<Databases xsi:type='typens:ArrayOfSVCDatabase'/>"
        "<Resources xsi:type='typens:ArrayOfSVCResource'>"
        "<SVCResource xsi:type='typens:SVCResource'>"
        f"<ID>{{{uuid.uuid4()}}}</ID><Name>{escape(map_name)}.mapx</Name>"
        f"<OnPremisePath>{escape(home)}</OnPremisePath>"
        f"<InPackagePath>p30\\{escape(map_name)}.mapx</InPackagePath></SVCResource></Resources>"
        "<StagingSettings xsi:type='typens:PropertySet'>"
        "<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>"
        + _prop("IncludeDataInSDFile", str(copy_data).lower())
        + "</PropertyArray></StagingSettings>"
        "<Configurations xsi:type='typens:ArrayOfSVCConfiguration'>"
        "<SVCConfiguration xsi:type='typens:SVCConfiguration'>"
        f"<Name>{escape(name)}</Name><TypeName>MapServer</TypeName>"
        "<State>esriSVCState_Stopped</State>"
        f"<ServerFolder>{escape(folder)}</ServerFolder>"
        f"<TargetServer xsi:type='xs:string'>{escape(server_kind)} {escape(target)}</TargetServer>"
        "<Definition xsi:type='typens:ServiceDefinition'>"
        "<ConfigurationProperties xsi:type='typens:PropertySet'>"
        f"<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>{config}</PropertyArray>"
        "</ConfigurationProperties>"
        "<Props xsi:type='typens:PropertySet'>"
        f"<PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'>{props}</PropertyArray>"
        "</Props>"
        "<Extensions xsi:type='typens:ArrayOfSVCExtension'/>"
        "</Definition></SVCConfiguration></Configurations>"
        "<CacheSchema xsi:type='typens:CacheInfo'/>"
        "<ItemInfo xsi:type='typens:ItemInfo'>"
        f"<Description>{escape(description)}</Description><Summary>{escape(summary)}</Summary>"
        f"<Tags xsi:type='typens:ArrayOfString'>"
        + "".join(f"<String>{escape(t.strip())}</String>" for t in tags.split(",") if t.strip())
        + "</Tags></ItemInfo>"
        "</SVCManifest>"
    )
    return text.encode("utf-8")
