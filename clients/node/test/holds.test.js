// Holds: RESERVE, SETTLE and EXTEND with typed results on every backend
// (module, Functions library, the script on Redis 6.2 when present);
// withReservation settling the actual, 0 when the work throws, never
// twice, extended while it runs; the explicit Reservation; degraded mode.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';

import { Denied, Limit, LocalLimiter, RateLimiter, Reserved, SettleStatus, SpecError } from '../lib/index.js';
import { startBackend } from './servers.js';

const HOLDS = '{o}:holds';
const RPM = { key: '{o}:rpm', limit: '60 60' };
const TPM = '{o}:tpm';

async function count(limiter, key) {
  return Number((await limiter.client.sendCommand(['GET', key])) ?? 0);
}

for (const backend of ['module', 'functions', 'script']) {
  test(`reserve, settle and extend round trip with exact counts (${backend})`, async (t) => {
    const server = await startBackend(backend);
    if (!server) return t.skip('no Redis 6.2 here (`make test-matrix` installs one into target/servers)');
    const limiter = await new RateLimiter({ url: server.url(), timeoutMs: 2000 }).connect();
    try {
      const r = await limiter.reserve(HOLDS, 'req-1', 30000, [RPM, { key: TPM, limit: '1000 60', hold: 300 }]);
      assert.equal(await limiter.backend(), backend);
      assert.ok(r instanceof Reserved);
      assert.deepEqual([r.allowed, r.remaining, r.limit, r.retryAfterMs, r.binding], [true, 700, 1000, null, 1]);
      assert.deepEqual(r.each.map((e) => [e.allowed, e.remaining, e.limit, e.periodSeconds]), [[true, 59, 60, 60], [true, 700, 1000, 60]]);
      assert.deepEqual([r.held, r.holdTtlMs, r.id], [300, 30000, 'req-1']);
      assert.deepEqual([await count(limiter, '{o}:rpm'), await count(limiter, TPM)], [1, 300]);

      const again = await limiter.reserve(HOLDS, 'req-1', 30000, [RPM, { key: TPM, limit: '1000 60', hold: 300 }]);
      assert.deepEqual([again.allowed, again.remaining, again.held], [true, 700, 300]);
      assert.ok(again.holdTtlMs > 0 && again.holdTtlMs <= 30000);
      assert.deepEqual([await count(limiter, '{o}:rpm'), await count(limiter, TPM)], [1, 300]);

      assert.equal(await limiter.extend(HOLDS, 'req-1', 45000), 45000);
      assert.equal(await limiter.extend(HOLDS, 'req-1', 120000), 60000);
      assert.equal(await limiter.extend(HOLDS, 'nobody', 45000), 0);

      const s = await limiter.settle(HOLDS, 'req-1', [{ key: TPM, limit: '1000 60', actual: 120 }]);
      assert.equal(s.status, SettleStatus.SETTLED);
      assert.deepEqual(s.each.map((e) => [e.allowed, e.remaining, e.limit, e.retryAfterMs]), [[true, 880, 1000, null]]);
      assert.equal(await count(limiter, TPM), 120);
      assert.equal((await limiter.settle(HOLDS, 'req-1', [{ key: TPM, limit: '1000 60', actual: 120 }])).status, SettleStatus.ALREADY_SETTLED);
      const settled = await limiter.reserve(HOLDS, 'req-1', 30000, [RPM, { key: TPM, limit: '1000 60', hold: 300 }]);
      assert.deepEqual([settled.allowed, settled.held, settled.holdTtlMs], [true, 0, null]);
      assert.deepEqual([await count(limiter, '{o}:rpm'), await count(limiter, TPM)], [1, 120]);

      assert.equal((await limiter.settle(HOLDS, 'never', [{ key: TPM, limit: '1000 60', actual: 5 }])).status, SettleStatus.UNKNOWN);
      assert.equal(await count(limiter, TPM), 125);

      const big = await limiter.reserve(HOLDS, 'req-2', 30000, [{ key: TPM, limit: new Limit({ limit: 1000, periodSeconds: 60 }), hold: 3000 }]);
      assert.deepEqual([big.held, big.remaining], [500, 375]);
      const debt = await limiter.settle(HOLDS, 'req-2', [{ key: TPM, limit: '1000 60', actual: 900 }]);
      assert.equal(await count(limiter, TPM), 1025);
      assert.deepEqual([debt.each[0].allowed, debt.each[0].remaining], [false, 0]);
      assert.ok(debt.each[0].retryAfterMs > 0 && debt.each[0].retryAfterMs <= 60000);

      const denied = await limiter.reserve(HOLDS, 'req-3', 30000, [RPM, { key: TPM, limit: '1000 60', hold: 1 }]);
      assert.deepEqual([denied.allowed, denied.held, denied.holdTtlMs, denied.binding], [false, 0, null, 1]);
      assert.equal(await limiter.client.sendCommand(['HGET', HOLDS, 'req-3']), null);

      const tb = await limiter.reserve(HOLDS, 'req-4', 30000, [{ key: '{o}:tb', limit: '10 60 ALGORITHM TOKEN BURST 20', hold: 8 }]);
      assert.deepEqual([tb.held, tb.remaining], [8, 12]);
      assert.equal((await limiter.settle(HOLDS, 'req-4', [{ key: '{o}:tb', limit: '10 60 ALGORITHM TOKEN BURST 20', actual: 2 }])).each[0].remaining, 18);

      // withReservation: the actual, 0 when the work throws (then rethrown), denial before the work.
      const limits = [RPM, { key: '{o}:tpd', limit: '10000 86400', hold: 700 }];
      const id = await limiter.withReservation(HOLDS, limits, 30000, async (res) => {
        assert.equal(await count(limiter, '{o}:tpd'), 700);
        res.actual = 250;
        return res.id;
      });
      assert.equal(id.length, 36);
      assert.equal(await count(limiter, '{o}:tpd'), 250);
      await assert.rejects(limiter.withReservation(HOLDS, limits, 30000, async () => {
        assert.equal(await count(limiter, '{o}:tpd'), 950);
        throw new Error('model down');
      }), /model down/);
      assert.equal(await count(limiter, '{o}:tpd'), 250);
      let ran = false;
      const no = await limiter.withReservation(HOLDS, [{ key: TPM, limit: '1000 60', hold: 1 }], 30000, async () => { ran = true; }).catch((e) => e);
      assert.ok(no instanceof Denied && no.result instanceof Reserved && !ran);
      assert.equal(await count(limiter, '{o}:rpm'), 3);
    } finally {
      await limiter.close();
      await server.remove();
    }
  });
}

