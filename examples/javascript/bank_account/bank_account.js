// The `bank-account` aggregate in JavaScript: accepts and rejects the same commands as the
// Rust `plugins/bank-account` (and the Python one), with the same events and messages.
//
// Amounts are integers in cents; an account holds one currency, fixed when it is opened.
// They are BigInts here: JSON numbers are parsed with their source text, so cents up to
// 2^64 - 1 stay exact, as in Rust. Amounts and balances the rules accept stay within
// 0..=2^53 - 1 (MAX_CENTS), as in the Rust plugin.
//
// Commands (the `payload` JSON of a command):
//   {"type":"Open","owner":"Ann","initial_deposit":100,"currency":"USD"}  (last two optional)
//   {"type":"Deposit","amount":100}          (optional "currency", which must be the account's)
//   {"type":"Withdraw","amount":50}
//   {"type":"Freeze","reason":"..."}
//   {"type":"Unfreeze"}
//   {"type":"Close"}                         (pays out the balance, then closes: two events)
//
// Events (type, schema version, data), exactly as the Rust plugin stores them:
//   AccountOpened   1  {"owner":"Ann","initial_deposit":100,"currency":"USD"}  (no initial_deposit
//                                                                               key when absent)
//   FundsDeposited  2  {"amount":100,"currency":"USD"}    (version 1 had no currency: USD)
//   FundsWithdrawn  1  {"amount":50}
//   AccountFrozen   1  {"reason":"..."}
//   AccountUnfrozen 1  {}
//   AccountClosed   1  {}
//
// Built with componentize-js against wit/v0.1.0/plugin.wit, world `aggregate-plugin`:
//   componentize-js --wit wit --world-name aggregate-plugin \
//     --disable http fetch-event -o bank-account-js.wasm examples/javascript/bank_account/bank_account.js

const DEFAULT_CURRENCY = 'USD';
const U64_MAX = 2n ** 64n - 1n;
// The largest amount and balance, in cents: exact as a JSON number in every language.
const MAX_CENTS = 2n ** 53n - 1n;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const EVENT_TYPES = [
  'AccountOpened',
  'FundsDeposited',
  'FundsWithdrawn',
  'AccountFrozen',
  'AccountUnfrozen',
  'AccountClosed',
];
const SCHEMA_VERSIONS = { FundsDeposited: 2 };
const COMMANDS = ['Open', 'Deposit', 'Withdraw', 'Freeze', 'Unfreeze', 'Close'];
// Each command's fields: [name, 'str' or 'i64', required].
const COMMAND_FIELDS = {
  Open: [['owner', 'str', true], ['initial_deposit', 'i64', false], ['currency', 'str', false]],
  Deposit: [['amount', 'i64', true], ['currency', 'str', false]],
  Withdraw: [['amount', 'i64', true]],
  Freeze: [['reason', 'str', true]],
  Unfreeze: [],
  Close: [],
};
// What Rust's `str::trim` strips (Unicode White_Space).
const WHITE_SPACE = new Set(
  '\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000',
);

/** An error a WIT `result` carries: the host receives `payload`. */
function fail(payload) {
  const error = new Error(String(payload.val ?? payload.message ?? payload));
  error.payload = payload;
  return error;
}

class Rejected extends Error {}
class Invalid extends Error {}

/** JSON with integers as BigInt (from their source text), other numbers as numbers. */
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === 'number' && context && /^-?\d+$/.test(context.source) ? BigInt(context.source) : value,
  );
}

/** Compact JSON, keys in the order given, BigInts as integers. */
function dumps(value) {
  if (typeof value === 'bigint') return value.toString();
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return '[' + value.map(dumps).join(',') + ']';
  if (typeof value === 'object') {
    return '{' + Object.entries(value).map(([k, v]) => JSON.stringify(k) + ':' + dumps(v)).join(',') + '}';
  }
  return JSON.stringify(value);
}

/** A string quoted the way Rust's `{:?}` quotes it. */
function rustDebug(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\0') out += '\\0';
    else if (code < 0x20 || code === 0x7f) out += '\\u{' + code.toString(16) + '}';
    else out += ch;
  }
  return out + '"';
}

const isBlank = (text) => [...text].every((ch) => WHITE_SPACE.has(ch));
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// ---- decoding commands -------------------------------------------------------------------------

