// Tests of ratelimiter.js against a real redis-server with the module.
//
// Each test starts its own server on a free 127.0.0.1 port in a temporary
// directory, and kills it when done, also when the test fails.
//
// - REDIS_SERVER: the server binary (default: redis-server on PATH).
// - RATELIMIT_MODULE: the module (default: whichever build exists, as
//   scripts/module-path chooses: the debug build, else the release build
//   that `make run` makes, in CARGO_TARGET_DIR or target/).
//
// Run: node --test examples/node/ratelimiter.test.js (after `npm ci` in
// examples/node), or examples/node/run-tests, which does both.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { createClient, ErrorReply } from 'redis';

import { Decision, RateLimiter } from './ratelimiter.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const START_DEADLINE_MS = 15_000;
const START_ATTEMPTS = 5;
// A test that takes longer has hung (a call without a deadline): it fails
// instead of hanging the run.
const TEST_TIMEOUT_MS = 20_000;

// Servers still running when the process ends (a test that crashed before
// its cleanup) are killed with it.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    child.kill('SIGKILL');
  }
});

/**
 * The module to load, as scripts/module-path chooses it for every example:
 * RATELIMIT_MODULE, else the debug build, else the release build (all that
 * `make run` makes), else a debug build made now.
 */
function modulePath() {
  return execFileSync(join(REPO, 'scripts', 'module-path'), { cwd: REPO, encoding: 'utf8' }).trim();
}