test('a reservation settles once, by hand or around a function, and a replay charges nothing', async () => {
  const server = await startBackend('module');
  const limiter = await new RateLimiter({ url: server.url(), timeoutMs: 2000 }).connect();
  const settles = async () => Number(/ratelimit_settle_calls:(\d+)/.exec(await limiter.client.sendCommand(['INFO', 'ratelimit']))[1]);
  try {
    const limits = [{ key: '{org:7}:rpm', limit: '600 60' }, { key: '{org:7}:tpm', limit: '200000 60', hold: 3000 }];
    // What the work reported before it threw stands.
    await assert.rejects(limiter.withReservation('{org:7}:holds', limits, 60000, async (r) => {
      r.actual = 500;
      throw new Error('stream cut');
    }));
    assert.equal(await count(limiter, '{org:7}:tpm'), 500);
    // Nothing reported: the estimate stands.
    await limiter.withReservation('{org:7}:holds', limits, 60000, async () => {});
    assert.equal(await count(limiter, '{org:7}:tpm'), 3500);
    // Settled in the work: never twice.
    const before = await settles();
    await limiter.withReservation('{org:7}:holds', limits, 60000, async (r) => {
      const first = await r.settle(100);
      assert.equal(await r.settle(999), first);
      assert.equal(first.status, SettleStatus.SETTLED);
    });
    assert.equal(await settles(), before + 1);
    assert.equal(await count(limiter, '{org:7}:tpm'), 3600);
    // An actual per HOLD limit, by key.
    const two = [{ key: '{org:7}:tpm', limit: '200000 60', hold: 100 }, { key: '{org:7}:tpd', limit: '1000000 86400', hold: 100 }];
    await limiter.withReservation('{org:7}:holds', two, 60000, async (r) => { r.actual = { '{org:7}:tpm': 10, '{org:7}:tpd': 20 }; });
    assert.deepEqual([await count(limiter, '{org:7}:tpm'), await count(limiter, '{org:7}:tpd')], [3610, 20]);

    // By hand (a stream settled from its 'end' handler), the same id retried.
    const r = limiter.reservation('{org:7}:holds', limits, 60000, { id: 'req-9' });
    const reserved = await r.reserve();
    assert.deepEqual([reserved.held, r.held, r.degraded], [3000, 3000, false]);
    assert.equal(await r.extend(), 60000);
    r.actual = 40;
    assert.equal((await r.settle()).status, SettleStatus.SETTLED);
    assert.deepEqual([await count(limiter, '{org:7}:rpm'), await count(limiter, '{org:7}:tpm')], [4, 3650]);
    const retried = limiter.reservation('{org:7}:holds', limits, 60000, { id: 'req-9' });
    assert.deepEqual([(await retried.reserve()).held, retried.reserved.holdTtlMs], [0, null]);
    assert.equal((await retried.settle(40)).status, SettleStatus.ALREADY_SETTLED);
    assert.deepEqual([await count(limiter, '{org:7}:rpm'), await count(limiter, '{org:7}:tpm')], [4, 3650]);

    assert.throws(() => limiter.reservation('h', [{ key: 'k', limit: '1 60' }], 0), /ttl_ms must be/);
    assert.throws(() => limiter.reserveCall('h', 'NOW', 1000, [{ key: 'k', limit: '1 60' }]), SpecError);
    assert.throws(() => limiter.reserveCall('h', 'x', 1000, [{ key: 'k', limit: '1 60', cost: 1, hold: 1 }]), /COST or HOLD/);
    assert.throws(() => limiter.reserveCall('h', 'x', 1000, [{ key: 'k', limit: '1 60 SHADOW' }]), /shadow/);
    assert.throws(() => limiter.settleCall('h', 'x', [{ key: 'h', limit: '1 60', actual: 1 }]), /holds key/);
  } finally {
    await limiter.close();
    await server.remove();
  }
});

