"""The `{{NAME}}` projection: the count of every counter stream.

Query `count` {"stream":"counter-1"} answers {"stream":"counter-1","count":N}.
"""

import json

import wit_world
from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import read_model
from wit_world.imports.types import (
    EventError,
    PluginInfo,
    PluginKind,
    QueryError_InvalidArgs,
    QueryError_UnknownQuery,
)

NAME = "{{NAME}}"
HANDLES = ["Added", "Reset"]


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME, kind=PluginKind.PROJECTION, version="0.1.0", handles=HANDLES, upcasts=[]
        )


class Projection(exports.Projection):
    def handle(self, events) -> None:
        for event in events:
            key = "count/" + event.stream_id
            count = int(read_model.get(key) or "0")
            if event.event_type == "Added":
                by = json.loads(event.data).get("by")
                if not isinstance(by, int) or isinstance(by, bool):
                    raise Err(EventError(position=event.position, message="an Added without by"))
                count += by
            elif event.event_type == "Reset":
                count = 0
            read_model.put(key, str(count))

    def query(self, name: str, args: str) -> str:
        if name != "count":
            raise Err(QueryError_UnknownQuery(f"no query named {json.dumps(name)}"))
        parsed = json.loads(args) if args else None
        stream = parsed.get("stream") if isinstance(parsed, dict) else None
        if not isinstance(stream, str):
            raise Err(QueryError_InvalidArgs('expected {"stream":"..."}'))
        count = int(read_model.get("count/" + stream) or "0")
        return dumps({"stream": stream, "count": count})
