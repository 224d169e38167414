// The `deposit-currency` upcaster in JavaScript: the same rewrite as the Rust
// `plugins/deposit-currency`.
//
// `FundsDeposited` version 1 had no `currency`; version 2 has one. This upcaster raises a
// version-1 event to version 2 with `"currency": "USD"` (the only currency there was), keeping
// every other field. The host calls it only for the (type, version) pairs `describe` lists in
// `upcasts`, and chains upcasters, so each one raises an event by one step.
//
// Built with componentize-js against wit/v0.1.0/plugin.wit, world `upcaster-plugin`.

const NAME = 'deposit-currency';
const VERSION = '0.1.0';

/** An error a WIT `result` carries: the host receives `payload`. */
function failure(message) {
  const error = new Error(message);
  error.payload = message;
  return error;
}

export function describe() {
  return {
    name: NAME,
    kind: 'upcaster',
    version: VERSION,
    // The types it may produce (a rename would list the new name here).
    handles: ['FundsDeposited'],
    upcasts: [{ eventType: 'FundsDeposited', schemaVersion: 1 }],
  };
}

export const upcaster = {
  upcast(event) {
    if (event.eventType !== 'FundsDeposited' || event.schemaVersion !== 1) {
      return { tag: 'unchanged' };
    }
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (e) {
      throw failure(`FundsDeposited v1 at position ${event.position}: ${e.message}`);
    }
    const amount = data !== null && typeof data === 'object' ? data.amount : undefined;
    if (!Number.isSafeInteger(amount) || amount < 0) {
      throw failure(`FundsDeposited v1 at position ${event.position} has no amount in cents`);
    }
    if (!Object.hasOwn(data, 'currency')) data.currency = 'USD';
    return {
      tag: 'upcasted',
      val: { eventType: 'FundsDeposited', schemaVersion: 2, data: JSON.stringify(data) },
    };
  },
};
