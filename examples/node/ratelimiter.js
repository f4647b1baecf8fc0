// A rate limiter for an application, on the redis-ratelimit module.
//
// Copy this file into your project. It needs node-redis (`npm install
// redis`, v5; Node.js 18.19 or later) and a Redis server with the module loaded.
//
//     import { RateLimiter } from './ratelimiter.js';
//
//     const limiter = new RateLimiter({ url: 'redis://localhost:6379', limit: 100, periodSeconds: 60 });
//     await limiter.connect();
//
//     app.use(async (req, res, next) => {
//       const decision = await limiter.check(`user:${req.userId}`);
//       res.set(decision.headers());
//       if (!decision.allowed) return res.status(429).end();
//       next();
//     });
//
// What happens when Redis cannot answer is a choice, made explicit here:
//
// - onError: 'open' (fail-open): the request is allowed. An outage of Redis
//   does not become an outage of your service, but nothing is limited then.
// - onError: 'closed' (fail-closed): the request is denied. Nothing gets
//   through unlimited, but an outage of Redis denies everyone.
//
// Either way the decision says `degraded: true`, so that you can log it,
// count it, or answer 503 instead of 429. Only "Redis is unreachable or too
// slow" is handled that way (no connection, a connection lost, a timeout).
// An error *reply* (node-redis' ErrorReply: a bad argument, WRONGTYPE) is a
// bug in the caller or the configuration, and is thrown.
//
// "Too slow" needs a deadline on every call, or a hung server would hang the
// request: each call waits at most `timeoutMs`. node-redis' own command
// `timeout` only covers the time a command waits to be sent, not the wait
// for the reply, so the deadline is kept here. The client this class builds
// also rejects commands at once while disconnected (`disableOfflineQueue`)
// instead of queueing them until the server is back: a check answered by the
// policy must not be counted later.
//
// One thing a timeout cannot tell: whether the server ran the command. A
// check that timed out may or may not have been counted.

import {
  createClient,
  ClientOfflineError,
  ConnectionTimeoutError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError,
} from 'redis';

/** The check took longer than the limiter's `timeoutMs`. */
export class RateLimiterTimeoutError extends Error {
  constructor(timeoutMs) {
    super(`no reply within ${timeoutMs} ms`);
    this.name = 'RateLimiterTimeoutError';
  }
}

// The failures the policy covers: the server is down, unreachable or slow.
const UNAVAILABLE = [
  RateLimiterTimeoutError,
  ClientOfflineError,
  ConnectionTimeoutError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError,
];
// What the socket reports when the server goes away mid-command.
const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

function isUnavailable(error) {
  return UNAVAILABLE.some((kind) => error instanceof kind) || NETWORK_ERRORS.has(error?.code);
}

/** `promise`, or a RateLimiterTimeoutError once `timeoutMs` have passed. */
function withDeadline(promise, timeoutMs) {
  // The promise may settle after the deadline (a late reply, a lost
  // connection); nobody waits for it then, and it must not be reported as
  // unhandled.
  promise.catch(() => {});
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new RateLimiterTimeoutError(timeoutMs)), timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Whole seconds, rounded up: a client that waits that long is never early. */
function ceilSeconds(ms) {
  return Math.ceil(ms / 1000);
}

/** One answer of the limiter. */
export class Decision {
  constructor({ allowed, remaining, limit, retryAfterMs, resetAfterMs, degraded = false }) {
    this.allowed = allowed;
    // Units still admissible now (after this request, when it was admitted).
    this.remaining = remaining;
    this.limit = limit;
    // Milliseconds until the same request would be admitted; null when it
    // was admitted, or when it can never be (a cost above the limit).
    this.retryAfterMs = retryAfterMs;
    // Milliseconds until the limiter is empty again.
    this.resetAfterMs = resetAfterMs;
    // True when the decision comes from the failure policy, not from Redis.
    this.degraded = degraded;
    Object.freeze(this);
  }

  /**
   * The decision in a RATELIMIT.CHECK or RATELIMIT.PEEK reply:
   * [allowed, remaining, limit, retry_after_ms, reset_after_ms].
   */
  static fromReply(reply) {
    const [allowed, remaining, limit, retryAfterMs, resetAfterMs] = reply;
    return new Decision({
      allowed: allowed === 1,
      remaining,
      limit,
      retryAfterMs: retryAfterMs >= 0 ? retryAfterMs : null,
      resetAfterMs,
    });
  }

