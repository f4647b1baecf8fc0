// The module's algorithms in-process (src/limiter/*.rs), on BigInt so that
// every product is exact, over state kept in this process only and bounded
// to `maxKeys` keys (least recently used dropped first). Used while Redis
// cannot be asked: each process then limits on its own.

const big = BigInt;
const min = (a, b) => (a < b ? a : b);
const max = (a, b) => (a > b ? a : b);

function fixed(state, limit, cost, now) {
  const period = big(limit.periodSeconds) * 1000n;
  const lim = big(limit.limit);
  const newEnd = now + period;
  let count = 0n;
  let end = newEnd;
  if (state && state[1] > newEnd) [count, end] = [state[0], newEnd];
  else if (state && state[1] > now) [count, end] = state;
  const fits = cost <= lim - count;
  const after = fits ? count + cost : count;
  const store = cost > 0n && fits ? [after, end] : null;
  const retry = fits || cost > lim ? -1n : end - now;
  const reset = after > 0n ? end - now : 0n;
  return [[fits ? 1n : 0n, max(0n, lim - after), lim, retry, reset], store];
}

function firstFitting(previous, room, period) {
  if (previous === 0n) return 0n;
  const elapsed = max(0n, period - (room * period) / previous);
  return elapsed < period ? elapsed : null;
}

// A sliding window's [previous, current] counts as seen from now.
function countsAt(state, period, now) {
  const window = now / period;
  if (!state) return [0n, 0n];
  const [prevS, curS, expires] = state;
  const stored = expires <= (window + 2n) * period ? (expires - 1n) / period - 1n : window;
  if (stored === window) return [prevS, curS];
  if (stored + 1n === window) return [curS, 0n];
  return [0n, 0n];
}

function sliding(state, limit, cost, now) {
  const period = big(limit.periodSeconds) * 1000n;
  const lim = big(limit.limit);
  const window = now / period;
  const elapsed = now % period;
  const [previous, current] = countsAt(state, period, now);
  const budget = lim * period;
  const weighted = (p, c) => p * (period - elapsed) + c * period;
  const fits = weighted(previous, current) + cost * period <= budget;
  const after = fits ? current + cost : current;
  const store = cost > 0n && fits ? [previous, after, (window + 2n) * period] : null;
  const remaining = max(0n, budget - weighted(previous, after)) / period;
  let retry = -1n;
  if (!fits && cost <= lim) {
    const start = window * period;
    let at = null;
    const room = lim - current - cost;
    if (room >= 0n) {
      const e = firstFitting(previous, room, period);
      if (e !== null) at = start + max(e, elapsed);
    }
    if (at === null) {
      const e = firstFitting(current, lim - cost, period);
      at = e !== null ? start + period + e : start + 2n * period;
    }
    retry = at - now;
  }
  const start = window * period;
  const emptyAt = after > 0n ? start + 2n * period : previous > 0n ? start + period : now;
  return [[fits ? 1n : 0n, remaining, lim, retry, max(0n, emptyAt - now)], store];
}

function ceilDiv(a, b) {
  return a % b === 0n ? a / b : a / b + 1n;
}

function token(state, limit, cost, now) {
  const ticksPerMs = big(limit.limit);
  const tokenTicks = big(limit.periodSeconds) * 1000n;
  const capacity = big(limit.bucket) * tokenTicks;
  const nowT = now * ticksPerMs;
  let fullAt = state === null || state === undefined ? nowT : max(state, nowT);
  fullAt = min(fullAt, nowT + capacity);
  const asked = cost * tokenTicks;
  const fits = fullAt - nowT + asked <= capacity;
  const after = fits ? fullAt + asked : fullAt;
  const store = cost > 0n && fits ? after : null;
  const retry = fits || cost > big(limit.bucket) ? -1n : max(0n, ceilDiv(fullAt + asked - capacity, ticksPerMs) - now);
  const debt = after - nowT;
  return [[fits ? 1n : 0n, (capacity - debt) / tokenTicks, ticksPerMs, retry, ceilDiv(debt, ticksPerMs)], store];
}

