// The `balances` projection in JavaScript: the same read model as the Rust `plugins/balances`.
//
// The balance of every account (one stream per account, the stream id being the account id)
// and the bank's totals.
//
// Read-model keys (values are compact JSON, byte for byte what the Rust plugin writes):
//   account/<id>       {"account":"account-1","balance":75,"currency":"USD"}
//   total/<currency>   cents, e.g. 125
//   accounts           how many accounts, e.g. 3
//
// Queries:
//   balance   {"account":"account-1"}        -> {"account":..,"balance":..,"currency":..}
//   total     null                           -> {"accounts":..,"by_currency":{..},"total":..}
//   accounts  null | {"after":..,"limit":..} -> [{"account":..,"balance":..,"currency":..}, ..]
//
// Amounts are JavaScript numbers: an amount or balance beyond 2^53 - 1 cents is refused as an
// event error rather than rounded.
//
// Built with componentize-js against wit/v0.1.0/plugin.wit, world `projection-plugin`:
//   componentize-js --wit wit --world-name projection-plugin \
//     --disable http fetch-event -o balances-js.wasm examples/javascript/balances/balances.js

import * as readModel from 'eshost:plugin/read-model@0.1.0';

const NAME = 'balances';
const VERSION = '0.1.0';
const HANDLES = ['AccountOpened', 'FundsDeposited', 'FundsWithdrawn'];
const DEFAULT_CURRENCY = 'USD';
const U32_MAX = 4294967295;
const SCAN_PAGE = 256;

/** A failure the host sees as an `event-error` at the failing event's position. */
class PluginFailure extends Error {}

/** Compact JSON with sorted object keys, as serde_json writes it. */
function dumps(value) {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

// Stream ids may contain `/`, the key separator: escape it (and `%`) so that the key of one
// account is never a prefix of another's.
function accountKey(id) {
  if (id.includes('/') || id.includes('%')) {
    id = id.replaceAll('%', '%25').replaceAll('/', '%2F');
  }
  return 'account/' + id;
}

// ---- decoding event data, with the rules of the Rust plugin's serde types -------------------

function amountField(data, eventType, name, required) {
  const value = data[name];
  if (value === undefined || (value === null && !required)) {
    if (required) throw new PluginFailure(`cannot decode ${eventType} event: missing field \`${name}\``);
    return null;
  }
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PluginFailure(
      `cannot decode ${eventType} event: invalid value ${JSON.stringify(value)} for \`${name}\`, ` +
        'expected a whole number of cents from 0 to 2^53 - 1',
    );
  }
  return value;
}

function currencyField(data, eventType) {
  const value = data.currency === undefined ? DEFAULT_CURRENCY : data.currency;
  if (typeof value !== 'string') {
    throw new PluginFailure(
      `cannot decode ${eventType} event: invalid value ${JSON.stringify(value)} for \`currency\`, expected a string`,
    );
  }
  return value;
}

function add(a, b) {
  const total = a + b;
  if (!Number.isSafeInteger(total)) throw new PluginFailure(`balance overflow adding ${b} to ${a}`);
  return total;
}

// ---- the read model, cached for one batch ----------------------------------------------------

/** One batch's reads and writes, kept in the guest (decoded) and written through once at the
 * end: a hot key (a bank total) costs one host call and one JSON decode to read, and one
 * encode and one host call to write, per batch rather than per event. */
class Batch {
  constructor() {
    this.values = new Map(); // key -> decoded JSON value, or null when known absent
    this.dirty = new Set();
  }

  getJson(key) {
    if (!this.values.has(key)) {
      const text = readModel.get(key);
      let value = null;
      if (text !== undefined && text !== null) {
        try {
          value = JSON.parse(text);
        } catch (e) {
          throw new PluginFailure(`read model key ${JSON.stringify(key)}: ${e.message}`);
        }
      }
      this.values.set(key, value);
    }
    return this.values.get(key);
  }

  putJson(key, value) {
    this.values.set(key, value);
    this.dirty.add(key);
  }

  flush() {
    for (const key of [...this.dirty].sort()) {
      const value = this.values.get(key);
      if (value === null) readModel.delete(key);
      else readModel.put(key, dumps(value));
    }
    this.dirty.clear();
  }
}

