// Typed replies and the HTTP headers they map to. Every reply integer of
// the module is at most 2^53 - 1, so plain numbers hold them exactly.

// "ietf": RateLimit and RateLimit-Policy structured fields
//         (draft-ietf-httpapi-ratelimit-headers-08 and later);
// "legacy": RateLimit-Limit, -Remaining, -Reset (drafts up to -07);
// "both"; "none" (only Retry-After on a denial).
export const HEADER_STYLES = ['ietf', 'legacy', 'both', 'none'];

const ceilS = (ms) => Math.ceil(ms / 1000);
const orNull = (n) => (n < 0 ? null : n);

function sfString(name) {
  const clean = [...String(name)].map((c) => (c >= ' ' && c <= '~' ? c : '_')).join('');
  return `"${clean.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** CHECK's or PEEK's answer (or one limit of MCHECK / MPEEK). */
export class Decision {
  constructor(fields) {
    // Each field set once, in one order: one object shape on the hot path.
    this.allowed = fields.allowed ?? false;
    this.remaining = fields.remaining ?? 0;
    this.limit = fields.limit ?? 0;
    this.retryAfterMs = fields.retryAfterMs ?? null;
    this.resetAfterMs = fields.resetAfterMs ?? 0;
    this.periodSeconds = fields.periodSeconds ?? null;
    this.policy = fields.policy ?? null;
    this.degraded = fields.degraded ?? false;
    this.degradedBy = fields.degradedBy ?? null;
    this.shadowDenied = fields.shadowDenied ?? false;
    Object.freeze(this);
  }

  static fromReply(reply, periodSeconds = null, policy = null) {
    return new Decision({
      allowed: Number(reply[0]) === 1, remaining: Number(reply[1]), limit: Number(reply[2]),
      retryAfterMs: orNull(Number(reply[3])), resetAfterMs: Number(reply[4]), periodSeconds, policy,
    });
  }

  with(fields) {
    return new Decision({ ...this, ...fields });
  }

  get retryAfterSeconds() {
    return this.retryAfterMs === null ? null : ceilS(this.retryAfterMs);
  }

  headers(style = 'ietf') {
    return headers([this], this, style);
  }
}

/** MCHECK's or MPEEK's answer: the verdict, the binding limit's numbers, each limit's Decision. */
export class MultiDecision {
  constructor(fields) {
    Object.assign(this, { degraded: false, degradedBy: null, shadowDenied: false }, fields);
    Object.freeze(this);
  }

  static fromReply(reply, periods = [], policies = []) {
    const [allowed, remaining, limit, retryAfterMs, resetAfterMs, binding] = reply.slice(0, 6).map(Number);
    const each = reply[6].map((one, i) => Decision.fromReply(one, periods[i] ?? null, policies[i] ?? null));
    return new MultiDecision({ allowed: allowed === 1, remaining, limit, retryAfterMs: orNull(retryAfterMs), resetAfterMs, binding: binding - 1, each });
  }

  with(fields) {
    return new MultiDecision({ ...this, ...fields });
  }

  get policy() {
    return this.each[this.binding]?.policy ?? null;
  }

  headers(style = 'ietf') {
    return headers(this.each, this, style);
  }
}

/**
 * RESERVE's answer: MCHECK's (verdict, binding limit, `each`, `headers()`),
 * then `held` (units held under `id`, the least among its HOLD limits; 0
 * when denied or without HOLD) and `holdTtlMs` (ms until the hold is
 * refunded unless settled; null when nothing is recorded).
 */
export class Reserved extends MultiDecision {
  constructor(fields) {
    super({ held: 0, holdTtlMs: null, id: null, ...fields });
  }

  static fromReply(reply, periods = [], policies = [], id = null) {
    const multi = MultiDecision.fromReply(reply.slice(0, 7), periods, policies);
    return new Reserved({ ...multi, held: Number(reply[7]), holdTtlMs: orNull(Number(reply[8])), id });
  }

  with(fields) {
    return new Reserved({ ...this, ...fields });
  }
}

/** SETTLE's status: what it found under the id. */
export const SettleStatus = Object.freeze({
  /** Nothing (never reserved, or expired and refunded): the actual was charged in full. */
  UNKNOWN: 'unknown',
  /** A live hold, now settled: each key charged actual − held. */
  SETTLED: 'settled',
  /** Settled already: nothing charged. */
  ALREADY_SETTLED: 'already_settled',
});
const STATUSES = [SettleStatus.UNKNOWN, SettleStatus.SETTLED, SettleStatus.ALREADY_SETTLED];

/** SETTLE's answer: `status` and `each` limit's Decision as PEEK of one unit shows it after. */
export class Settled {
  constructor(fields) {
    Object.assign(this, { degraded: false, degradedBy: null }, fields);
    Object.freeze(this);
  }

  static fromReply(reply, periods = [], policies = []) {
    const each = reply[1].map((one, i) => Decision.fromReply(one, periods[i] ?? null, policies[i] ?? null));
    return new Settled({ status: STATUSES[Number(reply[0])], each });
  }

  with(fields) {
    return new Settled({ ...this, ...fields });
  }
}

function headers(limits, verdict, style) {
  if (!HEADER_STYLES.includes(style)) throw new RangeError(`header style must be one of ${HEADER_STYLES.join(', ')}`);
  const out = {};
  const knows = !verdict.degraded || verdict.degradedBy === 'local';
  if (style === 'ietf' || style === 'both') {
    const policies = [];
    const states = [];
    limits.forEach((d, i) => {
      const name = sfString(d.policy ?? (limits.length === 1 ? 'default' : `limit${i + 1}`));
      policies.push(`${name};q=${d.limit}${d.periodSeconds ? `;w=${d.periodSeconds}` : ''}`);
      if (knows) states.push(`${name};r=${d.remaining};t=${ceilS(d.resetAfterMs)}`);
    });
    out['RateLimit-Policy'] = policies.join(', ');
    if (states.length) out.RateLimit = states.join(', ');
  }
  if (style === 'legacy' || style === 'both') {
    out['RateLimit-Limit'] = String(verdict.limit);
    if (knows) {
      out['RateLimit-Remaining'] = String(verdict.remaining);
      out['RateLimit-Reset'] = String(ceilS(verdict.resetAfterMs));
    }
    if (style === 'legacy') {
      const windows = limits.filter((d) => d.periodSeconds).map((d) => `${d.limit};w=${d.periodSeconds}`);
      if (windows.length) out['RateLimit-Policy'] = windows.join(', ');
    }
  }
  if (!verdict.allowed && verdict.retryAfterMs !== null) out['Retry-After'] = String(ceilS(verdict.retryAfterMs));
  return out;
}

/** THROTTLE's (redis-cell's) reply, times in whole seconds. */
export class Throttle {
  constructor(fields) {
    Object.assign(this, { degraded: false, degradedBy: null }, fields);
    this.allowed = !this.limited;
    Object.freeze(this);
  }

  static fromReply(reply) {
    const [limited, limit, remaining, retryAfterSeconds, resetAfterSeconds] = reply.map(Number);
    return new Throttle({ limited: limited === 1, limit, remaining, retryAfterSeconds: orNull(retryAfterSeconds), resetAfterSeconds });
  }
}

/** ACQUIRE's reply; `id` is null when not acquired. */
export class Acquired {
  constructor(fields) {
    Object.assign(this, { degraded: false, degradedBy: null }, fields);
    Object.freeze(this);
  }

  static fromReply(reply) {
    const [acquired, remaining, max, retryAfterMs, resetAfterMs] = reply.slice(0, 5).map(Number);
    const id = reply[5] === null || reply[5] === undefined ? null : String(reply[5]);
    return new Acquired({ acquired: acquired === 1, remaining, max, retryAfterMs: orNull(retryAfterMs), resetAfterMs, id });
  }

  headers() {
    return !this.acquired && this.retryAfterMs !== null ? { 'Retry-After': String(ceilS(this.retryAfterMs)) } : {};
  }
}

/** Thrown by helpers that refuse to run work over a limit; `result` said no. */
export class Denied extends Error {
  constructor(result, message = 'rate limited') {
    super(message);
    this.name = 'Denied';
    this.result = result;
  }
}
