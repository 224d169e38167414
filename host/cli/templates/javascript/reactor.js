// The `{{NAME}}` reactor: a large add to a counter (`by` of 100 or more) is logged as a
// `LargeAdd` event in the reactor's own stream `{{NAME}}-log`.
//
// A reactor can also send commands to aggregates (`{ tag: 'send', val: {...} }`) and set
// timers (`{ tag: 'timer', val: {...} }`), and hears what came of them as events of its stream
// `$reactor-{{NAME}}`; see the eshost checkout's docs/plugins-python.md, section 5c (the same
// contract). Built against the 0.2 contract (wit/v0.2.0), whose world `reactor-plugin` added
// reactors.

const NAME = '{{NAME}}';
const LOG = `${NAME}-log`;
const LARGE = 100;

export function describe() {
  return { name: NAME, kind: 'reactor', version: '0.1.0', handles: ['Added'], upcasts: [] };
}

export const reactor = {
  handle(events) {
    const intents = [];
    for (const event of events) {
      if (event.eventType !== 'Added') continue; // its own stream's outcome events: it asks for none
      const { by } = JSON.parse(event.data);
      if (!Number.isSafeInteger(by)) {
        const error = new Error('an Added without by');
        error.payload = { position: event.position, message: 'an Added without by' };
        throw error;
      }
      if (by < LARGE) continue;
      const logged = {
        eventType: 'LargeAdd',
        schemaVersion: 1,
        data: JSON.stringify({ stream: event.streamId, by }),
      };
      intents.push({ cause: event.position, effect: { tag: 'append', val: { streamId: LOG, events: [logged] } } });
    }
    return intents;
  },

  query(name) {
    const error = new Error(`no query named ${JSON.stringify(name)}`);
    error.payload = { tag: 'unknown-query', val: error.message };
    throw error;
  },
};
