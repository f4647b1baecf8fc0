// A decision through the Node package (redis-ratelimit-client) against the
// raw node-redis call sending the same command (RATELIMIT.CHECK) on the
// same kind of connection, on a server with the module. Not a test: it
// prints the throughputs and their ratios (target >= 0.9), and the Node
// process's CPU time per decision (steadier than throughput on a busy
// machine), and writes bench/results/clients-node.txt. Two shapes: one
// request per round trip (await each), and 32 in flight (node-redis
// pipelines them).
//
//     clients/prepare && (cd clients/node && npm ci) && node bench/clients.mjs
//
// (make bench-clients runs both packages' benchmarks.)

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { RateLimiter } from '../clients/node/lib/index.js';
import { Server } from '../clients/node/test/servers.js';

const SECONDS = 3;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const LIMIT = '1000000000000000';

/** [decisions per second, CPU µs per decision] of `one()`, `inFlight` at a time. */
async function rate(one, inFlight) {
  const batch = async () => {
    const pending = [];
    for (let i = 0; i < inFlight; i++) pending.push(one());
    await Promise.all(pending);
  };
  for (let i = 0; i < 2000 / inFlight; i++) await batch();
  let n = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    for (let i = 0; i < 500 / inFlight; i++) await batch();
    n += Math.floor(500 / inFlight) * inFlight;
  }
  const elapsed = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return [(n * 1000) / elapsed, (used.user + used.system) / n];
}

const server = await Server.start({ module: true });
const limiter = await new RateLimiter({ url: server.url(), timeoutMs: 2000 }).connect();
try {
  const raw = () => limiter.client.sendCommand(['RATELIMIT.CHECK', 'raw', LIMIT, '60']);
  const decision = () => limiter.check('client', `${LIMIT} 60`);
  const lines = [
    `redis-ratelimit-client (Node) decision vs raw node-redis RATELIMIT.CHECK, 1 connection, best of 3 x ${SECONDS} s`,
  ];
  for (const inFlight of [1, 32]) {
    let raw_ = [0, Infinity];
    let client = [0, Infinity];
    const best = (a, b) => [Math.max(a[0], b[0]), Math.min(a[1], b[1])];
    for (let round = 0; round < 3; round++) {
      raw_ = best(raw_, await rate(raw, inFlight));
      client = best(client, await rate(decision, inFlight));
    }
    const row = (name, [perS, cpuUs]) => `  ${name.padEnd(24)}${perS.toFixed(0).padStart(10)} decisions/s ${cpuUs.toFixed(2).padStart(8)} CPU µs/decision`;
    lines.push(
      `${inFlight} in flight:`,
      row('raw node-redis:', raw_),
      row('redis-ratelimit-client:', client),
      `  ratio:                  ${(client[0] / raw_[0]).toFixed(2).padStart(10)} (target >= 0.90)`,
    );
  }
  const text = `${lines.join('\n')}\n`;
  process.stdout.write(text);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'clients-node.txt'), text);
} finally {
  await limiter.close();
  await server.remove();
}
