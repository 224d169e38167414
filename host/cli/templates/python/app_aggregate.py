"""The `{{NAME}}` aggregate: a counter.

Commands: {"type":"Add","by":N} (N > 0) emits Added {"by":N} (schema version 2; version 1
had "n"); {"type":"Reset"} emits Reset (refused at zero). State: {"count":N}.
The resource class lives in aggregate.py, where componentize-py expects it.
"""

import wit_world
from wit_world.imports.types import PluginInfo, PluginKind

NAME = "{{NAME}}"


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            kind=PluginKind.AGGREGATE,
            version="0.1.0",
            handles=["Added", "Reset"],
            upcasts=[],
        )
