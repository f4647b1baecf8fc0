// The limiter, on node-redis v5: a single server (createClient) or Redis
// Cluster (createCluster). See README.md for the whole API.

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import {
  createClient,
  createCluster,
  ErrorReply,
  ClientOfflineError,
  ConnectionTimeoutError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError,
} from 'redis';

import { CircuitBreaker } from './breaker.js';
import { HOLD_MAX_TTL_MS, LocalLimiter } from './local.js';
import { DEFAULT_KEY, PolicyError, PolicySet, fieldFor, parsePlan, policyKey, versionNow } from './policies.js';
import { Acquired, Decision, Denied, HEADER_STYLES, MultiDecision, Reserved, Settled, SettleStatus, Throttle } from './results.js';
import { Limit, SpecError, checkActual, checkCost, checkEstimate, checkHoldId, checkHoldTtl, heldFor } from './spec.js';

export const BACKENDS = ['module', 'functions', 'script'];
export const MODES = ['open', 'closed', 'local'];
const MULTI_KEY = new Set(['MCHECK', 'MPEEK']);
// The holds key first, then the id (and ttl_ms), then numkeys and the keys.
const HOLDS_KEYED = new Set(['RESERVE', 'SETTLE']);
const READ_ONLY = new Set(['PEEK', 'MPEEK']);
const PROBE_KEY = 'ratelimit:backend-probe';

/** The Functions library shipped in this package (the module's fallback/ratelimit.lua). */
export const LIBRARY = readFileSync(new URL('./ratelimit.lua', import.meta.url), 'utf8');

export function libraryVersion(text) {
  const found = /^local VERSION = '(\d+)\.(\d+)\.(\d+)'/m.exec(text);
  return found ? Number(found[1]) * 10000 + Number(found[2]) * 100 + Number(found[3]) : null;
}

/** The call took longer than `timeoutMs`. */
export class LimiterTimeoutError extends Error {
  constructor(timeoutMs) {
    super(`no reply within ${timeoutMs} ms`);
    this.name = 'LimiterTimeoutError';
  }
}

const UNAVAILABLE = [LimiterTimeoutError, ClientOfflineError, ConnectionTimeoutError, SocketClosedUnexpectedlyError, SocketTimeoutError, TimeoutError];
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/** Whether `error` means Redis could not be asked (not an error reply). */
export function isUnavailable(error) {
  if (error instanceof ErrorReply) return /^(CLUSTERDOWN|MASTERDOWN)/.test(error.message);
  return UNAVAILABLE.some((kind) => error instanceof kind) || NETWORK.has(error?.code) ||
    /The client is closed|Connection timeout|No node|not connected|offline/i.test(error?.message ?? '');
}

function withDeadline(promise, timeoutMs) {
  promise.catch(() => {});
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new LimiterTimeoutError(timeoutMs)), timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * The deadlines of one limiter's calls, all `timeoutMs` long: they end in
 * the order they were set, so one timer, set for the oldest pending call,
 * serves them all, where a timer per call costs more than a decision on a
 * busy client.
 */
class Deadlines {
  constructor(timeoutMs) {
    this.timeoutMs = timeoutMs;
    this.pending = [];
    this.head = 0;
    this.timer = null;
  }

  /** `promise`, or a LimiterTimeoutError once `timeoutMs` passed. */
  race(promise) {
    return new Promise((resolve, reject) => {
      const entry = { at: performance.now() + this.timeoutMs, reject, done: false };
      this.pending.push(entry);
      promise.then(
        (value) => {
          entry.done = true;
          resolve(value);
        },
        (error) => {
          entry.done = true;
          reject(error);
        },
      );
      if (this.timer === null) this.arm();
    });
  }

  arm() {
    while (this.head < this.pending.length && this.pending[this.head].done) this.head++;
    if (this.head === this.pending.length) {
      this.pending = [];
      this.head = 0;
      this.timer = null;
      return;
    }
    const wait = Math.max(0, this.pending[this.head].at - performance.now());
    this.timer = setTimeout(() => this.expire(), wait);
    this.timer.unref?.();
  }

  expire() {
    const now = performance.now();
    while (this.head < this.pending.length && (this.pending[this.head].done || this.pending[this.head].at <= now)) {
      const entry = this.pending[this.head++];
      if (!entry.done) {
        entry.done = true;
        entry.reject(new LimiterTimeoutError(this.timeoutMs));
      }
    }
    // Drop what ended, now and then, so the queue does not grow for ever.
    if (this.head > 1024) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    this.arm();
  }
}

// RESERVE and SETTLE: keys[0] is the holds key and `head` the id (and
// ttl_ms), which the module takes before numkeys and the library after its keys.
export function commandFor(backend, verb, keys, args, sha, head = []) {
  if (backend === 'module') {
    if (HOLDS_KEYED.has(verb)) return [`RATELIMIT.${verb}`, keys[0], ...head, String(keys.length - 1), ...keys.slice(1), ...args];
    return [`RATELIMIT.${verb}`, ...(MULTI_KEY.has(verb) ? [String(keys.length)] : []), ...keys, ...head, ...args];
  }
  const fn = `ratelimit_${verb.toLowerCase()}`;
  if (backend === 'functions') return [READ_ONLY.has(verb) ? 'FCALL_RO' : 'FCALL', fn, String(keys.length), ...keys, ...head, ...args];
  return ['EVALSHA', sha, String(keys.length), ...keys, fn, ...head, ...args];
}

