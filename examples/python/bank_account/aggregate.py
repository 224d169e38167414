"""The bank account: one `Instance` per account id, its state kept in the guest.

Amounts are integers in cents; an account holds one currency, fixed when it is opened.
Every amount and balance stays within 0..=2^53 - 1 cents (MAX_CENTS), as in the Rust plugin.

Commands (the `payload` JSON of a command):
  {"type":"Open","owner":"Ann","initial_deposit":100,"currency":"USD"}  (last two optional)
  {"type":"Deposit","amount":100}          (optional "currency", which must be the account's)
  {"type":"Withdraw","amount":50}
  {"type":"Freeze","reason":"..."}
  {"type":"Unfreeze"}
  {"type":"Close"}                         (pays out the balance, then closes: two events)

Events (type, schema version, data), exactly as the Rust plugin stores them:
  AccountOpened   1  {"owner":"Ann","initial_deposit":100,"currency":"USD"}  (no initial_deposit
                                                                              key when absent)
  FundsDeposited  2  {"amount":100,"currency":"USD"}    (version 1 had no currency: USD)
  FundsWithdrawn  1  {"amount":50}
  AccountFrozen   1  {"reason":"..."}
  AccountUnfrozen 1  {}
  AccountClosed   1  {}

A command that cannot be understood is `invalid`; one that breaks a business rule is
`rejected` with the same message as the Rust plugin.
"""

import json

from componentize_py_types import Err
from wit_world.exports.aggregate import Instance as InstanceResource
from wit_world.imports.types import (
    CommandError_Invalid,
    CommandError_Rejected,
    EventError,
    NewEvent,
)

DEFAULT_CURRENCY = "USD"
U64_MAX = 2**64 - 1
# The largest amount and balance, in cents: exact as a JSON number in every language.
MAX_CENTS = 2**53 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
EVENT_TYPES = (
    "AccountOpened",
    "FundsDeposited",
    "FundsWithdrawn",
    "AccountFrozen",
    "AccountUnfrozen",
    "AccountClosed",
)
SCHEMA_VERSIONS = {"FundsDeposited": 2}
COMMANDS = ("Open", "Deposit", "Withdraw", "Freeze", "Unfreeze", "Close")
# What Rust's `str::trim` strips (Unicode White_Space); Python's `str.strip()` strips more.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Each command's fields: (name, "str" or "i64", required).
COMMAND_FIELDS = {
    "Open": [("owner", "str", True), ("initial_deposit", "i64", False), ("currency", "str", False)],
    "Deposit": [("amount", "i64", True), ("currency", "str", False)],
    "Withdraw": [("amount", "i64", True)],
    "Freeze": [("reason", "str", True)],
    "Unfreeze": [],
    "Close": [],
}


class Rejected(Exception):
    """A business rule refused the command."""


class Invalid(Exception):
    """The command could not be understood."""


def rust_debug(text: str) -> str:
    """A string quoted the way Rust's `{:?}` quotes it, for messages identical to the Rust
    plugin's."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(value) -> str:
    """Compact JSON, keys in the order given (the Rust plugin's field order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- decoding commands ---------------------------------------------------------------------


def field(payload: dict, name: str, kind: str, required: bool):
    """A command field: `kind` is "str" or "i64". Missing or null optional fields are None."""
    if name not in payload or (payload[name] is None and not required):
        if required:
            raise Invalid(f"missing field `{name}`")
        return None
    value = payload[name]
    if kind == "str":
        if not isinstance(value, str):
            raise Invalid(f"invalid type: {dumps(value)}, expected a string for `{name}`")
    elif isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"invalid type: {dumps(value)}, expected i64 for `{name}`")
    elif not I64_MIN <= value <= I64_MAX:
        raise Invalid(f"invalid value: integer `{value}`, expected i64 for `{name}`")
    return value