/** A port that was free a moment ago on 127.0.0.1. */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Whether a server on `port` answers PING now. */
function answersPing(port) {
  return new Promise((resolveAnswer) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (answer) => {
      socket.destroy();
      resolveAnswer(answer);
    };
    socket.setTimeout(200, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/** A redis-server with the module loaded; `stop()` kills it. */
class Server {
  static async start() {
    const module = modulePath();
    assert.ok(existsSync(module), `${module} is missing: run \`cargo build\` first, or set RATELIMIT_MODULE`);
    const dir = mkdtempSync(join(tmpdir(), 'ratelimit-node-'));
    let log = '';
    for (let attempt = 0; attempt < START_ATTEMPTS; attempt += 1) {
      const server = new Server(dir, await freePort());
      server.spawn(module);
      if (await server.waitUntilReady()) {
        return server;
      }
      log = server.readLog();
      await server.stop();
      if (!log.includes('Address already in use')) {
        break;
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`redis-server did not start; its log:\n${log}`);
  }

  constructor(dir, port) {
    this.dir = dir;
    this.port = port;
  }

  spawn(module) {
    // What the server prints before its log file is open (a bad directive,
    // a module that refuses to load).
    const out = openSync(join(this.dir, `redis-${this.port}.out`), 'w');
    this.process = spawn(
      process.env.REDIS_SERVER ?? 'redis-server',
      [
        '--port', String(this.port), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', this.dir,
        '--logfile', join(this.dir, `redis-${this.port}.log`),
        '--loadmodule', module,
      ],
      { stdio: ['ignore', out, out] },
    );
    closeSync(out);
    running.add(this.process);
    this.exited = new Promise((resolveExit) => this.process.on('exit', resolveExit));
    this.process.on('exit', () => running.delete(this.process));
    this.process.on('error', () => {});
  }

  async waitUntilReady() {
    const deadline = Date.now() + START_DEADLINE_MS;
    while (Date.now() < deadline && this.process.exitCode === null && this.process.signalCode === null) {
      if (await answersPing(this.port)) {
        return true;
      }
      await sleep(20);
    }
    return false;
  }

  readLog() {
    return readdirSync(this.dir)
      .filter((name) => name.startsWith('redis-'))
      .sort()
      .map((name) => readFileSync(join(this.dir, name), 'utf8'))
      .join('');
  }

  async stop() {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGKILL');
      await this.exited;
    }
  }

  async remove() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A test's server, an admin client, and limiters on them; all closed after the test. */
async function setUp(t) {
  const server = await Server.start();
  t.after(() => server.remove());
  const admin = createClient({ socket: { host: '127.0.0.1', port: server.port, reconnectStrategy: false } });
  admin.on('error', () => {});
  await admin.connect();
  t.after(() => admin.isOpen && admin.destroy());
  const limiter = async (options = {}) => {
    const made = new RateLimiter({
      url: `redis://127.0.0.1:${server.port}`,
      limit: 3,
      periodSeconds: 60,
      ...options,
    });
    t.after(() => made.close());
    await made.connect();
    return made;
  };
  return { server, admin, limiter };
}

function assertConsistentHeaders(d) {
  const h = d.headers();
  assert.equal(h['RateLimit-Limit'], String(d.limit));
  assert.equal(h['RateLimit-Remaining'], String(d.remaining));
  assert.equal(h['RateLimit-Reset'], String(Math.ceil(d.resetAfterMs / 1000)));
  if (d.allowed) {
    assert.equal(h['Retry-After'], undefined);
  } else {
    assert.equal(h['Retry-After'], String(Math.ceil(d.retryAfterMs / 1000)));
  }
}

// The reply and header mapping alone, no server.

test('headers of a denial', () => {
  const d = Decision.fromReply([0, 0, 3, 1500, 60001]);
  assert.equal(d.allowed, false);
  assert.equal(d.retryAfterMs, 1500);
  assert.deepEqual(d.headers(), {
    'RateLimit-Limit': '3',
    'RateLimit-Remaining': '0',
    'RateLimit-Reset': '61',
    'Retry-After': '2',
  });
});

test('headers of an admission', () => {
  const d = Decision.fromReply([1, 2, 3, -1, 60000]);
  assert.equal(d.allowed, true);
  assert.equal(d.retryAfterMs, null);
  assert.deepEqual(d.headers(), {
    'RateLimit-Limit': '3',
    'RateLimit-Remaining': '2',
    'RateLimit-Reset': '60',
  });
});

test('a request that never fits has no Retry-After', () => {
  const d = Decision.fromReply([0, 3, 3, -1, 0]);
  assert.equal(d.headers()['Retry-After'], undefined);
});

test('whole seconds are not rounded up', () => {
  const d = Decision.fromReply([0, 0, 3, 1000, 2000]);
  assert.equal(d.headers()['Retry-After'], '1');
  assert.equal(d.headers()['RateLimit-Reset'], '2');
});

test('a bad policy is refused', () => {
  assert.throws(() => new RateLimiter({ limit: 3, periodSeconds: 60, onError: 'maybe' }), RangeError);
});

// Against a server.

test('allows up to the limit, then denies', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { limiter } = await setUp(t);
  for (const algorithm of ['FIXED', 'SLIDING', 'TOKEN']) {
    const l = await limiter({ algorithm });
    const key = `user:${algorithm}`;
    for (const remaining of [2, 1, 0]) {
      const d = await l.check(key);
      assert.equal(d.allowed, true, algorithm);
      assert.equal(d.degraded, false);
      assert.deepEqual([d.remaining, d.limit], [remaining, 3], algorithm);
      assert.equal(d.retryAfterMs, null);
      assert.ok(d.resetAfterMs > 0 && d.resetAfterMs <= 2 * 60_000, `${algorithm}: ${d.resetAfterMs}`);
      assertConsistentHeaders(d);
    }
    const d = await l.check(key);
    assert.equal(d.allowed, false, algorithm);
    assert.equal(d.degraded, false);
    assert.deepEqual([d.remaining, d.limit], [0, 3]);
    assert.ok(d.retryAfterMs > 0 && d.retryAfterMs <= 2 * 60_000, `${algorithm}: ${d.retryAfterMs}`);
    assert.ok('Retry-After' in d.headers());
    assertConsistentHeaders(d);
    // A denial counts nothing.
    assert.equal(await l.remaining(key), 0);
  }
});

test('the defaults are the module\'s: the key as given, a fixed window', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { admin, limiter } = await setUp(t);
  await (await limiter()).check('user:1');
  // What redis-cli's RATELIMIT.CHECK user:1 3 60 counts against.
  assert.equal(await admin.get('user:1'), '1');
  const ttl = await admin.pTTL('user:1');
  assert.ok(ttl > 0 && ttl <= 60_000, String(ttl));
  const fromCli = await admin.sendCommand(['RATELIMIT.CHECK', 'user:1', '3', '60']);
  assert.deepEqual(fromCli.slice(0, 3), [1, 1, 3]);
});

test('a prefix is put before every key', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { admin, limiter } = await setUp(t);
  await (await limiter({ prefix: 'ratelimit:' })).check('user:1');
  assert.equal(await admin.get('ratelimit:user:1'), '1');
  assert.equal(await admin.exists('user:1'), 0);
});

test('remaining does not consume', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { admin, limiter } = await setUp(t);
  const l = await limiter();
  assert.equal(await l.remaining('k'), 3);
  assert.equal(await l.remaining('k'), 3);
  assert.equal(await admin.exists('k'), 0);
  assert.equal((await l.check('k')).remaining, 2);
  assert.equal(await l.remaining('k'), 2);
  assert.equal(await l.remaining('k'), 2);
  assert.equal((await l.check('k')).remaining, 1);
});

test('keys are independent', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { limiter } = await setUp(t);
  const l = await limiter({ limit: 2 });
  assert.equal((await l.check('a')).allowed, true);
  assert.equal((await l.check('a')).allowed, true);
  assert.equal((await l.check('a')).allowed, false);
  assert.equal(await l.remaining('b'), 2);
  assert.equal((await l.check('b')).allowed, true);
  assert.equal(await l.remaining('b'), 1);
  assert.equal(await l.remaining('a'), 0);
});

