"""tiledelta for ArcGIS Pro: a Python toolbox over the same library calls as the CLI.

Add it in ArcGIS Pro (Catalog pane > Toolboxes > Add Toolbox) after installing tiledelta
into a clone of Pro's Python environment (``pip install tiledelta``; docs/pro.md). It
needs no Mapnik: the server-side update, publishing, change detection and packaging
from an existing cache run without it.

Each tool takes the tiledelta project folder (the one holding tiledelta.toml) and,
optionally, the map: a map of the current project, or an .aprx file. With a map and a
folder that has no tiledelta.toml yet, the project is made from the map. Inside Pro,
tiledelta signs in with Pro's active portal sign-in (``arcpy.GetSigninToken``), so no
password needs to sit in a .env file.
"""

import arcpy

from tiledelta import api
from tiledelta.errors import TileDeltaError


def _folder_param():
    return arcpy.Parameter(
        displayName="tiledelta project folder",
        name="project",
        datatype="DEFolder",
        parameterType="Required",
        direction="Input",
    )


def _map_params():
    current = arcpy.Parameter(
        displayName="Map (current project)",
        name="map",
        datatype="GPMap",
        parameterType="Optional",
        direction="Input",
        category="Map",
    )
    aprx = arcpy.Parameter(
        displayName="ArcGIS Pro project (.aprx)",
        name="aprx",
        datatype="DEFile",
        parameterType="Optional",
        direction="Input",
        category="Map",
    )
    aprx.filter.type = "File"
    aprx.filter.list = ["aprx"]
    name = arcpy.Parameter(
        displayName="Map name in the .aprx",
        name="map_name",
        datatype="GPString",
        parameterType="Optional",
        direction="Input",
        category="Map",
    )
    return [current, aprx, name]


def _target_param():
    p = arcpy.Parameter(
        displayName="Compare with",
        name="target",
        datatype="GPString",
        parameterType="Optional",
        direction="Input",
    )
    p.filter.type = "ValueList"
    p.filter.list = ["arcgis", "local"]
    p.value = "arcgis"
    return p


def _by_name(parameters):
    return {p.name: p for p in parameters}


def _project(parameters):
    """The tiledelta project of the tool's parameters (the map from Pro when chosen)."""
    p = _by_name(parameters)
    aprx, map_name = None, None
    if p["map"].valueAsText:
        # a map of the open project: its .aprx on disk, and the map's name
        try:
            aprx = arcpy.mp.ArcGISProject("CURRENT").filePath
        except OSError:
            message = "There is no current project: run the tool in ArcGIS Pro, or choose an .aprx"
            arcpy.AddError(message)
            raise arcpy.ExecuteError(message) from None
        map_name = p["map"].valueAsText
    elif p["aprx"].valueAsText:
        aprx = p["aprx"].valueAsText
        map_name = p["map_name"].valueAsText
    return _run(api.pro_project, p["project"].valueAsText, aprx=aprx, map_name=map_name)


def _run(call, *args, **kwargs):
    """Run a library call; a tiledelta error becomes one error line and a failed tool."""
    try:
        return call(*args, **kwargs)
    except TileDeltaError as exc:
        arcpy.AddError(str(exc))
        raise arcpy.ExecuteError(str(exc)) from None


def _say(message):
    """A message in the geoprocessing pane that also moves the progressor's label."""
    arcpy.AddMessage(message)
    arcpy.SetProgressorLabel(str(message)[:200])


def _check_folder(parameters):
    p = _by_name(parameters)
    folder = p["project"]
    if folder.valueAsText and not (p["map"].valueAsText or p["aprx"].valueAsText):
        import os

        if not os.path.isfile(os.path.join(folder.valueAsText, "tiledelta.toml")):
            folder.setErrorMessage(
                "This folder has no tiledelta.toml: choose a map (or an .aprx) to make one"
            )


class Toolbox:
    def __init__(self):
        self.label = "tiledelta"
        self.alias = "tiledelta"
        self.tools = [CheckChanges, UpdateServerCache, Publish, MakeTilePackage]


class _Tool:
    canRunInBackground = True

    def isLicensed(self):  # noqa: N802 - Pro's method names
        return True

    def updateParameters(self, parameters):  # noqa: N802
        return

    def updateMessages(self, parameters):  # noqa: N802
        _check_folder(parameters)