def decode_command(text: str):
    try:
        payload = json.loads(text)
    except ValueError as e:
        raise Invalid(f"the command is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise Invalid(f"invalid type: {dumps(payload)}, expected internally tagged enum")
    kind = field(payload, "type", "str", required=True)
    if kind not in COMMANDS:
        expected = ", ".join(f"`{c}`" for c in COMMANDS)
        raise Invalid(f"unknown variant `{kind}`, expected one of {expected}")
    # Every field is decoded before any rule runs: a malformed command is invalid, whatever
    # the state of the account.
    fields = {}
    for name, kind_of, required in COMMAND_FIELDS[kind]:
        fields[name] = field(payload, name, kind_of, required)
    return kind, fields


# ---- the rules -----------------------------------------------------------------------------


def positive(amount: int) -> int:
    if amount <= 0:
        raise Rejected(f"amount must be a positive number of cents, got {amount}")
    if amount > MAX_CENTS:
        raise Rejected(f"amount must be at most {MAX_CENTS} cents, got {amount}")
    return amount


def valid_currency(code: str) -> str:
    # Three ASCII capitals; Rust counts bytes, so "ÉUR" (4 bytes) is refused there too.
    if not (len(code.encode()) == 3 and all("A" <= c <= "Z" for c in code)):
        raise Rejected(
            "currency must be a three-letter ISO 4217 code such as USD, got " + rust_debug(code)
        )
    return code


def new_event(event_type: str, data: dict) -> NewEvent:
    return NewEvent(
        event_type=event_type,
        schema_version=SCHEMA_VERSIONS.get(event_type, 1),
        data=dumps(data),
        subject_id=None,
        personal_data=None,
    )


class Account:
    """The state of one account. `to_json` is the same object as the Rust plugin's state."""

    def __init__(self, account_id: str):
        self.id = account_id
        self.owner = None
        self.balance = 0
        self.currency = None
        self.frozen = False
        self.open = False
        self.closed = False

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "owner": self.owner,
            "balance": self.balance,
            "currency": self.currency,
            "frozen": self.frozen,
            "open": self.open,
            "closed": self.closed,
        }

    @classmethod
    def from_json(cls, value: dict) -> "Account":
        account = cls(value["id"])
        account.owner = value["owner"]
        account.balance = value["balance"]
        account.currency = value["currency"]
        account.frozen = value["frozen"]
        account.open = value["open"]
        account.closed = value.get("closed", False)
        return account

    def account_currency(self) -> str:
        return self.currency if self.currency is not None else DEFAULT_CURRENCY

    def ensure_movable(self):
        if self.frozen:
            raise Rejected(f"account {self.id} is frozen")

    def decide(self, kind: str, c: dict) -> list:
        """The events for the decoded command `kind` with fields `c`, or `Rejected`."""
        if self.closed:
            raise Rejected(f"account {self.id} is closed")
        if kind == "Close":
            if not self.open:
                raise Rejected(f"account {self.id} is not open")
            self.ensure_movable()
            payout = [new_event("FundsWithdrawn", {"amount": self.balance})] if self.balance > 0 else []
            return payout + [new_event("AccountClosed", {})]
        return [self.decide_one(kind, c)]

    def decide_one(self, kind: str, c: dict) -> NewEvent:
        """The one event of a command other than Close."""
        if not self.open and kind != "Open":
            raise Rejected(f"account {self.id} is not open")
        if kind == "Open":
            owner, initial, currency = c["owner"], c["initial_deposit"], c["currency"]
            if self.open:
                raise Rejected(f"account {self.id} is already open")
            if not owner.strip(WHITE_SPACE):
                raise Rejected("owner must not be empty")
            data = {"owner": owner}
            if initial is not None:
                data["initial_deposit"] = positive(initial)
            data["currency"] = valid_currency(currency if currency is not None else DEFAULT_CURRENCY)
            return new_event("AccountOpened", data)
        if kind == "Deposit":
            amount = positive(c["amount"])
            currency = c["currency"]
            self.ensure_movable()
            if currency is None:
                currency = self.account_currency()
            if currency != self.account_currency():
                raise Rejected(
                    f"currency mismatch: account {self.id} holds {self.account_currency()}, "
                    f"deposit is in {currency}"
                )
            if self.balance + amount > MAX_CENTS:
                raise Rejected(
                    f"deposit of {amount} would take the balance {self.balance} "
                    f"over {MAX_CENTS} cents"
                )
            return new_event("FundsDeposited", {"amount": amount, "currency": currency})
        if kind == "Withdraw":
            amount = positive(c["amount"])
            self.ensure_movable()
            if amount > self.balance:
                raise Rejected(
                    f"insufficient funds: balance {self.balance}, withdrawal {amount}"
                )
            return new_event("FundsWithdrawn", {"amount": amount})
        if kind == "Freeze":
            reason = c["reason"]
            if self.frozen:
                raise Rejected(f"account {self.id} is already frozen")
            if not reason.strip(WHITE_SPACE):
                raise Rejected("a freeze needs a reason")
            return new_event("AccountFrozen", {"reason": reason})
        # Unfreeze
        if not self.frozen:
            raise Rejected(f"account {self.id} is not frozen")
        return new_event("AccountUnfrozen", {})

    def apply(self, event_type: str, data: dict):
        def amount(name, required=True):
            value = data.get(name)
            if value is None and not required:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
                raise ValueError(
                    f"cannot decode {event_type} event: invalid {name} {dumps(value)}, expected u64"
                )
            return value

        def text(name, default=None):
            value = data.get(name, default)
            if not isinstance(value, str):
                raise ValueError(
                    f"cannot decode {event_type} event: invalid {name} {dumps(value)}, "
                    "expected a string"
                )
            return value

        if event_type == "AccountOpened":
            owner = text("owner")
            initial = amount("initial_deposit", required=False)
            currency = text("currency", DEFAULT_CURRENCY)
            self.open = True
            self.owner = owner
            self.balance = initial or 0
            self.currency = currency
        elif event_type == "FundsDeposited":
            # Events are facts: saturate rather than fail on values `decide` never produces.
            self.balance = min(self.balance + amount("amount"), U64_MAX)
        elif event_type == "FundsWithdrawn":
            self.balance = max(self.balance - amount("amount"), 0)
        elif event_type == "AccountFrozen":
            text("reason")
            self.frozen = True
        elif event_type == "AccountUnfrozen":
            self.frozen = False
        elif event_type == "AccountClosed":
            self.closed = True
        else:
            raise ValueError(f"cannot decode {event_type} event: unknown event type")


# ---- the exported resource -----------------------------------------------------------------


class Instance(InstanceResource):
    def __init__(self, id: str) -> None:
        self.account = Account(id)

    @classmethod
    def restore(cls, id: str, snapshot: bytes) -> "Instance":
        try:
            account = Account.from_json(json.loads(snapshot))
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f"bank-account: cannot restore snapshot: {e}") from None
        instance = cls(id)
        instance.account = account
        return instance

    def apply(self, events) -> None:
        for event in events:
            try:
                data = json.loads(event.data)
                if not isinstance(data, dict):
                    raise ValueError(f"cannot decode {event.event_type} event: data is not an object")
                self.account.apply(event.event_type, data)
            except ValueError as e:
                raise Err(EventError(position=event.position, message=str(e))) from None

    def handle(self, command) -> list:
        try:
            kind, fields = decode_command(command.payload)
            return self.account.decide(kind, fields)
        except Invalid as e:
            raise Err(CommandError_Invalid(str(e))) from None
        except Rejected as e:
            raise Err(CommandError_Rejected(str(e))) from None

    def snapshot(self) -> bytes:
        return dumps(self.account.to_json()).encode()

    def state(self) -> str:
        return dumps(self.account.to_json())
