// The example app as its own process against a real redis-server with the
// module: 10 requests a minute per API key, then 429 with Retry-After and
// the RateLimit fields.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';

import { Server } from '../../clients/node/test/servers.js';

test('the Express app admits ten a minute per API key', async () => {
  const redis = await Server.start({ module: true });
  const app = spawn(process.execPath, ['express_app.js'], {
    cwd: import.meta.dirname,
    env: { ...process.env, REDIS_URL: redis.url(), PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    let out = '';
    app.stdout.setEncoding('utf8');
    while (!/listening on (\S+)/.test(out)) {
      const [chunk] = await Promise.race([once(app.stdout, 'data'), once(app, 'exit').then(() => { throw new Error('the app exited'); })]);
      out += chunk;
    }
    const url = `${out.match(/listening on (\S+)/)[1]}/api`;
    const replies = [];
    for (let i = 0; i < 12; i++) replies.push(await fetch(url, { headers: { 'X-API-Key': 'k1' } }));
    assert.deepEqual(replies.map((r) => r.status), [...Array(10).fill(200), 429, 429]);
    const denied = replies[11];
    assert.ok(Number(denied.headers.get('retry-after')) >= 1);
    assert.match(denied.headers.get('ratelimit'), /r=0/);
    assert.equal((await denied.json()).error, 'rate limited');
    assert.equal((await fetch(url, { headers: { 'X-API-Key': 'k2' } })).status, 200);
  } finally {
    app.kill();
    await redis.remove();
  }
});