class CheckChanges(_Tool):
    def __init__(self):
        self.label = "Check changes"
        self.description = (
            "What changed in the map's data since the last cache build, per layer, and the "
            "tiles per level an update would redraw (nothing is written)."
        )

    def getParameterInfo(self):  # noqa: N802
        return [_folder_param(), *_map_params(), _target_param()]

    def execute(self, parameters, messages):
        arcpy.SetProgressor("default", "Reading the data and comparing it with the snapshot")
        project = _project(parameters)
        target = _by_name(parameters)["target"].valueAsText or "arcgis"
        result = _run(api.plan_summary, project, target=target)
        for line in api.describe_changes(result["changes"]) or ["no changes"]:
            arcpy.AddMessage(line)
        for level, d in result["levels"].items():
            if d.get("tiles"):
                extra = f" ({d['supertiles']} supertiles)" if "supertiles" in d else ""
                arcpy.AddMessage(f"level {level}: {d['tiles']} tiles{extra}")
        arcpy.AddMessage(f"total: {result['tiles']} tiles")
        arcpy.ResetProgressor()


class UpdateServerCache(_Tool):
    def __init__(self):
        self.label = "Update server cache"
        self.description = (
            "Have ArcGIS Server rebuild only the cache tiles that changed data touches "
            "(Manage Map Cache Tiles with an area of interest, one job per level)."
        )

    def getParameterInfo(self):  # noqa: N802
        return [_folder_param(), *_map_params()]

    def execute(self, parameters, messages):
        arcpy.SetProgressor("default", "Finding what changed")
        project = _project(parameters)
        result = _run(api.run_update, project, target="arcgis", say=_say)
        jobs = result.get("jobs") or []
        arcpy.AddMessage(
            f"{len(jobs)} cache job(s) on the server" if jobs else "the server's cache is current"
        )
        arcpy.ResetProgressor()


class Publish(_Tool):
    canRunInBackground = False

    def __init__(self):
        self.label = "Publish"
        self.description = (
            "Overwrite the map service from the map, keeping its cache, then update the "
            "server's cache."
        )

    def getParameterInfo(self):  # noqa: N802
        update = arcpy.Parameter(
            displayName="Update the cache after publishing",
            name="update_cache",
            datatype="GPBoolean",
            parameterType="Optional",
            direction="Input",
        )
        update.value = True
        return [_folder_param(), *_map_params(), update]

    def execute(self, parameters, messages):
        arcpy.SetProgressor("default", "Publishing")
        project = _project(parameters)
        update = _by_name(parameters)["update_cache"].value
        _run(api.publish_service, project, say=_say, update_cache=update is not False)
        arcpy.ResetProgressor()


class MakeTilePackage(_Tool):
    def __init__(self):
        self.label = "Make tile package"
        self.description = (
            "A tile package (.tpkx) from the local cache, optionally only the changed tiles."
        )

    def getParameterInfo(self):  # noqa: N802
        out = arcpy.Parameter(
            displayName="Tile package (.tpkx)",
            name="out",
            datatype="DEFile",
            parameterType="Required",
            direction="Output",
        )
        out.filter.type = "File"
        out.filter.list = ["tpkx"]
        levels = arcpy.Parameter(
            displayName="Levels (e.g. 13-16)",
            name="levels",
            datatype="GPString",
            parameterType="Optional",
            direction="Input",
        )
        changed = arcpy.Parameter(
            displayName="Only the tiles of the last update",
            name="changed_only",
            datatype="GPBoolean",
            parameterType="Optional",
            direction="Input",
        )
        changed.value = False
        return [_folder_param(), *_map_params(), out, levels, changed]

    def execute(self, parameters, messages):
        p = _by_name(parameters)
        arcpy.SetProgressor("default", "Writing the tile package")
        project = _project(parameters)
        result = _run(
            api.make_package,
            project,
            p["out"].valueAsText,
            levels=p["levels"].valueAsText,
            changed_only=p["changed_only"].value is True,
            say=_say,
        )
        arcpy.AddMessage(f"{result.get('tiles', '?')} tiles written to {p['out'].valueAsText}")
        arcpy.ResetProgressor()