/**
 * An estimate held for one piece of work (`limiter.reservation(…)`):
 * `await r.reserve()` (throws Denied), `r.actual = n` (or `{key: n}` per
 * HOLD limit), `await r.extend()` as the work runs, `await r.settle()`.
 * Settles once: later calls resolve to the first result. An unreported
 * limit settles at its estimate, or at 0 after `settle(undefined, {failed:
 * true})` (what `withReservation` does when the work throws).
 */
export class Reservation {
  constructor(limiter, holds, limits, ttlMs, { id = null, extendEveryMs = null, name = null } = {}) {
    Object.assign(this, { limiter, holds, limits: [...limits], ttlMs: checkHoldTtl(ttlMs), extendEveryMs, name });
    this.id = id === null ? randomUUID() : checkHoldId(id);
    this.heldLimits = this.limits.filter((l) => l.hold !== undefined && l.hold !== null);
    this.actual = null;
    this.reserved = null;
    this.settled = null;
    this.done = false;
    this.lost = false;
    this.timer = null;
    this.settling = null;
  }

  get held() {
    return this.reserved?.held ?? 0;
  }

  get degraded() {
    return Boolean(this.reserved?.degraded);
  }

  async reserve() {
    if (this.reserved) throw new Error('this reservation has reserved already');
    const reserved = await this.limiter.reserve(this.holds, this.id, this.ttlMs, this.limits, { name: this.name });
    this.reserved = reserved;
    if (!reserved.allowed) {
      this.done = true;
      const key = this.limits[reserved.binding]?.key ?? this.holds;
      throw new Denied(reserved, `${key}: over its limit (reservation ${this.id} denied)`);
    }
    return reserved;
  }

  async extend(ttlMs = this.ttlMs) {
    if (!this.reserved) throw new Error('reserve() first');
    const left = await this.limiter.extend(this.holds, this.id, ttlMs);
    if (left === 0) this.lost = true;
    return left;
  }

  /** Extends every `extendEveryMs` (a third of the hold's ttl; 0: never) until settled. */
  startExtending() {
    const every = this.extendEveryMs ?? (this.reserved?.holdTtlMs ?? 0) / 3;
    if (!this.reserved || this.reserved.holdTtlMs === null || !(every > 0) || this.done) return;
    this.timer = setInterval(async () => {
      if ((await this.extend().catch(() => null)) === 0) this.stopExtending();
    }, every);
  }

  stopExtending() {
    clearInterval(this.timer);
    this.timer = null;
  }

  settle(actual = undefined, { failed = false } = {}) {
    if (!this.reserved) return Promise.reject(new Error('reserve() first'));
    this.settling ??= this.settleOnce(actual, failed).catch((error) => {
      this.settling = null; // an error reply: settling again is safe (SETTLE is idempotent)
      throw error;
    });
    return this.settling;
  }

  async settleOnce(actual, failed) {
    if (this.done) return this.settled;
    if (actual !== undefined && actual !== null) this.actual = actual;
    this.stopExtending();
    const reported = this.actual;
    const byKey = reported !== null && typeof reported === 'object';
    if (byKey) {
      const unknown = Object.keys(reported).filter((k) => !this.heldLimits.some((l) => l.key === k));
      if (unknown.length) throw new RangeError(`not a HOLD limit of this reservation: ${unknown.join(', ')}`);
    }
    const items = this.heldLimits.map(({ key, limit, hold, name = null }) => {
      const value = byKey ? reported[key] : reported;
      return { key, limit, actual: value ?? (failed ? 0 : hold), name };
    });
    if (items.length) this.settled = await this.limiter.settle(this.holds, this.id, items, { name: this.name });
    this.done = true;
    return this.settled;
  }
}

/**
 * Rate limits and concurrency leases in Redis. Options: `client` (a
 * node-redis client or cluster you connect and close) or `url`
 * (`redis://…`; `redis+cluster://…` or `cluster: true` for a cluster);
 * `backend`; `onUnavailable` ('local', 'open', 'closed'); `timeoutMs`
 * (200); `failureThreshold` (3); `cooldownMs` (2000); `localMaxKeys`
 * (10000); `prefix`; `policyKey`; `pollIntervalMs` (250);
 * `refreshIntervalMs` (10000); `metrics(event, policy)`;
 * `onShadowDenied(decision, key)`; `headerStyle` ('ietf').
 */
