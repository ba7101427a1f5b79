"""tiledelta for ArcGIS Pro: a Python toolbox over the same library calls as the CLI.

Add it in ArcGIS Pro (Catalog pane > Toolboxes > Add Toolbox) after installing
tiledelta into the Pro Python environment (`pip install tiledelta` in a cloned env).
Each tool takes the tiledelta project folder (the one holding tiledelta.toml).
"""

import json

import arcpy

from tiledelta import api
from tiledelta.errors import TileDeltaError


def _project_param():
    p = arcpy.Parameter(displayName="tiledelta project folder", name="project",
                        datatype="DEFolder", parameterType="Required", direction="Input")
    return p


def _target_param():
    p = arcpy.Parameter(displayName="Target", name="target", datatype="GPString",
                        parameterType="Optional", direction="Input")
    p.filter.type = "ValueList"
    p.filter.list = ["local", "arcgis"]
    p.value = "local"
    return p


def _run(call, *args, **kwargs):
    """Run a library call; report tiledelta errors as tool errors (one line)."""
    try:
        return call(*args, **kwargs)
    except TileDeltaError as exc:
        arcpy.AddError(str(exc))
        raise arcpy.ExecuteError(str(exc)) from None


class Toolbox:
    def __init__(self):
        self.label = "tiledelta"
        self.alias = "tiledelta"
        self.tools = [CheckChanges, PlanCacheUpdate, UpdateCache, Publish]


class CheckChanges:
    def __init__(self):
        self.label = "Check changes"
        self.description = "What changed in the map's data since the last cache build."
        self.canRunInBackground = True

    def getParameterInfo(self):
        return [_project_param()]

    def execute(self, parameters, messages):
        project = _run(api.load_project, parameters[0].valueAsText)
        changes = _run(api.changes_summary, project)
        for line in api.describe_changes(changes):
            arcpy.AddMessage(line)


class PlanCacheUpdate:
    def __init__(self):
        self.label = "Plan cache update"
        self.description = "Tiles per level an update would re-render; optionally the dirty area."
        self.canRunInBackground = True

    def getParameterInfo(self):
        aoi = arcpy.Parameter(displayName="Dirty area (GeoJSON)", name="aoi", datatype="DEFile",
                              parameterType="Optional", direction="Output")
        return [_project_param(), aoi]

    def execute(self, parameters, messages):
        project = _run(api.load_project, parameters[0].valueAsText)
        aoi = parameters[1].valueAsText
        result = _run(api.plan_summary, project, aoi=aoi)
        for level, d in result["levels"].items():
            if d["tiles"]:
                arcpy.AddMessage(f"level {level}: {d['tiles']} tiles")
        arcpy.AddMessage(f"total {result['tiles']} tiles")


class UpdateCache:
    def __init__(self):
        self.label = "Update cache"
        self.description = ("Re-render the tiles that changed data touches (local cache), or "
                            "have ArcGIS Server rebuild just the changed area.")
        self.canRunInBackground = True

    def getParameterInfo(self):
        return [_project_param(), _target_param()]

    def execute(self, parameters, messages):
        project = _run(api.load_project, parameters[0].valueAsText)
        target = parameters[1].valueAsText or "local"
        result = _run(api.run_update, project, target=target, say=arcpy.AddMessage)
        arcpy.AddMessage(json.dumps({k: v for k, v in result.items() if k != "levels"}))


class Publish:
    def __init__(self):
        self.label = "Publish"
        self.description = "Overwrite the service definition, then update the server's cache."
        self.canRunInBackground = False

    def getParameterInfo(self):
        return [_project_param()]

    def execute(self, parameters, messages):
        project = _run(api.load_project, parameters[0].valueAsText)
        _run(api.publish_service, project, say=arcpy.AddMessage)