function field(payload, name, kind, required) {
  const value = payload[name];
  if (value === undefined || (value === null && !required)) {
    if (required) throw new Invalid(`missing field \`${name}\``);
    return null;
  }
  if (kind === 'str') {
    if (typeof value !== 'string') throw new Invalid(`invalid type: ${dumps(value)}, expected a string for \`${name}\``);
  } else if (typeof value !== 'bigint') {
    throw new Invalid(`invalid type: ${dumps(value)}, expected i64 for \`${name}\``);
  } else if (value < I64_MIN || value > I64_MAX) {
    throw new Invalid(`invalid value: integer \`${value}\`, expected i64 for \`${name}\``);
  }
  return value;
}

function decodeCommand(text) {
  let payload;
  try {
    payload = parseJson(text);
  } catch (e) {
    throw new Invalid(`the command is not JSON: ${e.message}`);
  }
  if (!isObject(payload)) throw new Invalid(`invalid type: ${dumps(payload)}, expected internally tagged enum`);
  const type = field(payload, 'type', 'str', true);
  if (!COMMANDS.includes(type)) {
    throw new Invalid(`unknown variant \`${type}\`, expected one of ${COMMANDS.map((c) => '`' + c + '`').join(', ')}`);
  }
  // Every field is decoded before any rule runs: a malformed command is invalid, whatever
  // the state of the account.
  const fields = {};
  for (const [name, kind, required] of COMMAND_FIELDS[type]) fields[name] = field(payload, name, kind, required);
  return [type, fields];
}

// ---- the rules ---------------------------------------------------------------------------------

function positive(amount) {
  if (amount <= 0n) throw new Rejected(`amount must be a positive number of cents, got ${amount}`);
  if (amount > MAX_CENTS) throw new Rejected(`amount must be at most ${MAX_CENTS} cents, got ${amount}`);
  return amount;
}

function validCurrency(code) {
  const ok = new TextEncoder().encode(code).length === 3 && [...code].every((c) => c >= 'A' && c <= 'Z');
  if (!ok) throw new Rejected(`currency must be a three-letter ISO 4217 code such as USD, got ${rustDebug(code)}`);
  return code;
}

function newEvent(eventType, data) {
  return {
    eventType,
    schemaVersion: SCHEMA_VERSIONS[eventType] ?? 1,
    data: dumps(data),
    subjectId: undefined,
    personalData: undefined,
  };
}

function initialState(id) {
  return { id, owner: null, balance: 0n, currency: null, frozen: false, open: false, closed: false };
}

/** The events for the decoded command `type` with fields `c`, or `Rejected`. */
function decide(s, type, c) {
  if (s.closed) throw new Rejected(`account ${s.id} is closed`);
  if (type !== 'Close') return [decideOne(s, type, c)];
  if (!s.open) throw new Rejected(`account ${s.id} is not open`);
  if (s.frozen) throw new Rejected(`account ${s.id} is frozen`);
  const payout = s.balance > 0n ? [newEvent('FundsWithdrawn', { amount: s.balance })] : [];
  return [...payout, newEvent('AccountClosed', {})];
}

/** The one event of a command other than Close. */
function decideOne(s, type, c) {
  const currencyOf = () => s.currency ?? DEFAULT_CURRENCY;
  const ensureMovable = () => {
    if (s.frozen) throw new Rejected(`account ${s.id} is frozen`);
  };
  if (!s.open && type !== 'Open') throw new Rejected(`account ${s.id} is not open`);
  switch (type) {
    case 'Open': {
      if (s.open) throw new Rejected(`account ${s.id} is already open`);
      if (isBlank(c.owner)) throw new Rejected('owner must not be empty');
      const data = { owner: c.owner };
      if (c.initial_deposit !== null) data.initial_deposit = positive(c.initial_deposit);
      data.currency = validCurrency(c.currency ?? DEFAULT_CURRENCY);
      return newEvent('AccountOpened', data);
    }
    case 'Deposit': {
      const amount = positive(c.amount);
      ensureMovable();
      const currency = c.currency ?? currencyOf();
      if (currency !== currencyOf()) {
        throw new Rejected(`currency mismatch: account ${s.id} holds ${currencyOf()}, deposit is in ${currency}`);
      }
      if (s.balance + amount > MAX_CENTS) {
        throw new Rejected(`deposit of ${amount} would take the balance ${s.balance} over ${MAX_CENTS} cents`);
      }
      return newEvent('FundsDeposited', { amount, currency });
    }
    case 'Withdraw': {
      const amount = positive(c.amount);
      ensureMovable();
      if (amount > s.balance) throw new Rejected(`insufficient funds: balance ${s.balance}, withdrawal ${amount}`);
      return newEvent('FundsWithdrawn', { amount });
    }
    case 'Freeze':
      if (s.frozen) throw new Rejected(`account ${s.id} is already frozen`);
      if (isBlank(c.reason)) throw new Rejected('a freeze needs a reason');
      return newEvent('AccountFrozen', { reason: c.reason });
    default: // Unfreeze
      if (!s.frozen) throw new Rejected(`account ${s.id} is not frozen`);
      return newEvent('AccountUnfrozen', {});
  }
}