export class RateLimiter {
  constructor({
    client, url, cluster, backend = null, onUnavailable = 'local', timeoutMs = 200, failureThreshold = 3,
    cooldownMs = 2000, localMaxKeys = 10_000, prefix = '', policyKey: policyHash = DEFAULT_KEY,
    pollIntervalMs = 250, refreshIntervalMs = 10_000, metrics = null, onShadowDenied = null, headerStyle = 'ietf',
    library = LIBRARY,
  } = {}) {
    if (backend !== null && !BACKENDS.includes(backend)) throw new RangeError(`backend must be one of ${BACKENDS.join(', ')}, or null to find out`);
    if (!MODES.includes(onUnavailable)) throw new RangeError(`onUnavailable must be one of ${MODES.join(', ')}`);
    if (!HEADER_STYLES.includes(headerStyle)) throw new RangeError(`headerStyle must be one of ${HEADER_STYLES.join(', ')}`);
    if (!(timeoutMs > 0)) throw new RangeError('timeoutMs must be positive: a limiter call needs a deadline');
    Object.assign(this, { namedBackend: backend, onUnavailable, timeoutMs, prefix, policyKey: policyHash, pollIntervalMs, refreshIntervalMs, metrics, onShadowDenied, headerStyle });
    this.deadlines = new Deadlines(timeoutMs);
    this.breaker = new CircuitBreaker({ failureThreshold, cooldownMs });
    this.breaker.listeners.push((_, now) => {
      if (now === 'closed') this.local.clear();
    });
    this.local = new LocalLimiter({ maxKeys: localMaxKeys });
    this.library = library;
    this.libraryVersion = libraryVersion(library);
    this.script = library.slice(library.indexOf('\n') + 1);
    this.sha = createHash('sha1').update(this.script).digest('hex');
    this.policies = null;
    this.policyListeners = [];
    this.backendName = null;
    this.choosing = null;
    this.ownsClient = client === undefined;
    if (client === undefined) {
      let address = url ?? 'redis://localhost:6379';
      if (address.includes('+cluster://')) {
        cluster = true;
        address = address.replace('+cluster', '');
      }
      const socket = { connectTimeout: timeoutMs };
      client = cluster
        ? createCluster({ rootNodes: [{ url: address }], defaults: { socket, disableOfflineQueue: true } })
        : createClient({ url: address, socket, disableOfflineQueue: true });
      // Failures reach callers through the policy; the client reconnects by itself.
      client.on('error', () => {});
    }
    this.client = client;
    this.cluster = typeof client.sendCommand === 'function' && 'masters' in client;
  }

  /** Connects the client it built: resolves once connected, or after `timeoutMs` (calls are then degraded until it connects). */
  async connect() {
    if (!this.ownsClient || this.client.isOpen) return this;
    await withDeadline(this.client.connect(), Math.max(this.timeoutMs, 1000)).catch(() => {});
    return this;
  }

  /** Stops the policy watcher and closes the client it built. */
  async close() {
    clearInterval(this.watcher);
    this.watcher = null;
    if (!this.ownsClient || !this.client.isOpen) return;
    // close() waits for the server to answer what is pending: a client
    // that is reconnecting to a server that is gone is destroyed instead.
    if (this.client.isReady) await this.client.close().catch(() => this.client.destroy());
    else this.client.destroy();
  }

  // -- the commands ------------------------------------------------------

  /** RATELIMIT.CHECK: `limit` is a Limit, a spec string or `{limit, periodSeconds, algorithm, burst}`. */
  check(key, limit, { cost = 1, name = null } = {}) {
    return this.decide(this.checkCall('CHECK', this.prefix + key, Limit.from(limit), cost, name));
  }

  peek(key, limit, { cost = 1, name = null } = {}) {
    return this.decide(this.checkCall('PEEK', this.prefix + key, Limit.from(limit), cost, name));
  }

  /** RATELIMIT.MCHECK over `[{key, limit, cost?, name?}, …]`, all charged or none. */
  mcheck(limits, { name = null } = {}) {
    return this.decide(this.multiCall('MCHECK', limits.map((l) => ({ ...l, key: this.prefix + l.key })), name));
  }

  mpeek(limits, { name = null } = {}) {
    return this.decide(this.multiCall('MPEEK', limits.map((l) => ({ ...l, key: this.prefix + l.key })), name));
  }

  /** RATELIMIT.RESET; throws when Redis is unavailable (it is no decision). */
  async reset(...keys) {
    const call = { verb: 'RESET', keys: keys.map((k) => this.prefix + k), args: [], kind: 'int' };
    try {
      return Number(await this.execute(call));
    } catch (error) {
      if (error instanceof ErrorReply) this.metric('error', null);
      throw error;
    }
  }

  throttle(key, maxBurst, countPerPeriod, periodSeconds, quantity = 1) {
    return this.decide({ verb: 'THROTTLE', keys: [this.prefix + key], args: [maxBurst, countPerPeriod, periodSeconds, quantity].map(String), kind: 'throttle', extra: { maxBurst, countPerPeriod, periodSeconds, quantity } });
  }

  acquire(key, max, leaseMs, { id = null, name = null } = {}) {
    const args = [String(max), String(leaseMs), ...(id !== null ? ['ID', id] : [])];
    return this.decide({ verb: 'ACQUIRE', keys: [this.prefix + key], args, kind: 'acquire', policy: name, extra: { max, leaseMs, id } });
  }

  release(key, ...ids) {
    return this.decide({ verb: 'RELEASE', keys: [this.prefix + key], args: ids, kind: 'release' });
  }

