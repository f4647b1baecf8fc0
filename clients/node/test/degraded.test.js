// Redis killed mid-traffic: the breaker opens, local decisions are bounded
// by the local limit, nothing is thrown into the app, and the breaker
// closes once the server is back.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Limit, LocalLimiter, RateLimiter } from '../lib/index.js';
import { startBackend } from './servers.js';

test('killed mid-traffic, decided locally within the limit, back to Redis after', async () => {
  const redis = await startBackend('module');
  const limiter = await new RateLimiter({ url: redis.url(), timeoutMs: 200, failureThreshold: 3, cooldownMs: 200, onUnavailable: 'local' }).connect();
  try {
    for (let i = 0; i < 3; i++) assert.equal((await limiter.check('k', '5 60')).degraded, false);
    await redis.stopped();
    const during = [];
    for (let i = 0; i < 50; i++) during.push(await limiter.check('k', '5 60'));
    assert.ok(during.every((d) => d.degraded && d.degradedBy === 'local'));
    assert.equal(during.filter((d) => d.allowed).length, 5);
    assert.equal(limiter.breaker.state, 'open');
    await redis.start();
    const giveUp = Date.now() + 15000;
    let d;
    do {
      assert.ok(Date.now() < giveUp, 'never back on Redis');
      d = await limiter.check('k', '5 60');
      if (d.degraded) await new Promise((ok) => setTimeout(ok, 20));
    } while (d.degraded);
    assert.equal(limiter.breaker.state, 'closed');
    assert.deepEqual([d.allowed, d.remaining], [true, 4]);
  } finally {
    await limiter.close();
    await redis.remove();
  }
});

for (const [mode, allowed] of [['open', true], ['closed', false]]) {
  test(`fail-${mode} decisions are marked degraded`, async () => {
    const redis = await startBackend('module');
    const limiter = await new RateLimiter({ url: redis.url(), onUnavailable: mode, failureThreshold: 1, cooldownMs: 60000 }).connect();
    try {
      await redis.stopped();
      const d = await limiter.check('k', '5 60');
      assert.deepEqual([d.allowed, d.degraded, d.degradedBy], [allowed, true, mode]);
      assert.equal('RateLimit' in d.headers(), false);
      assert.equal((await limiter.acquire('jobs', 1, 1000)).acquired, allowed);
    } finally {
      await limiter.close();
      await redis.remove();
    }
  });
}

test('the local MPEEK names the binding limit the module names', async () => {
  // MPEEK shows the counts as they are, but picks the binding limit on the
  // answers with each cost, as MCHECK would: 5 of 10 left (0.5, then 0.4
  // after one more) against 45 of 100 (0.45, then 0.44).
  const redis = await startBackend('module');
  const module = await new RateLimiter({ url: redis.url(), timeoutMs: 2000 }).connect();
  try {
    const local = new LocalLimiter();
    const small = Limit.parse('10 3600');
    const large = Limit.parse('100 3600');
    const charge = [{ key: '{b}small', limit: small, cost: 5 }, { key: '{b}large', limit: large, cost: 55 }];
    const ask = [{ key: '{b}small', limit: small, cost: 1 }, { key: '{b}large', limit: large, cost: 1 }];
    local.mcheck(charge);
    await module.mcheck(charge);
    const peeked = await module.mpeek(ask);
    assert.deepEqual([peeked.allowed, peeked.binding, peeked.remaining], [true, 0, 5]);
    const reply = local.mcheck(ask, true);
    assert.deepEqual([reply[0], reply[5] - 1, reply[1]], [1, peeked.binding, peeked.remaining]);
  } finally {
    await module.close();
    await redis.remove();
  }
});
