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

function sliding(state, limit, cost, now) {
  const period = big(limit.periodSeconds) * 1000n;
  const lim = big(limit.limit);
  const window = now / period;
  const elapsed = now % period;
  let previous = 0n;
  let current = 0n;
  if (state) {
    const [prevS, curS, expires] = state;
    const stored = expires <= (window + 2n) * period ? (expires - 1n) / period - 1n : window;
    if (stored === window) [previous, current] = [prevS, curS];
    else if (stored + 1n === window) previous = curS;
  }
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

  mcheck(limits, peek = false) {
    const now = big(this.clock());
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
    const b = binding(each, allowed);
    return [allowed ? 1 : 0, each[b][1], each[b][2], allowed ? -1 : each[b][3], each[b][4], b + 1, each];
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
