"""The `{{NAME}}` reactor: a large add to a counter (`by` of 100 or more) is logged as a
`LargeAdd` event in the reactor's own stream `{{NAME}}-log`.

A reactor can also send commands to aggregates (`Effect_Send`) and set timers
(`Effect_Timer`), and hears what came of them as events of its stream `$reactor-{{NAME}}`;
see section 5c of the eshost checkout's docs/plugins-python.md. Built against the 0.2
contract (wit/v0.2.0), whose world `reactor-plugin` added reactors.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.reactor import AppendEvents, Effect_Append, Intent
from wit_world.imports.types import (
    EventError,
    NewEvent,
    PluginInfo,
    PluginKind,
    QueryError_UnknownQuery,
)

NAME = "{{NAME}}"
LOG = NAME + "-log"
LARGE = 100


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME, kind=PluginKind.REACTOR, version="0.1.0", handles=["Added"], upcasts=[]
        )


class Reactor(exports.Reactor):
    def handle(self, events) -> list:
        intents = []
        for event in events:
            if event.event_type != "Added":
                continue  # its own stream's outcome events: it asks for none
            by = json.loads(event.data).get("by")
            if not isinstance(by, int) or isinstance(by, bool):
                raise Err(EventError(position=event.position, message="an Added without by"))
            if by < LARGE:
                continue
            logged = NewEvent(
                event_type="LargeAdd",
                schema_version=1,
                data=dumps({"stream": event.stream_id, "by": by}),
                subject_id=None,
                personal_data=None,
            )
            intents.append(
                Intent(cause=event.position, effect=Effect_Append(AppendEvents(LOG, [logged])))
            )
        return intents

    def query(self, name: str, args: str) -> str:
        raise Err(QueryError_UnknownQuery(f"no query named {json.dumps(name)}"))
