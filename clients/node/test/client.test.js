// Every client call on every backend (module, Functions library, and the
// script on Redis 6.2 when present), exactness under concurrency, the
// shipped library and the version.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { createClient } from 'redis';

import { Acquired, Decision, Denied, LIBRARY, Limit, RateLimiter, SpecError, Throttle, VERSION, libraryVersion } from '../lib/index.js';
import { REPO, startBackend } from './servers.js';

test('the version is Cargo.toml\'s and the library is fallback/ratelimit.lua byte for byte', () => {
  const cargo = readFileSync(join(REPO, 'Cargo.toml'), 'utf8');
  assert.equal(VERSION, /^version = "([^"]+)"/m.exec(cargo)[1]);
  assert.equal(LIBRARY, readFileSync(join(REPO, 'fallback', 'ratelimit.lua'), 'utf8'));
  const [a, b, c] = VERSION.split('.').map(Number);
  assert.equal(libraryVersion(LIBRARY), a * 10000 + b * 100 + c);
});

test('a limit is checked before it is sent', () => {
  assert.throws(() => Limit.parse('0 60'), SpecError);
  assert.throws(() => Limit.parse('10 60 BURST 5'), /BURST is only valid/);
  assert.equal(Limit.parse('100 60 algorithm token burst 20 shadow').spec(), '100 60 ALGORITHM TOKEN BURST 20 SHADOW');
});

for (const backend of ['module', 'functions', 'script']) {
  test(`every call has typed results (${backend})`, async (t) => {
    const server = await startBackend(backend);
    if (!server) return t.skip('no Redis 6.2 here (`make test-matrix` installs one into target/servers)');
    const limiter = await new RateLimiter({ url: server.url(), timeoutMs: 2000 }).connect();
    try {
      const d = await limiter.check('user:1', '3 60');
      assert.equal(await limiter.backend(), backend);
      assert.deepEqual({ ...d }, { ...new Decision({ allowed: true, remaining: 2, limit: 3, retryAfterMs: null, resetAfterMs: 60000, periodSeconds: 60 }) });
      assert.equal((await limiter.check('user:1', { limit: 3, periodSeconds: 60 }, { cost: 3 })).allowed, false);
      assert.equal((await limiter.peek('user:1', '3 60')).remaining, 2);
      const tok = await limiter.check('tok', '10 60 ALGORITHM TOKEN BURST 20', { cost: 15 });
      assert.deepEqual([tok.allowed, tok.remaining, tok.resetAfterMs], [true, 5, 90000]);
      const m = await limiter.mcheck([{ key: '{u}:rpm', limit: '60 60' }, { key: '{u}:tpm', limit: '100000 60', cost: 1200 }]);
      assert.deepEqual([m.allowed, m.remaining, m.limit, m.binding], [true, 59, 60, 0]);
      assert.deepEqual(m.each.map((e) => e.remaining), [59, 98800]);
      const mp = await limiter.mpeek([{ key: '{u}:rpm', limit: '60 60' }, { key: '{u}:tpm', limit: '100000 60', cost: 150000 }]);
      assert.deepEqual([mp.allowed, mp.binding, mp.retryAfterMs], [false, 1, null]);
      assert.deepEqual({ ...(await limiter.throttle('user123', 15, 30, 60)) }, { ...new Throttle({ limited: false, limit: 16, remaining: 15, retryAfterSeconds: null, resetAfterSeconds: 2 }) });
      const a = await limiter.acquire('jobs', 2, 30000, { id: 'job-7' });
      assert.deepEqual({ ...a }, { ...new Acquired({ acquired: true, remaining: 1, max: 2, retryAfterMs: null, resetAfterMs: 30000, id: 'job-7' }) });
      const b = await limiter.acquire('jobs', 2, 30000);
      assert.equal(b.id.length, 32);
      const c = await limiter.acquire('jobs', 2, 30000);
      assert.equal(c.acquired, false);
      assert.ok(c.retryAfterMs > 0 && c.retryAfterMs <= 30000);
      assert.equal(await limiter.renew('jobs', 'job-7', 60000), true);
      assert.equal(await limiter.renew('jobs', 'nope', 60000), false);
      assert.equal(await limiter.release('jobs', 'job-7', b.id, 'nope'), 2);
      assert.equal(await limiter.reset('user:1', 'tok', 'missing'), 2);
      // Exact under concurrency: 200 checks at once on a limit of 50.
      const all = await Promise.all(Array.from({ length: 200 }, () => limiter.check('hot', '50 60')));
      assert.equal(all.filter((x) => x.allowed).length, 50);
      // An error reply is thrown, whatever the policy.
      await limiter.client.sendCommand(['SET', 'str', 'x']);
      await assert.rejects(limiter.check('str', '3 60'), /WRONGTYPE/);
      // A lease released in a finally, and refused when the slots are taken.
      await limiter.withLease('work', 1, 5000, async (lease) => {
        await assert.rejects(limiter.withLease('work', 1, 5000, async () => {}), Denied);
        assert.equal(lease.lost, false);
      });
      assert.equal(await limiter.client.sendCommand(['EXISTS', 'work']), 0);
    } finally {
      await limiter.close();
      await server.remove();
    }
  });
}

test('detection tries the commands when COMMAND INFO is refused', async () => {
  const server = await startBackend('module');
  const admin = createClient({ url: server.url() });
  await admin.connect();
  await admin.sendCommand(['ACL', 'SETUSER', 'app', 'reset', 'on', '>secret', '~*', '-@all', '+ratelimit.check', '+ratelimit.peek']);
  const limiter = await new RateLimiter({ url: `redis://app:secret@127.0.0.1:${server.port}`, timeoutMs: 2000 }).connect();
  try {
    await assert.rejects(limiter.client.sendCommand(['COMMAND', 'INFO', 'ratelimit.check']), /NOPERM/);
    assert.equal((await limiter.check('k', '3 60')).remaining, 2);
    assert.equal(await limiter.backend(), 'module');
  } finally {
    await limiter.close();
    admin.destroy();
    await server.remove();
  }
});
