"""The `balances` projection in Python: the same read model as the Rust `plugins/balances`.

The balance of every account (one stream per account, the stream id being the account id)
and the bank's totals.

Read-model keys (values are compact JSON, byte for byte what the Rust plugin writes):
  account/<id>       {"account":"account-1","balance":75,"currency":"USD"}
  total/<currency>   cents, e.g. 125
  accounts           how many accounts, e.g. 3

Queries:
  balance   {"account":"account-1"}        -> {"account":..,"balance":..,"currency":..}
  total     null                           -> {"accounts":..,"by_currency":{..},"total":..}
  accounts  null | {"after":..,"limit":..} -> [{"account":..,"balance":..,"currency":..}, ..]

Built with componentize-py against wit/v0.1.0/plugin.wit, world `projection-plugin`:
  componentize-py -d wit -w projection-plugin componentize -p examples/python/balances app \
      -o balances-py.wasm
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
    QueryError_Failed,
    QueryError_InvalidArgs,
    QueryError_UnknownQuery,
)

NAME = "balances"
VERSION = "0.1.0"
HANDLES = ["AccountOpened", "FundsDeposited", "FundsWithdrawn"]
DEFAULT_CURRENCY = "USD"
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
SCAN_PAGE = 256


class PluginFailure(Exception):
    """A failure the host sees as an `event-error` at the failing event's position."""