test('a reservation is extended while the work runs', async () => {
  const server = await startBackend('module');
  const limiter = await new RateLimiter({ url: server.url(), timeoutMs: 2000 }).connect();
  const serverMs = async () => {
    const [s, us] = await limiter.client.sendCommand(['TIME']);
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  };
  const record = async (id) => String(await limiter.client.sendCommand(['HGET', '{l}:holds', id])).split(' ');
  try {
    const limits = [{ key: '{l}:tpm', limit: '1000 60', hold: 10 }];
    await limiter.withReservation('{l}:holds', limits, 600, async (r) => {
      const first = Number((await record(r.id))[1]);
      const giveUp = Date.now() + 10000;
      while ((await serverMs()) <= first + 50) {
        assert.ok(Date.now() < giveUp);
        await sleep(50);
      }
      const [kind, deadline] = await record(r.id);
      assert.equal(kind, 'L');
      assert.ok(Number(deadline) > (await serverMs()));
      assert.equal(r.lost, false);
      r.actual = 3;
    }, { extendEveryMs: 100 });
    assert.equal(await count(limiter, '{l}:tpm'), 3);
    const lost = await limiter.withReservation('{l}:holds', limits, 60000, async (r) => {
      await limiter.client.sendCommand(['DEL', '{l}:holds']);
      const giveUp = Date.now() + 10000;
      while (!r.lost) {
        assert.ok(Date.now() < giveUp);
        await sleep(20);
      }
      r.actual = 7;
      return r;
    }, { extendEveryMs: 50 });
    assert.equal(lost.settled.status, SettleStatus.UNKNOWN);
    assert.equal(await count(limiter, '{l}:tpm'), 20);
  } finally {
    await limiter.close();
    await server.remove();
  }
});