  renew(key, id, leaseMs) {
    return this.decide({ verb: 'RENEW', keys: [this.prefix + key], args: [id, String(leaseMs)], kind: 'renew', extra: { id, leaseMs } });
  }

  /**
   * RATELIMIT.RESERVE: MCHECK of `[{key, limit, cost?, hold?, name?}, …]`
   * (all or none) recorded under `id` in the hash `holds` for `ttlMs`. A
   * limit with `hold: estimate` holds the estimate (at most half the limit
   * by default; the rest is charged at SETTLE) instead of charging a cost
   * for good. A RESERVE of a recorded id charges nothing and resolves to the
   * first reply. In Cluster, `holds` and the keys share a slot.
   */
  reserve(holds, id, ttlMs, limits, { name = null } = {}) {
    return this.decide(this.reserveCall(holds, id, ttlMs, limits, name));
  }

  /**
   * RATELIMIT.SETTLE over `[{key, limit, actual, name?}, …]`: each key is
   * charged its actual cost less what `id` holds on it (a refund, or a debt
   * past the limit). Resolves to a Settled (`status`: SettleStatus).
   */
  settle(holds, id, limits, { name = null } = {}) {
    return this.decide(this.settleCall(holds, id, limits, name));
  }

  /** RATELIMIT.EXTEND: ms until the hold now expires, or 0 when `id` holds nothing. */
  extend(holds, id, ttlMs) {
    const call = { verb: 'EXTEND', keys: [this.prefix + holds], args: [checkHoldId(id), String(checkHoldTtl(ttlMs))], kind: 'extend', extra: { holds: this.prefix + holds, id, ttlMs } };
    return this.decide(call);
  }

  /** A Reservation to reserve, extend and settle by hand (`withReservation` does it around a function). */
  reservation(holds, limits, ttlMs, { id = null, extendEveryMs = null, name = null } = {}) {
    return new Reservation(this, holds, limits, ttlMs, { id, extendEveryMs, name });
  }

  /**
   * Runs `work(reservation)` with its estimates held: RESERVE first (throws
   * Denied), EXTEND every `extendEveryMs` (a third of the hold's ttl; 0:
   * never) while it runs, then SETTLE with `reservation.actual` (what the
   * work returned is returned), or when the work throws with 0 for every
   * limit it reported nothing for (and the error is thrown again). `id`: a
   * UUID unless given.
   */
  async withReservation(holds, limits, ttlMs, work, options = {}) {
    const reservation = this.reservation(holds, limits, ttlMs, options);
    await reservation.reserve();
    reservation.startExtending();
    let result;
    try {
      result = await work(reservation);
    } catch (error) {
      await reservation.settle(undefined, { failed: true }).catch(() => null);
      throw error;
    }
    await reservation.settle();
    return result;
  }

  /**
   * Runs `work(lease)` holding one of `max` slots of `key`, released in a
   * `finally`, renewed every `renewEveryMs` (a third of `leaseMs`) while it
   * runs; `lease.lost` turns true if a renewal finds it ended. Throws
   * Denied when every slot is taken.
   */
  async withLease(key, max, leaseMs, work, { id = null, renewEveryMs = leaseMs / 3 } = {}) {
    const acquired = await this.acquire(key, max, leaseMs, { id });
    if (!acquired.acquired) throw new Denied(acquired, `${key}: all ${max} slots are taken`);
    const lease = { key, id: acquired.id, acquired, lost: false };
    let timer = null;
    if (acquired.id !== null) {
      timer = setInterval(async () => {
        if (!(await this.renew(key, acquired.id, leaseMs).catch(() => true))) {
          lease.lost = true;
          clearInterval(timer);
        }
      }, renewEveryMs);
    }
    try {
      return await work(lease);
    } finally {
      clearInterval(timer);
      if (acquired.id !== null) await this.release(key, acquired.id).catch(() => 0);
    }
  }

  // -- policies --------------------------------------------------------------

  checkPolicy(policy, subject, cost = 1) {
    return this.policyDecision('CHECK', policy, subject, cost);
  }

  peekPolicy(policy, subject, cost = 1) {
    return this.policyDecision('PEEK', policy, subject, cost);
  }

  /** MCHECK of every policy of `plan`; `cost`: one for all, or `{policy: cost}`. */
  checkPlan(plan, subject, cost = 1) {
    return this.policyDecision('MCHECK', plan, subject, cost);
  }

  peekPlan(plan, subject, cost = 1) {
    return this.policyDecision('MPEEK', plan, subject, cost);
  }

