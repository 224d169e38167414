"""The `transfer-saga` reactor in Python: the same intents as the Rust `plugins/transfer-saga`.

Carries out a `transfer` with `bank-account` commands, one step at a time, and records how it
ended on the transfer. On `TransferRequested` (the stream id is the transfer id) it withdraws
the amount from `from` (step `debit`); then, on what came of each command (the host appends
`CommandAccepted` / `CommandRejected` to `$reactor-transfer-saga`):

  step      accepted                 rejected (or invalid)
  debit     Deposit to `to` (credit) transfer Fail with the reason
  credit    transfer Complete        Deposit back to `from` (refund), keeping the reason
  refund    transfer Refund          nothing: the rejection stays recorded in the log
  complete, fail, record-refund: nothing

Every command's context carries the whole transfer (`transfer`, `step`, `from`, `to`,
`amount`, and `reason` once the credit was refused), so the saga keeps no read model.

Built with componentize-py against wit/v0.2.0/plugin.wit, world `reactor-plugin`
(scripts/build-polyglot.sh).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.reactor import Effect_Send, Intent, SendCommand
from wit_world.imports.types import EventError, PluginInfo, PluginKind, QueryError_UnknownQuery

NAME = "transfer-saga"
OWN_STREAM = "$reactor-" + NAME
BANK_ACCOUNT = "bank-account"
TRANSFER = "transfer"
U64_MAX = 2**64 - 1
STEPS = ("debit", "credit", "refund", "complete", "fail", "record-refund")


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(name=NAME, kind=PluginKind.REACTOR, version="0.1.0",
                          handles=["TransferRequested"], upcasts=[])


def failed(event, message: str) -> Err:
    return Err(EventError(position=event.position, message=message))


def send(event, aggregate_type: str, aggregate_id: str, command: dict, context: dict) -> Intent:
    return Intent(cause=event.position, effect=Effect_Send(SendCommand(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id,
        command=dumps(command), context=dumps(context))))


def at(context: dict, step: str, **changes) -> dict:
    """The same transfer at another step."""
    return {**context, "step": step, **changes}


def requested(event) -> Intent:
    try:
        data = json.loads(event.data)
        source, target, amount = data["from"], data["to"], data["amount"]
    except (ValueError, KeyError, TypeError) as e:
        raise failed(event, f"TransferRequested without from, to and amount: {e}")
    if not (isinstance(source, str) and isinstance(target, str)
            and isinstance(amount, int) and 0 <= amount <= U64_MAX):
        raise failed(event, "TransferRequested: from and to are strings, amount a whole number")
    context = {"transfer": event.stream_id, "step": "debit",
               "from": source, "to": target, "amount": amount}
    return send(event, BANK_ACCOUNT, source, {"type": "Withdraw", "amount": amount}, context)


def outcome(event) -> list:
    """The next step after a command's outcome; a fired timer or other record is let be."""
    if event.event_type not in ("CommandAccepted", "CommandRejected"):
        return []
    try:
        data = json.loads(event.data)
        context = data["context"]
        step, source, target = context["step"], context["from"], context["to"]
        transfer, amount = context["transfer"], context["amount"]
    except (ValueError, KeyError, TypeError) as e:
        raise failed(event, f"outcome context of a transfer step: {e}")
    if step not in STEPS:
        raise failed(event, f"outcome context of a transfer step: unknown step {json.dumps(step)}")
    if event.event_type == "CommandAccepted":
        if step == "debit":
            deposit = {"type": "Deposit", "amount": amount}
            return [send(event, BANK_ACCOUNT, target, deposit, at(context, "credit"))]
        if step == "credit":
            return [send(event, TRANSFER, transfer, {"type": "Complete"}, at(context, "complete"))]
        if step == "refund":
            reason = context.get("reason") or ""
            return [send(event, TRANSFER, transfer, {"type": "Refund", "reason": reason},
                         at(context, "record-refund"))]
        return []
    reason = data.get("reason", "")
    if step == "debit":
        return [send(event, TRANSFER, transfer, {"type": "Fail", "reason": reason},
                     at(context, "fail"))]
    if step == "credit":
        deposit = {"type": "Deposit", "amount": amount}
        return [send(event, BANK_ACCOUNT, source, deposit, at(context, "refund", reason=reason))]
    # A refused refund leaves the money with the outcome in the log, for a person to settle.
    return []


class Reactor(exports.Reactor):
    def handle(self, events) -> list:
        intents = []
        for event in events:
            if event.stream_id == OWN_STREAM:
                intents.extend(outcome(event))
            elif event.event_type == "TransferRequested":
                intents.append(requested(event))
        return intents

    def query(self, name: str, args: str) -> str:
        raise Err(QueryError_UnknownQuery(f"no query named {json.dumps(name)}"))
