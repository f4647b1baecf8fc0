// A circuit breaker in front of Redis: closed (calls go to Redis);
// `failureThreshold` failures in a row open it (decisions come from the
// unavailability policy at once); after `cooldownMs` one call probes
// (half-open): its success closes the breaker, its failure opens it again.

export const CLOSED = 'closed';
export const OPEN = 'open';
export const HALF_OPEN = 'half-open';

export class CircuitBreaker {
  constructor({ failureThreshold = 3, cooldownMs = 2000, clock = Date.now } = {}) {
    if (failureThreshold < 1) throw new RangeError('failureThreshold must be at least 1');
    if (!(cooldownMs > 0)) throw new RangeError('cooldownMs must be positive');
    this.failureThreshold = failureThreshold;
    this.cooldownMs = cooldownMs;
    this.clock = clock;
    this.state = CLOSED;
    this.failures = 0;
    this.since = 0;
    this.listeners = [];
  }

  move(state) {
    const old = this.state;
    this.state = state;
    this.since = this.clock();
    if (old !== state) for (const listener of this.listeners) listener(old, state);
  }

  /** Whether this call may go to Redis. */
  allow() {
    if (this.state === CLOSED) return true;
    if (this.clock() - this.since < this.cooldownMs) return false;
    this.move(HALF_OPEN);
    return true;
  }

  success() {
    this.failures = 0;
    if (this.state !== CLOSED) this.move(CLOSED);
  }

  failure() {
    this.failures += 1;
    if (this.state === HALF_OPEN || (this.state === CLOSED && this.failures >= this.failureThreshold)) this.move(OPEN);
  }
}