  async policyDecision(verb, name, subject, cost) {
    if (this.policies === null) {
      try {
        await this.refreshPolicies();
      } catch (error) {
        if (!isUnavailable(error)) throw error;
        const allowed = this.onUnavailable !== 'closed';
        this.metric('degraded', name);
        const d = new Decision({ allowed, limit: 0, policy: name, degraded: true, degradedBy: allowed ? 'open' : 'closed' });
        return verb === 'CHECK' || verb === 'PEEK' ? d : new MultiDecision({ allowed, remaining: 0, limit: 0, retryAfterMs: null, resetAfterMs: 0, binding: 0, each: [d], degraded: true, degradedBy: d.degradedBy });
      }
    }
    const set = this.policies;
    if (verb === 'CHECK' || verb === 'PEEK') {
      return this.decide(this.checkCall(verb, policyKey(this.prefix, subject, name), set.limit(name, subject), cost, name));
    }
    const names = set.plan(name);
    const costs = typeof cost === 'object' ? cost : Object.fromEntries(names.map((n) => [n, cost]));
    const unknown = Object.keys(costs).filter((n) => !names.includes(n));
    if (unknown.length) throw new PolicyError(`plan '${name}' has no policy ${unknown.join(', ')}`);
    const items = names.map((n) => ({ key: policyKey(this.prefix, subject, n), limit: set.limit(n, subject), cost: costs[n] ?? 1, name: n }));
    return this.decide(this.multiCall(verb, items, name));
  }

  /** Reads the policy hash now, and starts the watcher (an unref'd interval). */
  async refreshPolicies() {
    const fields = await this.send(['HGETALL', this.policyKey], this.policyKey);
    const hash = Array.isArray(fields) ? Object.fromEntries(fields.reduce((pairs, v, i) => (i % 2 ? pairs[pairs.length - 1].push(v) : pairs.push([v]), pairs), [])) : fields;
    const policies = PolicySet.fromHash(hash);
    const changed = this.policies === null || JSON.stringify(hash) !== this.lastHash;
    this.lastHash = JSON.stringify(hash);
    this.policies = policies;
    this.lastFull = Date.now();
    if (!this.watcher) {
      this.watcher = setInterval(() => this.poll(), this.pollIntervalMs);
      this.watcher.unref();
    }
    if (changed) for (const listener of this.policyListeners) listener(policies);
    return policies;
  }

  async poll() {
    if (this.polling) return;
    this.polling = true;
    try {
      const version = await this.send(['HGET', this.policyKey, 'version'], this.policyKey);
      if (version !== this.policies?.version || Date.now() - this.lastFull >= this.refreshIntervalMs) await this.refreshPolicies();
    } catch {
      // Unavailable: the next poll tries again.
    } finally {
      this.polling = false;
    }
  }