const ALGORITHMS = { FIXED: fixed, SLIDING: sliding, TOKEN: token };
const looked = (asked, asIs) => [asked[0], asIs[1], asked[2], asked[3], asIs[4]];
const toNumbers = (reply) => reply.map(Number);

const MAX_COUNT = 2n ** 53n - 1n;
// The module's default `hold-max-ttl-ms`, applied by the local limiter.
export const HOLD_MAX_TTL_MS = 60_000;
// A refund that leaves a bucket full deletes the key, as the module does.
const DELETE = Symbol('delete');

/**
 * The state after taking `units` past the limit (a SETTLE's debt), as the
 * module's `force`: the window in force counts them; a bucket goes down to
 * empty and no further. null: nothing to store.
 */
export function force(state, limit, units, now) {
  if (units === 0n) return null;
  const period = big(limit.periodSeconds) * 1000n;
  if (limit.algorithm === 'FIXED') {
    const newEnd = now + period;
    let [count, end] = [0n, newEnd];
    if (state && state[1] > newEnd) [count, end] = [state[0], newEnd];
    else if (state && state[1] > now) [count, end] = state;
    return [min(count + units, MAX_COUNT), end];
  }
  if (limit.algorithm === 'SLIDING') {
    const [previous, current] = countsAt(state, period, now);
    return [previous, min(current + units, MAX_COUNT), (now / period + 2n) * period];
  }
  const nowT = now * big(limit.limit);
  const capacity = big(limit.bucket) * period;
  const fullAt = state === null || state === undefined ? nowT : min(max(state, nowT), nowT + capacity);
  return min(fullAt + units * period, nowT + capacity);
}

/**
 * The state after giving back `units` charged at `chargedAt`, as the
 * module's `refund`: a fixed window only while the window charged lasts, a
 * sliding window into the count of the window charged, a bucket never above
 * full. null: nothing changes; DELETE: a bucket left full.
 */
export function refund(state, limit, units, chargedAt, now) {
  if (state === null || state === undefined || units === 0n) return null;
  const period = big(limit.periodSeconds) * 1000n;
  if (limit.algorithm === 'FIXED') {
    const [count, end] = state;
    const given = min(units, count);
    return end - period <= chargedAt && chargedAt < end && now < end && given > 0n ? [count - given, end] : null;
  }
  if (limit.algorithm === 'SLIDING') {
    const window = now / period;
    let [previous, current] = countsAt(state, period, now);
    const charged = chargedAt / period;
    if (charged === window && min(units, current) > 0n) current -= min(units, current);
    else if (charged + 1n === window && min(units, previous) > 0n) previous -= min(units, previous);
    else return null;
    return [previous, current, (window + 2n) * period];
  }
  const nowT = now * big(limit.limit);
  const fullAt = min(max(state, nowT), nowT + big(limit.bucket) * period);
  const given = max(fullAt - units * period, nowT);
  if (given >= fullAt) return null;
  return given <= nowT ? DELETE : given;
}

/** A limit as MPEEK of one unit shows it: SETTLE's reply per limit. */
function peekOne(state, limit, now) {
  const algorithm = ALGORITHMS[limit.algorithm];
  return toNumbers(looked(algorithm(state, limit, 1n, now)[0], algorithm(state, limit, 0n, now)[0]));
}

function binding(each, allowed) {
  let best = 0;
  if (!allowed) {
    const rank = (r) => (r[3] < 0 ? Infinity : r[3]);
    const denying = each.map((r, i) => [r, i]).filter(([r]) => !r[0]);
    best = denying[0][1];
    for (const [r, i] of denying.slice(1)) if (rank(r) > rank(each[best])) best = i;
    return best;
  }
  for (let i = 1; i < each.length; i++) {
    if (big(each[i][1]) * big(each[best][2]) < big(each[best][1]) * big(each[i][2])) best = i;
  }
  return best;
}