function applyEvent(s, type, data) {
  const bad = (name, expected) =>
    new Error(`cannot decode ${type} event: invalid ${name} ${dumps(data[name] ?? null)}, expected ${expected}`);
  const amount = (name, required = true) => {
    const value = data[name];
    if ((value === undefined || value === null) && !required) return null;
    if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) throw bad(name, 'u64');
    return value;
  };
  const text = (name, fallback) => {
    const value = data[name] === undefined ? fallback : data[name];
    if (typeof value !== 'string') throw bad(name, 'a string');
    return value;
  };
  switch (type) {
    case 'AccountOpened': {
      const owner = text('owner');
      const initial = amount('initial_deposit', false);
      const currency = text('currency', DEFAULT_CURRENCY);
      Object.assign(s, { open: true, owner, balance: initial ?? 0n, currency });
      break;
    }
    case 'FundsDeposited': {
      // Events are facts: saturate rather than fail on values `decide` never produces.
      const sum = s.balance + amount('amount');
      s.balance = sum > U64_MAX ? U64_MAX : sum;
      break;
    }
    case 'FundsWithdrawn': {
      const rest = s.balance - amount('amount');
      s.balance = rest < 0n ? 0n : rest;
      break;
    }
    case 'AccountFrozen':
      text('reason');
      s.frozen = true;
      break;
    case 'AccountUnfrozen':
      s.frozen = false;
      break;
    case 'AccountClosed':
      s.closed = true;
      break;
    default:
      throw new Error(`cannot decode ${type} event: unknown event type`);
  }
}

// ---- the exports -------------------------------------------------------------------------------

class Instance {
  constructor(id) {
    this.s = initialState(id);
  }

  static restore(id, snapshot) {
    let s;
    try {
      s = parseJson(new TextDecoder().decode(snapshot));
      if (!isObject(s) || typeof s.balance !== 'bigint') throw new Error('not a bank-account state');
    } catch (e) {
      throw fail(`bank-account: cannot restore snapshot: ${e.message}`);
    }
    const instance = new Instance(id);
    instance.s = { ...initialState(s.id), ...s };
    return instance;
  }

  apply(events) {
    for (const event of events) {
      try {
        const data = parseJson(event.data);
        if (!isObject(data)) throw new Error(`cannot decode ${event.eventType} event: data is not an object`);
        applyEvent(this.s, event.eventType, data);
      } catch (e) {
        throw fail({ position: event.position, message: e.message });
      }
    }
  }

  handle(command) {
    try {
      const [type, fields] = decodeCommand(command.payload);
      return decide(this.s, type, fields);
    } catch (e) {
      if (e instanceof Invalid) throw fail({ tag: 'invalid', val: e.message });
      if (e instanceof Rejected) throw fail({ tag: 'rejected', val: e.message });
      throw e;
    }
  }

  snapshot() {
    return new TextEncoder().encode(this.state());
  }

  state() {
    const { id, owner, balance, currency, frozen, open, closed } = this.s;
    return dumps({ id, owner, balance, currency, frozen, open, closed });
  }
}

export const aggregate = { Instance };

export function describe() {
  return { name: 'bank-account', kind: 'aggregate', version: '0.1.0', handles: EVENT_TYPES, upcasts: [] };
}
