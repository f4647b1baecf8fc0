// Redis Cluster (3 masters), and policies: the CLI refuses a malformed
// limit, overrides win for their subject, a redis-cli change arrives.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { LIBRARY, RateLimiter, SettleStatus, libraryVersion } from '../lib/index.js';
import { startBackend, startCluster } from './servers.js';

const CLI = fileURLToPath(new URL('../bin/redis-ratelimit.js', import.meta.url));

for (const module of [true, false]) {
  test(`a cluster of 3 masters, ${module ? 'module' : 'functions'} backend`, async () => {
    const cluster = await startCluster({ module });
    const limiter = await new RateLimiter({ url: cluster.url, timeoutMs: 2000 }).connect();
    try {
      for (let i = 0; i < 30; i++) assert.equal((await limiter.check(`user:${i}`, '2 60')).remaining, 1);
      assert.equal(await limiter.backend(), module ? 'module' : 'functions');
      assert.equal((await limiter.mcheck([{ key: '{u}:a', limit: '1 60' }, { key: '{u}:b', limit: '2 60' }])).allowed, true);
      assert.equal((await limiter.mcheck([{ key: '{u}:a', limit: '1 60' }, { key: '{u}:b', limit: '2 60' }])).allowed, false);
      await limiter.withLease('jobs', 1, 5000, async () => {});
      const admin = limiter.policyAdmin();
      await admin.setPolicy('rpm', '2 60');
      await admin.setPolicy('tpd', '10 86400');
      await admin.setPlan('pro', 'rpm tpd');
      for (const s of ['a', 'b', 'c', 'd']) assert.equal((await limiter.checkPlan('pro', s, { tpd: 3 })).each[1].remaining, 7);
      for (const org of ['a', 'b', 'c', 'd']) { // holds keys on every master
        const holds = `{org:${org}}:holds`;
        const limits = [{ key: `{org:${org}}:rpm`, limit: '60 60' }, { key: `{org:${org}}:tpm`, limit: '1000 60', hold: 300 }];
        const r = await limiter.reserve(holds, 'req-1', 30000, limits);
        assert.deepEqual([r.allowed, r.held, r.holdTtlMs, r.each[1].remaining], [true, 300, 30000, 700]);
        assert.equal(await limiter.extend(holds, 'req-1', 20000), 20000);
        const s = await limiter.settle(holds, 'req-1', [{ key: `{org:${org}}:tpm`, limit: '1000 60', actual: 120 }]);
        assert.deepEqual([s.status, s.each[0].remaining], [SettleStatus.SETTLED, 880]);
        const settled = await limiter.withReservation(holds, limits, 30000, async (res) => {
          res.actual = 80;
          return res.settle();
        });
        assert.equal(settled.each[0].remaining, 800);
      }
      if (!module) {
        for (const node of cluster.nodes) assert.equal(Number(node.cli('FCALL_RO', 'ratelimit_version', '0')), libraryVersion(LIBRARY));
      }
    } finally {
      await limiter.close();
      await cluster.remove();
    }
  });
}

test('policies: the CLI refuses malformed limits, overrides win, a redis-cli change arrives within 1 s', async () => {
  const redis = await startBackend('module');
  const cli = (...args) => spawnSync(process.execPath, [CLI, '--url', redis.url(), ...args], { encoding: 'utf8' });
  try {
    assert.equal(cli('policy', 'set', 'api', '3', '60').status, 0);
    for (const bad of ['0 60', '3 60 BURST 2', '3', '3 60 COST 1']) {
      const out = cli('policy', 'set', 'api', bad);
      assert.equal(out.status, 2, bad);
      assert.match(out.stderr, /^refused: /);
    }
    assert.equal(redis.cli('HGET', 'ratelimit:policies', 'policy:api'), '3 60');
    assert.equal(cli('policy', 'set', 'api', '5 60', '--subject', 'vip').status, 0);
    const limiter = await new RateLimiter({ url: redis.url(), pollIntervalMs: 100 }).connect();
    try {
      assert.equal((await limiter.checkPolicy('api', 'someone')).limit, 3);
      assert.equal((await limiter.checkPolicy('api', 'vip')).limit, 5);
      await assert.rejects(limiter.checkPolicy('nope', 'x'), /unknown policy 'nope'/);
      const changed = new Promise((ok) => limiter.policyListeners.push((p) => p.limit('api').limit === 9 && ok()));
      redis.cli('HSET', 'ratelimit:policies', 'policy:api', '9 60', 'version', 'changed');
      const deadline = new Promise((_, fail) => setTimeout(() => fail(new Error('not seen within 1 s')), 1000).unref());
      await Promise.race([changed, deadline]);
      assert.equal((await limiter.checkPolicy('api', 'someone')).limit, 9);
    } finally {
      await limiter.close();
    }
  } finally {
    await redis.remove();
  }
});
