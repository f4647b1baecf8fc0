// Express integration: a middleware of this package's own, a Store for
// express-rate-limit, and rate-limiter-flexible's consume() shape.

import { Limit } from './spec.js';
import { MAX_LIMIT } from './spec.js';

/** Key functions: a request to the subject it is limited by. */
export const byIp = () => (req) => req.ip ?? req.socket?.remoteAddress ?? 'unknown';
export const byHeader = (name) => (req) => req.get?.(name) ?? req.headers?.[name.toLowerCase()] ?? null;
/** `getUser(req)` returns the user's id (null: not limited by this key). */
export const byUser = (getUser) => (req) => getUser(req);

/**
 * An Express middleware: each request is checked against `policy` (a
 * policy name in Redis) or `limit` (a Limit or a spec string), for the
 * subject `key(req)` returns (default: the client's IP). A denied request
 * gets `statusCode` (429) with `Retry-After`, the RateLimit headers in
 * `headerStyle`, and `message` (a JSON body by default). A request whose
 * key is null passes unlimited. A degraded decision is applied as it
 * came: allowed, or denied with 503 when `degradedStatusCode` is set.
 */
export function rateLimit({
  limiter, policy = null, plan = null, limit = null, key = byIp(), cost = 1, headerStyle = limiter.headerStyle,
  statusCode = 429, degradedStatusCode = null, prefix = 'http:', message = null,
}) {
  if ([policy, plan, limit].filter((v) => v !== null).length !== 1) throw new TypeError('give one of policy, plan or limit');
  const fixed = limit === null ? null : Limit.from(limit);
  return async function rateLimitMiddleware(req, res, next) {
    try {
      const subject = await key(req);
      if (subject === null || subject === undefined) return next();
      const weight = typeof cost === 'function' ? await cost(req) : cost;
      let decision;
      if (policy !== null) decision = await limiter.checkPolicy(policy, String(subject), weight);
      else if (plan !== null) decision = await limiter.checkPlan(plan, String(subject), weight);
      else decision = await limiter.check(`${prefix}${subject}`, fixed, { cost: weight });
      req.rateLimit = decision;
      res.set(decision.headers(headerStyle));
      if (decision.allowed) return next();
      const status = decision.degraded && degradedStatusCode !== null ? degradedStatusCode : statusCode;
      res.status(status);
      if (typeof message === 'function') return res.send(await message(req, decision));
      return res.json(message ?? { error: 'rate limited', retryAfterSeconds: decision.retryAfterSeconds ?? null, policy: decision.policy ?? null });
    } catch (error) {
      return next(error);
    }
  };
}

/**
 * A Store for express-rate-limit (v7, v8): `rateLimit({ windowMs, limit,
 * store: new RatelimitStore({ limiter }) })`. With a numeric `limit`, each
 * hit is one RATELIMIT.CHECK of that limit: a denied hit is not counted,
 * exactly as the module counts, and `totalHits` is `limit + 1` for it, so
 * express-rate-limit denies it. With `limit` a function (per request), the
 * store cannot know it: it counts every hit (CHECK with the largest limit),
 * as other stores do. `windowMs` must be whole seconds.
 */
export class RatelimitStore {
  constructor({ limiter, prefix = 'erl:', algorithm = 'FIXED' } = {}) {
    this.limiter = limiter;
    this.prefix = prefix;
    this.algorithm = algorithm;
    this.localKeys = false;
  }

  init(options) {
    if (options.windowMs % 1000 !== 0) throw new RangeError('RatelimitStore: windowMs must be whole seconds');
    this.windowMs = options.windowMs;
    const exact = typeof options.limit === 'number';
    this.limit = new Limit({ limit: exact ? options.limit : MAX_LIMIT, periodSeconds: options.windowMs / 1000, algorithm: this.algorithm });
  }

  async get(key) {
    const d = await this.limiter.peek(this.prefix + key, this.limit, { cost: 1 });
    return { totalHits: d.limit - d.remaining, resetTime: new Date(Date.now() + d.resetAfterMs) };
  }

  async increment(key) {
    const d = await this.limiter.check(this.prefix + key, this.limit);
    const used = d.limit - d.remaining;
    return { totalHits: d.allowed ? used : d.limit + 1, resetTime: new Date(Date.now() + (d.allowed ? d.resetAfterMs : d.retryAfterMs ?? d.resetAfterMs)) };
  }

  async decrement(key) {
    // express-rate-limit's skipSuccessfulRequests / skipFailedRequests: a
    // look charges nothing, so give back one unit the only exact way the
    // module allows: not at all. Counting stays conservative.
    void key;
  }

  async resetKey(key) {
    await this.limiter.reset(this.prefix + key);
  }
}

/** rate-limiter-flexible's RateLimiterRes. */
export class RateLimiterRes {
  constructor({ msBeforeNext, remainingPoints, consumedPoints, isFirstInDuration, degraded = false }) {
    Object.assign(this, { msBeforeNext, remainingPoints, consumedPoints, isFirstInDuration, degraded });
  }

  toJSON() {
    return { msBeforeNext: this.msBeforeNext, remainingPoints: this.remainingPoints, consumedPoints: this.consumedPoints, isFirstInDuration: this.isFirstInDuration };
  }
}

/**
 * rate-limiter-flexible's interface on the module: `points` per `duration`
 * seconds; `consume(key, points)` resolves with a RateLimiterRes when
 * admitted and rejects with one when not (an Error when Redis answered
 * with an error), as rate-limiter-flexible's limiters do. Unlike them, a
 * rejected consume counts nothing.
 */
export class FlexibleRateLimiter {
  constructor({ limiter, points, duration, keyPrefix = 'rlflx:', algorithm = 'FIXED' }) {
    this.limiter = limiter;
    this.keyPrefix = keyPrefix;
    this.limit = new Limit({ limit: points, periodSeconds: duration, algorithm });
  }

  async consume(key, points = 1) {
    const d = await this.limiter.check(`${this.keyPrefix}${key}`, this.limit, { cost: points });
    const consumed = d.limit - d.remaining;
    const res = new RateLimiterRes({
      msBeforeNext: d.allowed ? d.resetAfterMs : d.retryAfterMs ?? d.resetAfterMs,
      remainingPoints: d.remaining,
      consumedPoints: d.allowed ? consumed : consumed + points,
      isFirstInDuration: d.allowed && consumed === points,
      degraded: d.degraded,
    });
    if (!d.allowed) throw res;
    return res;
  }

  async get(key) {
    const d = await this.limiter.peek(`${this.keyPrefix}${key}`, this.limit);
    const consumed = d.limit - d.remaining;
    if (consumed === 0) return null;
    return new RateLimiterRes({ msBeforeNext: d.resetAfterMs, remainingPoints: d.remaining, consumedPoints: consumed, isFirstInDuration: false });
  }

  async delete(key) {
    return (await this.limiter.reset(`${this.keyPrefix}${key}`)) > 0;
  }
}