test('reservations are held locally while Redis is down, and fail open or closed', async () => {
  const redis = await startBackend('module');
  const limiter = await new RateLimiter({ url: redis.url(), onUnavailable: 'local', failureThreshold: 1, cooldownMs: 60000 }).connect();
  try {
    assert.equal((await limiter.reserve('{o}:holds', 'before', 30000, [{ key: TPM, limit: '1000 60', hold: 100 }])).degraded, false);
    await redis.stopped();
    const tpm = [{ key: '{o}:rpm', limit: '3 60' }, { key: TPM, limit: '1000 60', hold: 300 }];
    const r = await limiter.reserve('{o}:holds', 'r1', 30000, tpm);
    assert.deepEqual([r.allowed, r.degraded, r.degradedBy, r.held, r.holdTtlMs], [true, true, 'local', 300, 30000]);
    assert.deepEqual(r.each.map((e) => [e.remaining, e.degraded]), [[2, true], [700, true]]);
    const big = await limiter.reserve('{o}:holds', 'r2', 120000, [{ key: TPM, limit: '1000 60', hold: 3000 }]);
    assert.deepEqual([big.held, big.holdTtlMs, big.remaining], [500, 60000, 200]);
    assert.equal((await limiter.reserve('{o}:holds', 'r3', 30000, [{ key: TPM, limit: '1000 60', hold: 201 }])).allowed, false);
    assert.equal(await limiter.extend('{o}:holds', 'r1', 45000), 45000);
    const s = await limiter.settle('{o}:holds', 'r1', [{ key: TPM, limit: '1000 60', actual: 100 }]);
    assert.deepEqual([s.status, s.degradedBy, s.each[0].remaining], [SettleStatus.SETTLED, 'local', 400]);
    assert.equal((await limiter.settle('{o}:holds', 'r1', [{ key: TPM, limit: '1000 60', actual: 100 }])).status, SettleStatus.ALREADY_SETTLED);
    const unknown = await limiter.settle('{o}:holds', 'before', [{ key: TPM, limit: '1000 60', actual: 50 }]);
    assert.deepEqual([unknown.status, unknown.degraded, unknown.each[0].remaining], [SettleStatus.UNKNOWN, true, 350]);
    assert.equal(await limiter.extend('{o}:holds', 'before', 45000), 45000);
    const settled = await limiter.withReservation('{o}:holds', [{ key: TPM, limit: '1000 60', hold: 100 }], 30000, async (res) => {
      assert.equal(res.degraded, true);
      res.actual = 10;
      return res.settle();
    });
    assert.deepEqual([settled.degraded, settled.each[0].remaining], [true, 340]);
    for (const [mode, allowed] of [['open', true], ['closed', false]]) {
      limiter.onUnavailable = mode;
      const d = await limiter.reserve('{o}:holds', 'm', 30000, [{ key: TPM, limit: '1000 60', hold: 300 }]);
      assert.deepEqual([d.allowed, d.degraded, d.degradedBy, d.held, d.holdTtlMs], [allowed, true, mode, 0, null]);
      const e = await limiter.settle('{o}:holds', 'm', [{ key: TPM, limit: '1000 60', actual: 1 }]);
      assert.deepEqual([e.status, e.degradedBy], [SettleStatus.UNKNOWN, mode]);
      assert.equal(await limiter.extend('{o}:holds', 'm', 1000), allowed ? 1000 : 0);
    }
  } finally {
    await limiter.close();
    await redis.remove();
  }
});

test('the local limiter refunds holds as the module does', () => {
  let now = 60_000 * 1000 + 10_000;
  const local = new LocalLimiter({ clock: () => now });
  const fixed = Limit.parse('100 10');
  const sliding = Limit.parse('100 60 ALGORITHM SLIDING');
  const bucket = Limit.parse('1 3600 ALGORITHM TOKEN BURST 20');
  const reply = local.reserve('h', 'a', 60000, [{ key: 'f', limit: fixed, units: 40, held: true }, { key: 's', limit: sliding, units: 40, held: true }, { key: 't', limit: bucket, units: 8, held: true }]);
  assert.deepEqual([reply[0], ...reply.slice(7)], [1, 8, 60000]);
  now += 55_000;
  assert.equal(local.check('f', fixed, 5)[1], 95);
  const [status, each] = local.settle('h', 'a', [{ key: 'f', limit: fixed, actual: 10 }, { key: 's', limit: sliding, actual: 10 }, { key: 't', limit: bucket, actual: 0 }]);
  assert.equal(status, 1);
  assert.equal(each[0][1], 95);
  assert.deepEqual(local.states.get('s').state.slice(0, 2), [10n, 0n]);
  assert.equal(local.states.has('t'), false);
  local.reserve('h', 'b', 1000, [{ key: 'f', limit: fixed, units: 30, held: true }]);
  assert.equal(local.check('f', fixed, 0, true)[1], 65);
  now += 1000;
  assert.equal(local.extend('h', 'b', 1000), null);
  assert.equal(local.check('f', fixed, 0, true)[1], 95);
});
