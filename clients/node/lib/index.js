// redis-ratelimit-client: rate limits and concurrency leases in Redis,
// through the redis-ratelimit module or its Functions library.

export { RateLimiter, Reservation, LIBRARY, libraryVersion, isUnavailable, LimiterTimeoutError, BACKENDS, MODES } from './limiter.js';
export { Limit, SpecError } from './spec.js';
export { Decision, MultiDecision, Reserved, Settled, SettleStatus, Throttle, Acquired, Denied, HEADER_STYLES } from './results.js';
export { CircuitBreaker } from './breaker.js';
export { LocalLimiter } from './local.js';
export { PolicySet, PolicyError, policyKey, DEFAULT_KEY } from './policies.js';
export { VERSION } from './version.js';
// Metric events passed to `metrics(event, policy)`.
export const EVENTS = ['allowed', 'denied', 'degraded', 'error', 'shadow_denied'];