  /**
   * The HTTP rate-limit headers for this decision. Times are rounded up to
   * whole seconds. A degraded decision knows only the configured limit, so
   * that is all it reports.
   */
  headers() {
    const headers = { 'RateLimit-Limit': String(this.limit) };
    if (this.degraded) {
      return headers;
    }
    headers['RateLimit-Remaining'] = String(this.remaining);
    headers['RateLimit-Reset'] = String(ceilSeconds(this.resetAfterMs));
    if (!this.allowed && this.retryAfterMs !== null) {
      headers['Retry-After'] = String(ceilSeconds(this.retryAfterMs));
    }
    return headers;
  }
}

/** `limit` units per `periodSeconds` for each key, in Redis. */
export class RateLimiter {
  /**
   * Either pass `client` (a node-redis client you connect, close, and give
   * an 'error' listener), or `url` (and `socket` options) for the client to
   * build.
   *
   * `algorithm` is FIXED, SLIDING or TOKEN (`burst`: the token bucket's
   * size, default `limit`). The arguments are not checked here: the server
   * checks them, and a bad one throws an ErrorReply on first use.
   *
   * The defaults are the module's, as in the Python example: a fixed
   * window, on the key as given. So `check('user:42')` and
   * `RATELIMIT.CHECK user:42 100 60` from redis-cli count against the same
   * limiter. `prefix` is put before every key (e.g. 'ratelimit:') to keep
   * limiters apart from other keys; every user of one key must agree on its
   * algorithm, since a key made by one algorithm is WRONGTYPE to another.
   */
  constructor({
    client,
    url,
    socket = {},
    limit,
    periodSeconds,
    algorithm = 'FIXED',
    burst,
    onError = 'open',
    timeoutMs = 200,
    prefix = '',
  }) {
    if (onError !== 'open' && onError !== 'closed') {
      throw new RangeError('onError must be "open" or "closed"');
    }
    this.ownsClient = client === undefined;
    this.client =
      client ??
      createClient({
        url,
        socket: { connectTimeout: timeoutMs, ...socket },
        disableOfflineQueue: true,
      });
    if (this.ownsClient) {
      // Without a listener, a connection error would end the process. The
      // failures reach callers through the policy; the client keeps
      // reconnecting on its own.
      this.client.on('error', () => {});
    }
    this.limit = limit;
    this.periodSeconds = periodSeconds;
    this.onError = onError;
    this.timeoutMs = timeoutMs;
    this.prefix = prefix;
    // The options after `limit period`, the same for every call.
    this.options = ['ALGORITHM', algorithm];
    if (burst !== undefined) {
      this.options.push('BURST', String(burst));
    }
  }

  /**
   * Connects the client this limiter built. Resolves once connected, or
   * after `timeoutMs` with the client still trying in the background: until
   * it connects, checks get the failure policy's answer. A service therefore
   * starts while Redis is down.
   */
  async connect() {
    if (!this.ownsClient || this.client.isOpen) {
      return;
    }
    await withDeadline(this.client.connect(), this.timeoutMs).catch(() => {});
  }

  /** Closes the client this limiter built. */
  close() {
    if (this.ownsClient && this.client.isOpen) {
      this.client.destroy();
    }
  }

  /** Counts a request of `cost` units against `key`, if it is admitted. */
  async check(key, cost = 1) {
    let reply;
    try {
      reply = await this.call('RATELIMIT.CHECK', key, cost);
    } catch (error) {
      if (isUnavailable(error)) {
        return this.degraded();
      }
      throw error;
    }
    return Decision.fromReply(reply);
  }

  /**
   * The units `key` may still use now, counting nothing (RATELIMIT.PEEK).
   * When Redis is unavailable: `limit` if failing open, 0 if failing closed.
   */
  async remaining(key) {
    try {
      const reply = await this.call('RATELIMIT.PEEK', key, 1);
      return reply[1];
    } catch (error) {
      if (isUnavailable(error)) {
        return this.onError === 'open' ? this.limit : 0;
      }
      throw error;
    }
  }

  call(command, key, cost) {
    const args = [
      command,
      this.prefix + key,
      String(this.limit),
      String(this.periodSeconds),
      'COST',
      String(cost),
      ...this.options,
    ];
    // `timeout` drops a command still waiting to be sent (a passed-in client
    // may queue while offline); the deadline covers the wait for the reply.
    return withDeadline(this.client.sendCommand(args, { timeout: this.timeoutMs }), this.timeoutMs);
  }

  /** The failure policy's decision. */
  degraded() {
    const allowed = this.onError === 'open';
    return new Decision({
      allowed,
      remaining: allowed ? this.limit : 0,
      limit: this.limit,
      retryAfterMs: null,
      resetAfterMs: 0,
      degraded: true,
    });
  }
}