function handleEvent(event, data, model) {
  const key = accountKey(event.streamId);
  const existing = model.getJson(key);
  // A copy: the batch's value changes only through putJson.
  const account = existing === null ? { account: event.streamId, balance: 0, currency: DEFAULT_CURRENCY } : { ...existing };
  const type = event.eventType;
  let delta;
  let currency;
  if (type === 'AccountOpened') {
    currency = currencyField(data, type);
    account.currency = currency;
    delta = amountField(data, type, 'initial_deposit', false) ?? 0;
  } else if (type === 'FundsDeposited') {
    delta = amountField(data, type, 'amount', true);
    currency = currencyField(data, type); // v1 deposits have none and were in USD
  } else {
    delta = -amountField(data, type, 'amount', true);
    currency = account.currency;
  }
  account.balance = add(account.balance, delta);
  model.putJson(key, account);

  const totalKey = 'total/' + currency;
  model.putJson(totalKey, add(model.getJson(totalKey) ?? 0, delta));

  if (existing === null) model.putJson('accounts', (model.getJson('accounts') ?? 0) + 1);
}

// ---- queries ---------------------------------------------------------------------------------

/** A query error: `tag` is the `query-error` case, `val` its message. */
function queryError(tag, message) {
  const error = new Error(message);
  error.payload = { tag, val: message };
  return error;
}

function scanAll(prefix) {
  const entries = [];
  for (;;) {
    const after = entries.length ? entries[entries.length - 1][0] : undefined;
    const page = readModel.scan(prefix, after, SCAN_PAGE);
    entries.push(...page);
    if (page.length < SCAN_PAGE) return entries;
  }
}

function parseValue(key, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw queryError('failed', `read model key ${JSON.stringify(key)}: ${e.message}`);
  }
}

function parseArgs(args) {
  if (args.trim() === '') return null;
  try {
    return JSON.parse(args);
  } catch (e) {
    throw queryError('invalid-args', `arguments are not JSON: ${e.message}`);
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

const QUERIES = {
  balance(args) {
    if (!isObject(args)) throw queryError('invalid-args', 'expected an object {"account": "<id>"}');
    if (!('account' in args)) throw queryError('invalid-args', 'missing field `account`');
    if (typeof args.account !== 'string') throw queryError('invalid-args', '`account` must be a string');
    const key = accountKey(args.account);
    const text = readModel.get(key);
    if (text === undefined || text === null) {
      throw queryError('invalid-args', `no account ${JSON.stringify(args.account)}`);
    }
    return parseValue(key, text);
  },

  total() {
    const byCurrency = {};
    let total = 0;
    for (const [key, value] of scanAll('total/')) {
      const cents = parseValue(key, value);
      total += cents;
      byCurrency[key.slice('total/'.length)] = cents;
    }
    const count = readModel.get('accounts');
    const accounts = count === undefined || count === null ? 0 : parseValue('accounts', count);
    return { accounts, by_currency: byCurrency, total };
  },

  accounts(args) {
    args = args ?? {};
    if (!isObject(args)) throw queryError('invalid-args', 'expected null or an object {"after", "limit"}');
    const after = args.after ?? null;
    const limit = args.limit ?? null;
    if (after !== null && typeof after !== 'string') throw queryError('invalid-args', '`after` must be a string');
    if (limit !== null && !(Number.isInteger(limit) && limit >= 0 && limit <= U32_MAX)) {
      throw queryError('invalid-args', '`limit` must be an integer from 0 to 4294967295');
    }
    const afterKey = after === null ? undefined : accountKey(after);
    let entries;
    if (limit !== null) entries = readModel.scan('account/', afterKey, limit);
    else if (afterKey === undefined) entries = scanAll('account/');
    else entries = readModel.scan('account/', afterKey, U32_MAX);
    return entries.map(([key, value]) => parseValue(key, value));
  },
};

// ---- the exports -----------------------------------------------------------------------------

export function describe() {
  return { name: NAME, kind: 'projection', version: VERSION, handles: HANDLES, upcasts: [] };
}

export const projection = {
  handle(events) {
    const model = new Batch();
    try {
      for (const event of events) {
        if (!HANDLES.includes(event.eventType)) continue;
        try {
          const data = JSON.parse(event.data);
          if (!isObject(data)) {
            throw new PluginFailure(`cannot decode ${event.eventType} event: data is not an object`);
          }
          handleEvent(event, data, model);
        } catch (e) {
          if (!(e instanceof PluginFailure || e instanceof SyntaxError)) throw e;
          const error = new Error(e.message);
          error.payload = { position: event.position, message: e.message };
          throw error;
        }
      }
    } finally {
      // Flushed even after a failure, like the Rust SDK: the host commits a batch's writes
      // with the checkpoint, or not at all.
      model.flush();
    }
  },

  query(name, args) {
    const run = Object.hasOwn(QUERIES, name) ? QUERIES[name] : undefined;
    if (run === undefined) throw queryError('unknown-query', `no query named ${JSON.stringify(name)}`);
    return dumps(run(parseArgs(args)));
  },
};
