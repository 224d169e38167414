"""The `bank-account` aggregate in Python: accepts and rejects the same commands as the Rust
`plugins/bank-account`, and emits the same events.

componentize-py looks for the world's own exports (`describe`) in the class `WitWorld` of
the app module (this file), and for the exported interface `aggregate` in a module of that
name: see `aggregate.py`, which holds the resource class `Instance` and all the domain logic.

Built with componentize-py against wit/v0.1.0/plugin.wit, world `aggregate-plugin`:
  componentize-py -d wit -w aggregate-plugin componentize -p examples/python/bank_account app \
      -o bank-account-py.wasm
"""

import wit_world
from wit_world.imports.types import PluginInfo, PluginKind

from aggregate import EVENT_TYPES


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="bank-account",
            kind=PluginKind.AGGREGATE,
            version="0.1.0",
            handles=list(EVENT_TYPES),
            upcasts=[],
        )
