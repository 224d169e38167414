"""The `deposit-currency` upcaster in Python: the same rewrite as the Rust
`plugins/deposit-currency`.

`FundsDeposited` version 1 had no `currency`; version 2 has one. This upcaster raises a
version-1 event to version 2 with `"currency": "USD"` (the only currency there was), keeping
every other field. The host calls it only for the (type, version) pairs `describe` lists in
`upcasts`, and chains upcasters, so each one raises an event by one step.

Built with componentize-py against wit/v0.1.0/plugin.wit, world `upcaster-plugin`:
  componentize-py -d wit -w upcaster-plugin componentize -p examples/python/deposit_currency app \
      -o deposit-currency-py.wasm
"""

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

NAME = "deposit-currency"
VERSION = "0.1.0"


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            kind=PluginKind.UPCASTER,
            version=VERSION,
            # The types it may produce (a rename would list the new name here).
            handles=["FundsDeposited"],
            upcasts=[VersionedType(event_type="FundsDeposited", schema_version=1)],
        )


class Upcaster(exports.Upcaster):
    def upcast(self, event):
        if (event.event_type, event.schema_version) != ("FundsDeposited", 1):
            return UpcastResult_Unchanged()
        try:
            data = json.loads(event.data)
        except ValueError as e:
            raise Err(f"FundsDeposited v1 at position {event.position}: {e}") from None
        amount = data.get("amount") if isinstance(data, dict) else None
        # bool is an int in Python: refuse it like the Rust version refuses a non-integer.
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise Err(f"FundsDeposited v1 at position {event.position} has no amount in cents")
        data.setdefault("currency", "USD")
        new = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return UpcastResult_Upcasted(
            UpcastedEvent(event_type="FundsDeposited", schema_version=2, data=new)
        )