export class LocalLimiter {
  constructor({ maxKeys = 10_000, clock = Date.now } = {}) {
    if (maxKeys < 1) throw new RangeError('maxKeys must be at least 1');
    this.maxKeys = maxKeys;
    this.clock = clock;
    this.states = new Map();
    this.nextId = 0;
  }

  get size() {
    return this.states.size;
  }

  clear() {
    this.states.clear();
  }

  get(key, kind) {
    const entry = this.states.get(key);
    if (!entry || entry.kind !== kind) return null;
    this.states.delete(key);
    this.states.set(key, entry);
    return entry.state;
  }

  put(key, kind, state) {
    this.states.delete(key);
    this.states.set(key, { kind, state });
    while (this.states.size > this.maxKeys) this.states.delete(this.states.keys().next().value);
  }

  check(key, limit, cost = 1, peek = false) {
    const algorithm = ALGORITHMS[limit.algorithm];
    const now = big(this.clock());
    const state = this.get(key, limit.algorithm);
    const [reply, store] = algorithm(state, limit, big(cost), now);
    if (peek) return toNumbers(looked(reply, algorithm(state, limit, 0n, now)[0]));
    if (store !== null) this.put(key, limit.algorithm, store);
    return toNumbers(reply);
  }

  mcheck(limits, peek = false, now = big(this.clock())) {
    const decided = limits.map(({ key, limit, cost }) => {
      const algorithm = ALGORITHMS[limit.algorithm];
      const state = this.get(key, limit.algorithm);
      const [reply, store] = algorithm(state, limit, big(cost), now);
      return { key, limit, algorithm, state, reply, store };
    });
    const allowed = decided.every((d) => d.reply[0] === 1n);
    const each = decided.map((d) => {
      if (allowed && !peek) {
        if (d.store !== null) this.put(d.key, d.limit.algorithm, d.store);
        return toNumbers(d.reply);
      }
      return toNumbers(looked(d.reply, d.algorithm(d.state, d.limit, 0n, now)[0]));
    });
    // Picked on the answers with each cost, as the module picks it: an
    // MPEEK shows the counts as they are, which can rank otherwise.
    const b = binding(decided.map((d) => toNumbers(d.reply)), allowed);
    return [allowed ? 1 : 0, each[b][1], each[b][2], allowed ? -1 : each[b][3], each[b][4], b + 1, each];
  }

  // -- holds: RESERVE, SETTLE, EXTEND as the module keeps them, in-process.
  // A holds key's entry maps each id to a record: {live: true, deadline,
  // chargedAt, ttl, reply, holds: [{key, limit, held}]} or {live: false,
  // deadline, reply} once settled (times as BigInt ms).

  /** The records of `holds` after refunding and forgetting expired ones (the module's sweep). */
  records(holds, now) {
    const records = new Map(this.get(holds, 'HOLDS') ?? []);
    for (const [id, record] of records) {
      if (record.deadline > now) continue;
      records.delete(id);
      if (record.live) for (const h of record.holds) this.refundKey(h.key, h.limit, big(h.held), record.chargedAt, now);
    }
    return records;
  }

  keepRecords(holds, records) {
    if (records.size) this.put(holds, 'HOLDS', records);
    else this.states.delete(holds);
  }

  refundKey(key, limit, units, chargedAt, now) {
    const after = refund(this.get(key, limit.algorithm), limit, units, chargedAt, now);
    if (after === DELETE) this.states.delete(key);
    else if (after !== null) this.put(key, limit.algorithm, after);
  }

