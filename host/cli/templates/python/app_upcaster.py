"""The `{{NAME}}` upcaster: Added version 1 ({"n":N}) becomes version 2 ({"by":N})."""

import json

import wit_world
from wit_world import exports
from componentize_py_types import Err
from wit_world.imports.types import (
    PluginInfo,
    PluginKind,
    UpcastedEvent,
    UpcastResult_Unchanged,
    UpcastResult_Upcasted,
    VersionedType,
)


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="{{NAME}}",
            kind=PluginKind.UPCASTER,
            version="0.1.0",
            handles=["Added"],
            upcasts=[VersionedType(event_type="Added", schema_version=1)],
        )


class Upcaster(exports.Upcaster):
    def upcast(self, event):
        if (event.event_type, event.schema_version) != ("Added", 1):
            return UpcastResult_Unchanged()
        data = json.loads(event.data)
        if not isinstance(data, dict) or "n" not in data:
            raise Err(f"Added v1 at position {event.position} has no n")
        data["by"] = data.pop("n")
        return UpcastResult_Upcasted(
            UpcastedEvent(event_type="Added", schema_version=2,
                          data=json.dumps(data, separators=(",", ":")))
        )
