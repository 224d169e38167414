// The `{{NAME}}` upcaster: Added version 1 ({"n":N}) becomes version 2 ({"by":N}).

function failure(message) {
  const error = new Error(message);
  error.payload = message;
  return error;
}

export function describe() {
  return {
    name: '{{NAME}}',
    kind: 'upcaster',
    version: '0.1.0',
    handles: ['Added'],
    upcasts: [{ eventType: 'Added', schemaVersion: 1 }],
  };
}

export const upcaster = {
  upcast(event) {
    if (event.eventType !== 'Added' || event.schemaVersion !== 1) return { tag: 'unchanged' };
    const data = JSON.parse(event.data);
    if (data === null || typeof data !== 'object' || !Object.hasOwn(data, 'n')) {
      throw failure(`Added v1 at position ${event.position} has no n`);
    }
    data.by = data.n;
    delete data.n;
    return { tag: 'upcasted', val: { eventType: 'Added', schemaVersion: 2, data: JSON.stringify(data) } };
  },
};
