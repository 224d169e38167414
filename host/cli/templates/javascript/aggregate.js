// The `{{NAME}}` aggregate: a counter.
// Commands: {"type":"Add","by":N} (N > 0) emits Added {"by":N} (schema version 2; version 1
// had "n"); {"type":"Reset"} emits Reset (refused at zero). State: {"count":N}.

const NAME = '{{NAME}}';

/** An error a WIT `result` carries: the host receives `payload`. */
function fail(payload) {
  const error = new Error(String(payload.val ?? payload.message ?? payload));
  error.payload = payload;
  return error;
}

class Instance {
  constructor(id) {
    this.count = 0;
  }

  static restore(id, snapshot) {
    const instance = new Instance(id);
    try {
      instance.count = JSON.parse(new TextDecoder().decode(snapshot)).count;
    } catch (e) {
      throw fail(`not a ${id} snapshot: ${e.message}`);
    }
    return instance;
  }

  apply(events) {
    for (const event of events) {
      if (event.eventType === 'Added') {
        const { by } = JSON.parse(event.data);
        if (!Number.isSafeInteger(by)) throw fail({ position: event.position, message: 'an Added without by' });
        this.count += by;
      } else if (event.eventType === 'Reset') {
        this.count = 0;
      }
    }
  }

  handle(command) {
    // Decode the whole command before any rule: a malformed one is invalid, not rejected.
    let payload;
    try {
      payload = JSON.parse(command.payload);
    } catch (e) {
      throw fail({ tag: 'invalid', val: `the command is not JSON: ${e.message}` });
    }
    const kind = payload !== null && typeof payload === 'object' ? payload.type : undefined;
    if (kind === 'Add') {
      const { by } = payload;
      if (!Number.isSafeInteger(by)) throw fail({ tag: 'invalid', val: 'expected {"type":"Add","by":N}' });
      if (by <= 0) throw fail({ tag: 'rejected', val: `by must be positive, got ${by}` });
      return [{ eventType: 'Added', schemaVersion: 2, data: JSON.stringify({ by }) }];
    }
    if (kind === 'Reset') {
      if (this.count === 0) throw fail({ tag: 'rejected', val: 'nothing to reset' });
      return [{ eventType: 'Reset', schemaVersion: 1, data: '{}' }];
    }
    throw fail({ tag: 'invalid', val: `unknown command ${JSON.stringify(kind)}` });
  }

  snapshot() {
    return new TextEncoder().encode(JSON.stringify({ count: this.count }));
  }

  state() {
    return JSON.stringify({ count: this.count });
  }
}

export const aggregate = { Instance };

export function describe() {
  return { name: NAME, kind: 'aggregate', version: '0.1.0', handles: ['Added', 'Reset'], upcasts: [] };
}
