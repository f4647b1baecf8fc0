// Limits as values: CHECK's arguments after the key, checked as the module
// checks them, so that a bad policy is refused before it is written.

export const MAX_LIMIT = 10 ** 15;
export const MAX_PERIOD_S = 10 ** 9;
const MAX_REFILL_S = 10 ** 9;
export const ALGORITHMS = ['FIXED', 'SLIDING', 'TOKEN'];

/** A limit the module would refuse, or that is no limit at all. */
export class SpecError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SpecError';
  }
}

// Holds (src/limiter/holds.rs): a RESERVE's or EXTEND's ttl_ms, an id's
// length, and the module's default `hold-max-percent`, which the local
// limiter applies while Redis is down.
export const MAX_HOLD_TTL_MS = 86_400_000;
const MAX_ID_BYTES = 64;
export const HOLD_MAX_PERCENT = 50;

const MESSAGES = {
  limit: `limit must be a positive integer (at most ${MAX_LIMIT})`,
  period: `period must be a positive integer number of seconds (at most ${MAX_PERIOD_S})`,
  burst: `burst must be a positive integer (at most ${MAX_LIMIT})`,
  cost: `cost must be a non-negative integer (at most ${MAX_LIMIT})`,
  estimate: `estimate must be a non-negative integer (at most ${MAX_LIMIT})`,
  actual: `actual must be a non-negative integer (at most ${MAX_LIMIT})`,
  ttl: `ttl_ms must be an integer from 1 to ${MAX_HOLD_TTL_MS}`,
};

function integer(value, what, low, high) {
  let n;
  if (typeof value === 'number') {
    n = value;
  } else if (typeof value === 'string' && /^(0|[1-9][0-9]*)$/.test(value)) {
    n = Number(value);
  } else {
    throw new SpecError(MESSAGES[what]);
  }
  if (!Number.isSafeInteger(n) || n < low || n > high) throw new SpecError(MESSAGES[what]);
  return n;
}

export function checkCost(cost) {
  return integer(cost, 'cost', 0, MAX_LIMIT);
}

export const checkEstimate = (estimate) => integer(estimate, 'estimate', 0, MAX_LIMIT);
export const checkActual = (actual) => integer(actual, 'actual', 0, MAX_LIMIT);
export const checkHoldTtl = (ttlMs) => integer(ttlMs, 'ttl', 1, MAX_HOLD_TTL_MS);

/** A hold's id as the module takes it: 1 to 64 bytes, not NOW (the fallback's clock word). */
export function checkHoldId(id) {
  if (typeof id !== 'string') throw new SpecError('id must be a string');
  const bytes = Buffer.byteLength(id);
  if (bytes < 1 || bytes > MAX_ID_BYTES || id.toUpperCase() === 'NOW') throw new SpecError(`id must be 1 to ${MAX_ID_BYTES} bytes and not NOW`);
  return id;
}

/**
 * What RESERVE holds for `estimate` on a limit that takes at most
 * `capacity` per request: the estimate, but at most `percent`% of the
 * capacity (rounded down, at least 1); 0 for 0.
 */
export function heldFor(estimate, capacity, percent = HOLD_MAX_PERCENT) {
  if (estimate === 0) return 0;
  const c = BigInt(capacity);
  const p = BigInt(percent);
  const cap = (c / 100n) * p + ((c % 100n) * p) / 100n;
  const most = cap > 1n ? cap : 1n;
  const e = BigInt(estimate);
  return Number(e < most ? e : most);
}

const PARSED = new Map();
const PARSED_MAX = 1024;

/**
 * `limit` units per `periodSeconds` with `algorithm` (FIXED, SLIDING or
 * TOKEN; `burst`: the bucket's size). `shadow`: counted, never denied.
 */
