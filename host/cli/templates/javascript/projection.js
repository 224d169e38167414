// The `{{NAME}}` projection: the count of every counter stream.
// Query `count` {"stream":"counter-1"} answers {"stream":"counter-1","count":N}.

import { get, put } from 'eshost:plugin/read-model@0.1.0';

const NAME = '{{NAME}}';
const HANDLES = ['Added', 'Reset'];

function queryError(tag, message) {
  const error = new Error(message);
  error.payload = { tag, val: message };
  return error;
}

export function describe() {
  return { name: NAME, kind: 'projection', version: '0.1.0', handles: HANDLES, upcasts: [] };
}

export const projection = {
  handle(events) {
    for (const event of events) {
      const key = `count/${event.streamId}`;
      let count = Number(get(key) ?? '0');
      if (event.eventType === 'Added') {
        const { by } = JSON.parse(event.data);
        if (!Number.isSafeInteger(by)) {
          const error = new Error('an Added without by');
          error.payload = { position: event.position, message: 'an Added without by' };
          throw error;
        }
        count += by;
      } else if (event.eventType === 'Reset') {
        count = 0;
      }
      put(key, String(count));
    }
  },

  query(name, args) {
    if (name !== 'count') throw queryError('unknown-query', `no query named ${JSON.stringify(name)}`);
    const parsed = args ? JSON.parse(args) : null;
    const stream = parsed !== null && typeof parsed === 'object' ? parsed.stream : undefined;
    if (typeof stream !== 'string') throw queryError('invalid-args', 'expected {"stream":"..."}');
    const count = Number(get(`count/${stream}`) ?? '0');
    return JSON.stringify({ stream, count });
  },
};
