// A real Express app on a real port: limits enforced exactly under
// concurrent requests, headers and 429 bodies; express-rate-limit with
// this package's Store; rate-limiter-flexible's consume() shape; metrics.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import express from 'express';
import { rateLimit as expressRateLimit } from 'express-rate-limit';
import client from 'prom-client';

import { RateLimiter } from '../lib/index.js';
import { FlexibleRateLimiter, RatelimitStore, byHeader, rateLimit } from '../lib/express.js';
import { prometheusMetrics } from '../lib/prometheus.js';
import { startBackend } from './servers.js';

async function serve(app) {
  const server = await new Promise((ok) => {
    const s = app.listen(0, '127.0.0.1', () => ok(s));
  });
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((ok) => server.close(ok)) };
}

test('an Express app limits exactly, with IETF headers and a 429 body', async () => {
  const redis = await startBackend('module');
  const registry = new client.Registry();
  const limiter = await new RateLimiter({ url: redis.url(), timeoutMs: 2000, metrics: prometheusMetrics({ registry }) }).connect();
  const app = express();
  app.get('/api', rateLimit({ limiter, limit: '10 60', key: byHeader('X-API-Key') }), (req, res) => res.json({ ok: true }));
  const http = await serve(app);
  try {
    const responses = await Promise.all(Array.from({ length: 30 }, () => fetch(`${http.base}/api`, { headers: { 'X-API-Key': 'k1' } })));
    const statuses = responses.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 10);
    assert.equal(statuses.filter((s) => s === 429).length, 20);
    const denied = responses.find((r) => r.status === 429);
    assert.equal(denied.headers.get('ratelimit-policy'), '"default";q=10;w=60');
    assert.match(denied.headers.get('ratelimit'), /^"default";r=0;t=(59|60)$/);
    assert.match(denied.headers.get('retry-after'), /^(59|60)$/);
    assert.deepEqual(Object.keys(await denied.json()), ['error', 'retryAfterSeconds', 'policy']);
    const allowed = responses.find((r) => r.status === 200);
    assert.equal(allowed.headers.get('retry-after'), null);
    // Another key has its own limit.
    assert.equal((await fetch(`${http.base}/api`, { headers: { 'X-API-Key': 'k2' } })).status, 200);
    const text = await registry.metrics();
    assert.match(text, /ratelimit_client_decisions_total\{policy="default",event="allowed"\} 11/);
    assert.match(text, /ratelimit_client_decisions_total\{policy="default",event="denied"\} 20/);
  } finally {
    await http.close();
    await limiter.close();
    await redis.remove();
  }
});

test('express-rate-limit with RatelimitStore admits exactly its limit and counts no denial', async () => {
  const redis = await startBackend('functions');
  const limiter = await new RateLimiter({ url: redis.url(), timeoutMs: 2000 }).connect();
  const app = express();
  app.use(expressRateLimit({ windowMs: 60_000, limit: 7, standardHeaders: 'draft-8', legacyHeaders: false, store: new RatelimitStore({ limiter }) }));
  app.get('/', (req, res) => res.send('ok'));
  const http = await serve(app);
  try {
    const statuses = (await Promise.all(Array.from({ length: 25 }, () => fetch(`${http.base}/`)))).map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 7);
    assert.equal(statuses.filter((s) => s === 429).length, 18);
    const [key] = await limiter.client.sendCommand(['KEYS', 'erl:*']);
    assert.equal(await limiter.client.sendCommand(['GET', key]), '7');
  } finally {
    await http.close();
    await limiter.close();
    await redis.remove();
  }
});

test('consume() has rate-limiter-flexible\'s shape: resolves when admitted, rejects with the result when not', async () => {
  const redis = await startBackend('module');
  const limiter = await new RateLimiter({ url: redis.url(), timeoutMs: 2000 }).connect();
  try {
    const flexible = new FlexibleRateLimiter({ limiter, points: 5, duration: 60 });
    const first = await flexible.consume('user', 2);
    assert.deepEqual(first.toJSON(), { msBeforeNext: 60000, remainingPoints: 3, consumedPoints: 2, isFirstInDuration: true });
    const second = await flexible.consume('user', 3);
    assert.deepEqual([second.remainingPoints, second.consumedPoints, second.isFirstInDuration], [0, 5, false]);
    const rejected = await flexible.consume('user', 1).then(() => null, (res) => res);
    assert.ok(rejected.msBeforeNext > 0 && rejected.msBeforeNext <= 60000);
    assert.deepEqual([rejected.remainingPoints, rejected.consumedPoints], [0, 6]);
    assert.equal((await flexible.get('user')).consumedPoints, 5);
  } finally {
    await limiter.close();
    await redis.remove();
  }
});