  /** RESERVE's reply for `groups` ({key, limit, units, held}, the units already capped). */
  reserve(holds, id, ttlMs, groups) {
    const now = big(this.clock());
    const records = this.records(holds, now);
    const record = records.get(id);
    let reply;
    const least = (hs) => (hs.length ? Math.min(...hs.map((h) => h.held)) : 0);
    if (record) {
      reply = record.live ? [...record.reply, least(record.holds), Number(record.deadline - now)] : [...record.reply, 0, -1];
    } else {
      reply = this.mcheck(groups.map(({ key, limit, units }) => ({ key, limit, cost: units })), false, now);
      if (reply[0] === 1) {
        const ttl = Math.min(ttlMs, HOLD_MAX_TTL_MS);
        const kept = groups.filter((g) => g.held).map(({ key, limit, units }) => ({ key, limit, held: units }));
        records.set(id, { live: true, deadline: now + big(ttl), chargedAt: now, ttl, reply, holds: kept });
        reply = [...reply, least(kept), ttl];
      } else {
        reply = [...reply, 0, -1];
      }
    }
    this.keepRecords(holds, records);
    return reply;
  }

  /** SETTLE's reply: [status, each limit as PEEK of one unit shows it]. */
  settle(holds, id, groups) {
    const now = big(this.clock());
    const records = this.records(holds, now);
    const record = records.get(id);
    const status = !record ? 0 : record.live ? 1 : 2;
    if (status !== 2) {
      const heldAt = new Map((record?.holds ?? []).map((h) => [h.key, big(h.held)]));
      for (const { key, limit, actual } of groups) {
        const held = heldAt.get(key) ?? 0n;
        const units = big(actual);
        if (units >= held) {
          const state = force(this.get(key, limit.algorithm), limit, units - held, now);
          if (state !== null) this.put(key, limit.algorithm, state);
        } else {
          this.refundKey(key, limit, held - units, record.chargedAt, now);
        }
      }
    }
    if (status === 1) records.set(id, { live: false, deadline: now + big(record.ttl), reply: record.reply });
    this.keepRecords(holds, records);
    return [status, groups.map(({ key, limit }) => peekOne(this.get(key, limit.algorithm), limit, now))];
  }

  /** EXTEND's reply, or null when this limiter has no record of the id (a hold Redis keeps). */
  extend(holds, id, ttlMs) {
    const now = big(this.clock());
    const records = this.records(holds, now);
    const record = records.get(id);
    let reply = null;
    if (record?.live) {
      reply = Math.min(ttlMs, HOLD_MAX_TTL_MS);
      records.set(id, { ...record, deadline: now + big(reply), ttl: reply });
    } else if (record) {
      reply = 0;
    }
    this.keepRecords(holds, records);
    return reply;
  }

  acquire(key, max, leaseMs, id = null) {
    const now = this.clock();
    const leases = new Map([...(this.get(key, 'LEASES') ?? new Map())].filter(([, d]) => d > now));
    let acquired = false;
    if (id !== null && leases.has(id)) {
      leases.set(id, now + leaseMs);
      acquired = true;
    } else if (leases.size < max) {
      id = id ?? `local-${(++this.nextId).toString(16).padStart(26, '0')}`;
      leases.set(id, now + leaseMs);
      acquired = true;
    }
    this.put(key, 'LEASES', leases);
    const deadlines = [...leases.values()].sort((a, b) => a - b);
    const reset = deadlines.length ? deadlines[deadlines.length - 1] - now : 0;
    if (acquired) return [1, Math.max(0, max - leases.size), max, -1, reset, id];
    return [0, 0, max, deadlines[deadlines.length - max] - now, reset, null];
  }

  release(key, ids) {
    const now = this.clock();
    const leases = this.get(key, 'LEASES') ?? new Map();
    let ended = 0;
    for (const id of ids) {
      if ((leases.get(id) ?? 0) > now) ended += 1;
      leases.delete(id);
    }
    this.put(key, 'LEASES', leases);
    return ended;
  }

  renew(key, id, leaseMs) {
    const now = this.clock();
    const leases = this.get(key, 'LEASES') ?? new Map();
    if ((leases.get(id) ?? 0) <= now) return 0;
    leases.set(id, now + leaseMs);
    return 1;
  }
}