test('cost', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { limiter } = await setUp(t);
  const l = await limiter({ limit: 10 });
  let d = await l.check('k', 4);
  assert.deepEqual([d.allowed, d.remaining], [true, 6]);
  d = await l.check('k', 7);
  assert.deepEqual([d.allowed, d.remaining], [false, 6]);
  assert.notEqual(d.retryAfterMs, null);
  d = await l.check('k', 6);
  assert.deepEqual([d.allowed, d.remaining], [true, 0]);
  // A cost above the limit can never pass: no Retry-After.
  d = await l.check('other', 11);
  assert.equal(d.allowed, false);
  assert.equal(d.retryAfterMs, null);
  assert.equal(d.headers()['Retry-After'], undefined);
  assert.equal(await l.remaining('other'), 10);
});

test('a token bucket with a burst', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { limiter } = await setUp(t);
  const l = await limiter({ limit: 10, algorithm: 'TOKEN', burst: 20 });
  const d = await l.check('upload', 15);
  assert.deepEqual([d.allowed, d.remaining, d.limit], [true, 5, 10]);
});

test('fails open when Redis is down', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, limiter } = await setUp(t);
  const l = await limiter({ onError: 'open', timeoutMs: 1000 });
  assert.equal((await l.check('k')).degraded, false);
  await server.stop();
  // A client that knows it is disconnected answers at once, without waiting
  // for the timeout.
  const started = performance.now();
  const d = await l.check('k');
  assert.deepEqual([d.allowed, d.degraded], [true, true]);
  assert.deepEqual(d.headers(), { 'RateLimit-Limit': '3' });
  assert.equal(await l.remaining('k'), 3);
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 500, `${elapsed} ms`);
});

test('fails closed when Redis is down', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, limiter } = await setUp(t);
  const l = await limiter({ onError: 'closed', timeoutMs: 1000 });
  assert.equal((await l.check('k')).degraded, false);
  await server.stop();
  const started = performance.now();
  const d = await l.check('k');
  assert.deepEqual([d.allowed, d.degraded, d.remaining], [false, true, 0]);
  assert.equal(d.headers()['Retry-After'], undefined);
  assert.equal(await l.remaining('k'), 0);
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 500, `${elapsed} ms`);
});

test('a service starts while Redis is down, under the policy', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // A port nobody listens on.
  const port = await freePort();
  for (const [onError, allowed] of [['open', true], ['closed', false]]) {
    const l = new RateLimiter({ url: `redis://127.0.0.1:${port}`, limit: 3, periodSeconds: 60, onError, timeoutMs: 200 });
    t.after(() => l.close());
    const started = performance.now();
    await l.connect();
    const d = await l.check('k');
    assert.ok(performance.now() - started < 1000, onError);
    assert.deepEqual([d.allowed, d.degraded], [allowed, true], onError);
  }
});

test('a slow Redis times out and the policy applies', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { admin, limiter } = await setUp(t);
  for (const [onError, allowed] of [['open', true], ['closed', false]]) {
    const l = await limiter({ onError, timeoutMs: 200, algorithm: 'FIXED' });
    const key = `k:${onError}`;
    // Connected and working before the server turns slow.
    assert.equal((await l.check(key)).remaining, 2);
    // Every client's commands now wait for 600 ms.
    assert.equal(await admin.sendCommand(['CLIENT', 'PAUSE', '600', 'ALL']), 'OK');
    const started = performance.now();
    const d = await l.check(key);
    const elapsed = performance.now() - started;
    assert.deepEqual([d.allowed, d.degraded], [allowed, true], onError);
    assert.ok(elapsed >= 150 && elapsed < 550, `${onError}: ${elapsed} ms`);
    // Once the server answers again (this PING waits for the pause to
    // end), so does the limiter. The check that timed out ran when the
    // pause ended: the server counted it, and its late reply is not taken
    // for the next one's.
    assert.equal(await admin.ping(), 'PONG');
    const next = await l.check(key);
    assert.deepEqual([next.allowed, next.degraded, next.remaining], [true, false, 0], onError);
  }
});

test('an error reply is thrown whatever the policy', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { limiter } = await setUp(t);
  for (const onError of ['open', 'closed']) {
    let l = await limiter({ limit: 0, onError });
    await assert.rejects(l.check('k'), (e) => e instanceof ErrorReply && /limit must be/.test(e.message));
    await assert.rejects(l.remaining('k'), (e) => e instanceof ErrorReply && /limit must be/.test(e.message));
    l = await limiter({ algorithm: 'LEAKY', onError });
    await assert.rejects(l.check('k'), (e) => e instanceof ErrorReply && /ALGORITHM/.test(e.message));
  }
});

test('a client of your own', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server } = await setUp(t);
  const client = createClient({ socket: { host: '127.0.0.1', port: server.port } });
  client.on('error', () => {});
  await client.connect();
  t.after(() => client.destroy());
  const l = new RateLimiter({ client, limit: 3, periodSeconds: 60 });
  await l.connect();
  assert.equal((await l.check('k')).remaining, 2);
  // The limiter leaves a client it did not build open.
  l.close();
  assert.equal(client.isOpen, true);
  assert.equal(await client.ping(), 'PONG');
});