  /** Writes the policy hash, every value checked first, with a new version. */
  policyAdmin() {
    const write = async (field, value) => this.send(['HSET', this.policyKey, field, value, 'version', versionNow()], this.policyKey);
    return {
      setPolicy: async (name, spec) => { const l = Limit.parse(spec); await write(fieldFor('policy', name), l.spec()); return l; },
      setOverride: async (name, subject, spec) => { const l = Limit.parse(spec); await write(fieldFor('override', name, subject), l.spec()); return l; },
      setPlan: async (name, policies) => { const n = parsePlan(Array.isArray(policies) ? policies.join(' ') : policies); await write(fieldFor('plan', name), n.join(' ')); return n; },
      get: (kind, name, subject = null) => this.send(['HGET', this.policyKey, fieldFor(kind, name, subject)], this.policyKey),
      delete: async (kind, name, subject = null) => {
        const removed = Number(await this.send(['HDEL', this.policyKey, fieldFor(kind, name, subject)], this.policyKey));
        if (removed) await this.send(['HSET', this.policyKey, 'version', versionNow()], this.policyKey);
        return removed > 0;
      },
      all: async () => {
        const flat = await this.send(['HGETALL', this.policyKey], this.policyKey);
        return Array.isArray(flat) ? Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]]))) : flat;
      },
    };
  }

  // -- calls -----------------------------------------------------------------

  checkCall(verb, key, limit, cost, name) {
    checkCost(cost);
    return { verb, keys: [key], args: limit.args(cost), kind: 'decision', policy: name, limits: [{ key, limit, cost, name }] };
  }

  multiCall(verb, items, name) {
    if (items.length < 1 || items.length > 16) throw new RangeError('MCHECK takes 1 to 16 limits');
    const limits = items.map(({ key, limit, cost = 1, name: n = null }) => ({ key, limit: Limit.from(limit), cost: checkCost(cost), name: n }));
    const args = limits.flatMap(({ limit, cost }) => ['LIMIT', ...limit.args(cost)]);
    return { verb, keys: limits.map((l) => l.key), args, kind: 'multi', policy: name, limits };
  }

  reserveCall(holds, id, ttlMs, items, name) {
    checkHoldId(id);
    checkHoldTtl(ttlMs);
    if (items.length < 1 || items.length > 16) throw new RangeError('RESERVE takes 1 to 16 limits');
    const limits = items.map(({ key, limit, cost, hold, name: n = null }) => {
      const l = Limit.from(limit);
      if (l.shadow) throw new SpecError(`${key}: a shadow limit cannot be reserved (SHADOW is for CHECK and MCHECK)`);
      const holding = hold !== undefined && hold !== null;
      if (holding && cost !== undefined && cost !== null) throw new SpecError(`${key}: a LIMIT takes COST or HOLD, not both`);
      return { key: this.prefix + key, limit: l, cost: holding ? null : checkCost(cost ?? 1), hold: holding ? checkEstimate(hold) : null, name: n };
    });
    const holdsKey = this.prefix + holds;
    if (limits.some((l) => l.key === holdsKey)) throw new RangeError('the holds key cannot also be a limiter key');
    const args = limits.flatMap(({ limit, cost, hold }) => ['LIMIT', ...(hold !== null ? limit.group('HOLD', hold) : limit.args(cost))]);
    return { verb: 'RESERVE', keys: [holdsKey, ...limits.map((l) => l.key)], head: [id, String(ttlMs)], args, kind: 'reserve', policy: name, limits, extra: { holds: holdsKey, id, ttlMs } };
  }

  settleCall(holds, id, items, name) {
    checkHoldId(id);
    if (items.length < 1 || items.length > 16) throw new RangeError('SETTLE takes 1 to 16 limits');
    const limits = items.map(({ key, limit, actual, name: n = null }) => ({ key: this.prefix + key, limit: Limit.from(limit), actual: checkActual(actual), name: n }));
    const holdsKey = this.prefix + holds;
    if (limits.some((l) => l.key === holdsKey)) throw new RangeError('the holds key cannot also be a limiter key');
    const args = limits.flatMap(({ limit, actual }) => ['LIMIT', ...limit.group('ACTUAL', actual)]);
    return { verb: 'SETTLE', keys: [holdsKey, ...limits.map((l) => l.key)], head: [id], args, kind: 'settle', policy: name, limits, extra: { holds: holdsKey, id } };
  }

  // Promise callbacks rather than async functions: on a busy client each
  // async layer costs about as much as the decision's own work.
  decide(call) {
    if (!this.breaker.allow()) return this.degradeNow(call);
    let sent;
    try {
      sent = this.execute(call);
    } catch (error) {
      return Promise.reject(error);
    }
    return sent.then(
      (reply) => {
        this.breaker.success();
        return this.finish(call, reply);
      },
      (error) => {
        if (isUnavailable(error)) {
          this.breaker.failure();
          return this.degrade(call);
        }
        this.breaker.success();
        this.metric('error', call.policy);
        throw error;
      },
    );
  }

  async degradeNow(call) {
    return this.degrade(call);
  }

  finish(call, reply) {
    if (call.kind === 'decision') return this.decision(call, reply);
    return this.finishOther(call, reply);
  }

  decision(call, reply) {
    const { key, limit, name } = call.limits[0];
    let d = Decision.fromReply(reply, limit.periodSeconds, name);
    if (!d.allowed && limit.shadow && call.verb === 'CHECK') {
      d = d.with({ allowed: true, retryAfterMs: null, shadowDenied: true });
      this.shadow(d, key);
    }
    return this.counted(call, d);
  }

  async finishOther(call, reply) {
    switch (call.kind) {
      case 'multi': {
        const d = MultiDecision.fromReply(reply, call.limits.map((l) => l.limit.periodSeconds), call.limits.map((l) => l.name));
        let charged = null;
        const denying = d.each.map((e, i) => (e.allowed ? -1 : i)).filter((i) => i >= 0);
        const shadowOnly = !d.allowed && call.verb === 'MCHECK' && denying.every((i) => call.limits[i].limit.shadow);
        const admitted = d.each.map((e, i) => (e.allowed ? i : -1)).filter((i) => i >= 0);
        if (shadowOnly && admitted.length) {
          try {
            charged = MultiDecision.fromReply(await this.execute(this.multiCall('MCHECK', admitted.map((i) => call.limits[i]), call.policy)));
          } catch (error) {
            if (!isUnavailable(error)) throw error;
          }
        }
        return this.afterMulti(call, d, charged);
      }
      case 'reserve':
        return this.counted(call, Reserved.fromReply(reply, call.limits.map((l) => l.limit.periodSeconds), call.limits.map((l) => l.name), call.extra.id));
      case 'settle':
        return Settled.fromReply(reply, call.limits.map((l) => l.limit.periodSeconds), call.limits.map((l) => l.name));
      case 'throttle':
        return this.counted(call, Throttle.fromReply(reply));
      case 'acquire':
        return this.counted(call, Acquired.fromReply(reply));
      case 'renew':
        return Number(reply) === 1;
      default:
        return Number(reply);
    }
  }

  afterMulti(call, d, charged) {
    const denying = d.each.map((e, i) => (e.allowed ? -1 : i)).filter((i) => i >= 0);
    if (!d.allowed && call.verb === 'MCHECK' && denying.length && denying.every((i) => call.limits[i].limit.shadow)) {
      const each = [...d.each];
      if (charged) {
        const admitted = d.each.map((e, i) => (e.allowed ? i : -1)).filter((i) => i >= 0);
        admitted.forEach((i, j) => { each[i] = charged.each[j].with({ periodSeconds: each[i].periodSeconds, policy: each[i].policy }); });
      }
      for (const i of denying) {
        each[i] = each[i].with({ allowed: true, retryAfterMs: null, shadowDenied: true });
        this.shadow(each[i], call.limits[i].key);
      }
      d = d.with({ allowed: true, retryAfterMs: null, shadowDenied: true, each });
    }
    return this.counted(call, d);
  }

  shadow(decision, key) {
    this.metric('shadow_denied', decision.policy);
    try {
      this.onShadowDenied?.(decision, key);
    } catch {
      // The hook must never break a request.
    }
  }

  counted(call, result) {
    const allowed = result.allowed ?? result.acquired ?? true;
    this.metric(allowed ? 'allowed' : 'denied', call.policy);
    if (result.degraded) this.metric('degraded', call.policy);
    return result;
  }

  metric(event, policy) {
    try {
      this.metrics?.(event, policy ?? 'default');
    } catch {
      // Metrics never break a request.
    }
  }

  /**
   * RESERVE, SETTLE and EXTEND without Redis. Local: the module's holds
   * in-process (the estimate, capped as the module's defaults cap it,
   * charged and recorded; SETTLE refunds or charges the rest; an expired
   * hold refunded), marked degraded. Open: admitted, nothing held; closed:
   * denied. SETTLE of a hold the local limiter never recorded charges the
   * actual locally (status unknown), as the module does for an unknown id.
   */
  degradeHold(call, mode) {
    const { extra } = call;
    if (call.kind === 'extend') {
      if (mode === 'local') {
        const extended = this.local.extend(extra.holds, extra.id, extra.ttlMs);
        if (extended !== null) return extended;
      }
      // A hold Redis keeps cannot be extended now: it is refunded by itself,
      // and its SETTLE charges the actual in full.
      return mode !== 'closed' ? Math.min(extra.ttlMs, HOLD_MAX_TTL_MS) : 0;
    }
    const periods = call.limits.map((l) => l.limit.periodSeconds);
    const names = call.limits.map((l) => l.name);
    const local = (result) => result.with({ degraded: true, degradedBy: 'local', each: result.each.map((e) => e.with({ degraded: true, degradedBy: 'local' })) });
    const allowed = mode === 'open';
    const each = call.limits.map(({ limit, name }) => new Decision({ allowed, remaining: allowed ? limit.limit : 0, limit: limit.limit, periodSeconds: limit.periodSeconds, policy: name, degraded: true, degradedBy: mode }));
    if (call.kind === 'reserve') {
      if (mode === 'local') {
        const groups = call.limits.map(({ key, limit, cost, hold }) => (hold !== null ? { key, limit, units: heldFor(hold, limit.bucket), held: true } : { key, limit, units: cost, held: false }));
        return this.counted(call, local(Reserved.fromReply(this.local.reserve(extra.holds, extra.id, extra.ttlMs, groups), periods, names, extra.id)));
      }
      return this.counted(call, new Reserved({ allowed, remaining: each[0].remaining, limit: each[0].limit, retryAfterMs: null, resetAfterMs: 0, binding: 0, each, degraded: true, degradedBy: mode, id: extra.id }));
    }
    if (mode === 'local') return local(Settled.fromReply(this.local.settle(extra.holds, extra.id, call.limits), periods, names));
    return new Settled({ status: SettleStatus.UNKNOWN, each, degraded: true, degradedBy: mode });
  }

  degrade(call) {
    const mode = this.onUnavailable;
    if (call.kind === 'reserve' || call.kind === 'settle' || call.kind === 'extend') return this.degradeHold(call, mode);
    if ((call.kind === 'decision' || call.kind === 'multi') && call.limits) {
      const peek = READ_ONLY.has(call.verb);
      if (mode === 'local') {
        if (call.kind === 'decision') {
          const { key, limit, cost, name } = call.limits[0];
          let d = Decision.fromReply(this.local.check(key, limit, cost, peek), limit.periodSeconds, name).with({ degraded: true, degradedBy: 'local' });
          if (!d.allowed && limit.shadow && call.verb === 'CHECK') {
            d = d.with({ allowed: true, retryAfterMs: null, shadowDenied: true });
            this.shadow(d, key);
          }
          return this.counted(call, d);
        }
        const reply = this.local.mcheck(call.limits, peek);
        let d = MultiDecision.fromReply(reply, call.limits.map((l) => l.limit.periodSeconds), call.limits.map((l) => l.name));
        d = d.with({ degraded: true, degradedBy: 'local', each: d.each.map((e) => e.with({ degraded: true, degradedBy: 'local' })) });
        return this.afterMulti(call, d, null);
      }
      const allowed = mode === 'open';
      const each = call.limits.map(({ limit, name }) => new Decision({ allowed, remaining: allowed ? limit.limit : 0, limit: limit.limit, periodSeconds: limit.periodSeconds, policy: name, degraded: true, degradedBy: mode }));
      if (call.kind === 'decision') return this.counted(call, each[0]);
      return this.counted(call, new MultiDecision({ allowed, remaining: each[0].remaining, limit: each[0].limit, retryAfterMs: null, resetAfterMs: 0, binding: 0, each, degraded: true, degradedBy: mode }));
    }
    if (call.kind === 'throttle') {
      const { maxBurst, countPerPeriod, periodSeconds, quantity } = call.extra;
      if (mode === 'local') {
        try {
          const r = this.local.check(call.keys[0], new Limit({ limit: countPerPeriod, periodSeconds, algorithm: 'TOKEN', burst: maxBurst + 1 }), quantity);
          return this.counted(call, new Throttle({ limited: !r[0], limit: maxBurst + 1, remaining: Math.min(r[1], maxBurst + 1), retryAfterSeconds: r[3] < 0 ? null : Math.ceil(r[3] / 1000), resetAfterSeconds: Math.ceil(r[4] / 1000), degraded: true, degradedBy: 'local' }));
        } catch (error) {
          if (!(error instanceof SpecError)) throw error;
        }
      }
      const allowed = mode !== 'closed';
      return this.counted(call, new Throttle({ limited: !allowed, limit: maxBurst + 1, remaining: allowed ? maxBurst + 1 : 0, retryAfterSeconds: null, resetAfterSeconds: 0, degraded: true, degradedBy: mode }));
    }
    if (call.kind === 'acquire') {
      const { max, leaseMs, id } = call.extra;
      if (mode === 'local') {
        const local = Acquired.fromReply(this.local.acquire(call.keys[0], max, leaseMs, id));
        return this.counted(call, new Acquired({ ...local, degraded: true, degradedBy: 'local' }));
      }
      const allowed = mode === 'open';
      return this.counted(call, new Acquired({ acquired: allowed, remaining: allowed ? max : 0, max, retryAfterMs: null, resetAfterMs: 0, id: null, degraded: true, degradedBy: mode }));
    }
    if (call.kind === 'renew') {
      const { id, leaseMs } = call.extra;
      if (mode === 'local' && String(id).startsWith('local-')) return this.local.renew(call.keys[0], id, leaseMs) === 1;
      return mode !== 'closed';
    }
    if (call.kind === 'release') return mode === 'local' ? this.local.release(call.keys[0], call.args) : 0;
    throw new ClientOfflineError();
  }

  // -- sending ---------------------------------------------------------------

  /** 'module', 'functions' or 'script', found out at the first call (or now). */
  async backend() {
    return this.backendName ?? this.chooseBackend();
  }

  async masters() {
    if (!this.cluster) return [null];
    return Promise.all(this.client.masters.map((m) => this.client.nodeClient(m)));
  }

  send(args, key, node = null) {
    let sent;
    if (node) sent = node.sendCommand(args);
    else if (this.cluster) sent = this.client.sendCommand(key, false, args);
    else sent = this.client.sendCommand(args);
    return this.deadlines.race(sent);
  }

  execute(call) {
    const backend = this.backendName;
    if (backend === null || backend === undefined) return this.chooseBackend().then(() => this.execute(call));
    const command = commandFor(backend, call.verb, call.keys, call.args.map(String), this.sha, call.head ?? []);
    const key = call.keys[0];
    return this.send(command, key).catch((error) => this.sendLoaded(error, backend, command, key));
  }

  /** `command` again once the library or script it found missing is loaded. */
  async sendLoaded(error, backend, command, key) {
    if (!(error instanceof ErrorReply)) throw error;
    if (error.message.startsWith('NOSCRIPT')) await this.loadScript();
    else if (backend === 'functions' && /function not found/i.test(error.message)) await this.loadLibrary();
    else throw error;
    return this.send(command, key);
  }

  chooseBackend() {
    this.choosing ??= (async () => {
      const backend = this.namedBackend ?? (await this.offered());
      if (backend === 'functions') await this.loadLibrary();
      else if (backend === 'script') await this.loadScript();
      this.backendName = backend;
      return backend;
    })().finally(() => {
      this.choosing = null;
    });
    return this.choosing;
  }

  async offered() {
    const [node] = await this.masters();
    const has = async (args, key, on) => {
      try {
        await this.send(args, key, on);
        return true;
      } catch (error) {
        if (error instanceof ErrorReply) return !/unknown command/i.test(error.message);
        throw error;
      }
    };
    let module;
    let functions;
    try {
      const info = await this.send(['COMMAND', 'INFO', 'ratelimit.check', 'fcall'], PROBE_KEY, node);
      [module, functions] = [info[0] !== null, info[1] !== null];
    } catch (error) {
      if (!(error instanceof ErrorReply) || !error.message.startsWith('NOPERM')) throw error;
      module = await has(['RATELIMIT.PEEK', PROBE_KEY, '1', '1'], PROBE_KEY, node);
      functions = !module && (await has(['FCALL_RO', 'ratelimit_version', '0'], null, node ?? null));
    }
    return module ? 'module' : functions ? 'functions' : 'script';
  }

  async loadLibrary() {
    for (const node of await this.masters()) {
      let found = null;
      try {
        found = Number(await this.send(['FCALL_RO', 'ratelimit_version', '0'], PROBE_KEY, node));
      } catch (error) {
        if (!(error instanceof ErrorReply)) throw error;
      }
      if (found !== this.libraryVersion) await this.send(['FUNCTION', 'LOAD', 'REPLACE', this.library], PROBE_KEY, node);
    }
  }

  async loadScript() {
    for (const node of await this.masters()) await this.send(['SCRIPT', 'LOAD', this.script], PROBE_KEY, node);
  }
}