export class Limit {
  constructor({ limit, periodSeconds, algorithm = 'FIXED', burst = null, shadow = false }) {
    this.limit = integer(limit, 'limit', 1, MAX_LIMIT);
    this.periodSeconds = integer(periodSeconds, 'period', 1, MAX_PERIOD_S);
    this.algorithm = String(algorithm).toUpperCase();
    if (!ALGORITHMS.includes(this.algorithm)) throw new SpecError('ALGORITHM must be FIXED, SLIDING or TOKEN');
    this.burst = null;
    if (burst !== null && burst !== undefined) {
      if (this.algorithm !== 'TOKEN') throw new SpecError('BURST is only valid with ALGORITHM TOKEN');
      this.burst = integer(burst, 'burst', 1, MAX_LIMIT);
    }
    if (this.algorithm === 'TOKEN') {
      const bucket = BigInt(this.bucket);
      if (bucket * BigInt(this.periodSeconds) > BigInt(MAX_REFILL_S) * BigInt(this.limit)) {
        throw new SpecError(`burst is too large for this rate: a full bucket must refill within ${MAX_REFILL_S} seconds`);
      }
    }
    this.shadow = Boolean(shadow);
    Object.freeze(this);
  }

  /** The most one request may take. */
  get bucket() {
    return this.burst ?? this.limit;
  }

  /** CHECK's arguments after the key, for a request of `cost`. */
  args(cost = 1) {
    const args = [String(this.limit), String(this.periodSeconds)];
    if (cost !== 1) args.push('COST', String(cost));
    return [...args, ...this.options()];
  }

  /** A RESERVE or SETTLE group after LIMIT: `limit period <word> <value>` and the options. */
  group(word, value) {
    return [String(this.limit), String(this.periodSeconds), word, String(value), ...this.options()];
  }

  options() {
    const options = [];
    if (this.algorithm !== 'FIXED') options.push('ALGORITHM', this.algorithm);
    if (this.burst !== null) options.push('BURST', String(this.burst));
    return options;
  }

  /** As a policy string: `100 60 ALGORITHM TOKEN BURST 20`. */
  spec() {
    return [...this.args(), ...(this.shadow ? ['SHADOW'] : [])].join(' ');
  }

  /** A Limit, from a Limit, a spec string or `{limit, periodSeconds, …}`. */
  static from(value) {
    if (value instanceof Limit) return value;
    if (typeof value === 'string') {
      // A Limit is frozen, so one parsed spec serves every call naming it;
      // most applications name a handful. Cleared when full, to stay bounded.
      let parsed = PARSED.get(value);
      if (parsed === undefined) {
        parsed = Limit.parse(value);
        if (PARSED.size >= PARSED_MAX) PARSED.clear();
        PARSED.set(value, parsed);
      }
      return parsed;
    }
    return new Limit(value);
  }

  /** Parses `limit period [ALGORITHM …] [BURST …] [SHADOW]`, options in any order and case, each once. */
  static parse(spec) {
    const words = String(spec).trim().split(/\s+/).filter(Boolean);
    if (words.length < 2) {
      throw new SpecError('a limit is `limit period [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst] [SHADOW]`');
    }
    const options = {};
    for (let i = 2; i < words.length; ) {
      const word = words[i].toUpperCase();
      if (word in options) throw new SpecError(`${word} given twice`);
      if (word === 'SHADOW') {
        options.SHADOW = true;
        i += 1;
        continue;
      }
      if (word === 'COST') throw new SpecError('COST belongs to a request, not to a limit');
      if (word !== 'ALGORITHM' && word !== 'BURST') {
        throw new SpecError(`unknown option '${words[i]}' (expected ALGORITHM, BURST or SHADOW)`);
      }
      if (i + 1 >= words.length) throw new SpecError(`${word} needs a value`);
      options[word] = words[i + 1];
      i += 2;
    }
    return new Limit({
      limit: integer(words[0], 'limit', 1, MAX_LIMIT),
      periodSeconds: integer(words[1], 'period', 1, MAX_PERIOD_S),
      algorithm: options.ALGORITHM ?? 'FIXED',
      burst: options.BURST === undefined ? null : integer(options.BURST, 'burst', 1, MAX_LIMIT),
      shadow: options.SHADOW ?? false,
    });
  }
}