def dumps(value) -> str:
    """Compact JSON with sorted keys, as serde_json writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def account_key(account_id: str) -> str:
    # Stream ids may contain `/`, the key separator: escape it (and `%`) so that the key of
    # one account is never a prefix of another's.
    if "/" in account_id or "%" in account_id:
        account_id = account_id.replace("%", "%25").replace("/", "%2F")
    return "account/" + account_id


# ---- decoding event data, with the rules of the Rust plugin's serde types --------------------


def u64_field(data: dict, event_type: str, name: str, required: bool):
    if name not in data or (data[name] is None and not required):
        if required:
            raise PluginFailure(f"cannot decode {event_type} event: missing field `{name}`")
        return None
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise PluginFailure(
            f"cannot decode {event_type} event: invalid value {dumps(value)} for `{name}`, "
            "expected u64"
        )
    return value


def currency_field(data: dict, event_type: str) -> str:
    value = data.get("currency", DEFAULT_CURRENCY)
    if not isinstance(value, str):
        raise PluginFailure(
            f"cannot decode {event_type} event: invalid value {dumps(value)} for `currency`, "
            "expected a string"
        )
    return value


def cents(amount: int) -> int:
    if amount > I64_MAX:
        raise PluginFailure(f"amount {amount} is out of range")
    return amount


def add(a: int, b: int) -> int:
    total = a + b
    if not -(2**63) <= total <= I64_MAX:
        raise PluginFailure(f"balance overflow adding {b} to {a}")
    return total


# ---- the read model, cached for one batch -----------------------------------------------------


class Batch:
    """One batch's reads and writes, kept in the guest (decoded) and written through once at
    the end: a hot key (a bank total) costs one host call and one JSON decode to read, and
    one encode and one host call to write, per batch rather than per event."""

    MISSING = object()

    def __init__(self):
        self.values = {}  # key -> decoded JSON value, or MISSING when known absent
        self.dirty = set()

    def get_json(self, key):
        if key not in self.values:
            text = read_model.get(key)
            if text is None:
                self.values[key] = Batch.MISSING
            else:
                try:
                    self.values[key] = json.loads(text)
                except ValueError as e:
                    raise PluginFailure(f"read model key {key!r}: {e}") from None
        value = self.values[key]
        return None if value is Batch.MISSING else value

    def put_json(self, key, value):
        self.values[key] = value
        self.dirty.add(key)

    def flush(self):
        for key in sorted(self.dirty):
            value = self.values[key]
            if value is Batch.MISSING:
                read_model.delete(key)
            else:
                read_model.put(key, dumps(value))
        self.dirty.clear()


def handle_event(event, data, model: Batch):
    key = account_key(event.stream_id)
    existing = model.get_json(key)
    # A copy: the batch's value changes only through put_json.
    account = dict(existing) if existing is not None else {
        "account": event.stream_id,
        "balance": 0,
        "currency": DEFAULT_CURRENCY,
    }
    kind = event.event_type
    if kind == "AccountOpened":
        currency = currency_field(data, kind)
        initial = u64_field(data, kind, "initial_deposit", required=False)
        account["currency"] = currency
        delta = cents(initial or 0)
    elif kind == "FundsDeposited":
        amount = u64_field(data, kind, "amount", required=True)
        currency = currency_field(data, kind)  # v1 deposits have none and were in USD
        delta = cents(amount)
    else:  # FundsWithdrawn
        amount = u64_field(data, kind, "amount", required=True)
        currency = account["currency"]
        delta = -cents(amount)
    account["balance"] = add(account["balance"], delta)
    model.put_json(key, account)

    total_key = "total/" + currency
    model.put_json(total_key, add(model.get_json(total_key) or 0, delta))

    if existing is None:
        model.put_json("accounts", (model.get_json("accounts") or 0) + 1)


# ---- queries ----------------------------------------------------------------------------------


def scan_all(prefix):
    entries = []
    while True:
        after = entries[-1][0] if entries else None
        page = read_model.scan(prefix, after, SCAN_PAGE)
        entries.extend(page)
        if len(page) < SCAN_PAGE:
            return entries


def parse_value(key, text):
    try:
        return json.loads(text)
    except ValueError as e:
        raise Err(QueryError_Failed(f"read model key {key!r}: {e}")) from None


def parse_args(args: str):
    try:
        return json.loads(args) if args.strip() else None
    except ValueError as e:
        raise Err(QueryError_InvalidArgs(f"arguments are not JSON: {e}")) from None


def query_balance(args):
    if not isinstance(args, dict):
        raise Err(QueryError_InvalidArgs("expected an object {\"account\": \"<id>\"}"))
    if "account" not in args:
        raise Err(QueryError_InvalidArgs("missing field `account`"))
    account = args["account"]
    if not isinstance(account, str):
        raise Err(QueryError_InvalidArgs("`account` must be a string"))
    text = read_model.get(account_key(account))
    if text is None:
        raise Err(QueryError_InvalidArgs(f"no account {json.dumps(account)}"))
    return parse_value(account_key(account), text)


def query_total(_args):
    by_currency = {}
    total = 0
    for key, value in scan_all("total/"):
        amount = parse_value(key, value)
        total += amount
        by_currency[key[len("total/"):]] = amount
    accounts_text = read_model.get("accounts")
    accounts = parse_value("accounts", accounts_text) if accounts_text is not None else 0
    return {"accounts": accounts, "by_currency": by_currency, "total": total}


def query_accounts(args):
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise Err(QueryError_InvalidArgs("expected null or an object {\"after\", \"limit\"}"))
    after = args.get("after")
    limit = args.get("limit")
    if after is not None and not isinstance(after, str):
        raise Err(QueryError_InvalidArgs("`after` must be a string"))
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= U32_MAX
    ):
        raise Err(QueryError_InvalidArgs("`limit` must be an integer from 0 to 4294967295"))
    after_key = account_key(after) if after is not None else None
    if limit is not None:
        entries = read_model.scan("account/", after_key, limit)
    elif after_key is None:
        entries = scan_all("account/")
    else:
        entries = read_model.scan("account/", after_key, U32_MAX)
    return [parse_value(key, value) for key, value in entries]


QUERIES = {"balance": query_balance, "total": query_total, "accounts": query_accounts}


# ---- the exports ------------------------------------------------------------------------------


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME, kind=PluginKind.PROJECTION, version=VERSION, handles=HANDLES, upcasts=[]
        )


class Projection(exports.Projection):
    def handle(self, events) -> None:
        model = Batch()
        try:
            for event in events:
                if event.event_type not in HANDLES:
                    continue
                try:
                    data = json.loads(event.data)
                    if not isinstance(data, dict):
                        raise PluginFailure(
                            f"cannot decode {event.event_type} event: data is not an object"
                        )
                    handle_event(event, data, model)
                except (PluginFailure, ValueError) as e:
                    raise Err(EventError(position=event.position, message=str(e))) from None
        finally:
            # Flushed even after a failure, like the Rust SDK: the host commits a batch's
            # writes with the checkpoint, or not at all.
            model.flush()

    def query(self, name: str, args: str) -> str:
        run = QUERIES.get(name)
        if run is None:
            raise Err(QueryError_UnknownQuery(f"no query named {json.dumps(name)}"))
        return dumps(run(parse_args(args)))
