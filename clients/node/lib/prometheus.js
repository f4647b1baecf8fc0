// A `metrics` callback that counts in prom-client (an optional peer
// dependency): one counter, `<namespace>_decisions_total{policy, event}`.

import client from 'prom-client';

export function prometheusMetrics({ registry = client.register, namespace = 'ratelimit_client' } = {}) {
  const counter = new client.Counter({
    name: `${namespace}_decisions_total`,
    help: 'Rate-limit decisions and errors, by policy and event',
    labelNames: ['policy', 'event'],
    registers: [registry],
  });
  return (event, policy) => counter.inc({ policy: policy ?? 'default', event });
}
