"""A rate limiter for an application, on the redis-ratelimit module.

Copy this file into your project. It needs redis-py (`pip install redis`)
and a Redis server with the module loaded.

    limiter = RateLimiter(host="localhost", limit=100, period_s=60)

    def handle(request):
        decision = limiter.is_allowed(f"user:{request.user_id}")
        if not decision.allowed:
            return Response(status=429, headers=decision.headers())
        response = ...
        response.headers.update(decision.headers())
        return response

What happens when Redis cannot answer is a choice, made explicit here:

- on_error="open" (fail-open): the request is allowed. An outage of Redis
  does not become an outage of your service, but nothing is limited then.
- on_error="closed" (fail-closed): the request is denied. Nothing gets
  through unlimited, but an outage of Redis denies everyone.

Either way the decision says `degraded=True`, so that you can log it, count
it, or answer 503 instead of 429. Only "Redis is unreachable or too slow"
is handled that way (connection errors and timeouts). An error *reply*
(`redis.exceptions.ResponseError`: a bad argument, WRONGTYPE) is a bug in
the caller or the configuration, and is raised.

"Too slow" needs a timeout on every call, or a hung server would hang the
request: the client this class builds gets `socket_timeout` and
`socket_connect_timeout` set to `timeout_s`, and no retries. A client you
pass in must have `socket_timeout` set (the constructor checks), and should
not retry: redis-py 6 and later retry 3 times by default, with a backoff,
and redis-py 8's default timeout is 5 s, far too long for a limiter.

One thing a timeout cannot tell: whether the server ran the command. A
check that timed out may or may not have been counted.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# The failures the policy covers: the server is down, unreachable or slow.
# redis-py raises TimeoutError for a socket timeout; it is not a subclass
# of ConnectionError, so both are listed.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True)
class Decision:
    """One answer of the limiter."""

    allowed: bool
    # Units still admissible now (after this request, when it was admitted).
    remaining: int
    limit: int
    # Seconds until the same request would be admitted; None when it was
    # admitted, or when it can never be (a cost above the limit).
    retry_after_s: Optional[float]
    # Seconds until the limiter is empty again.
    reset_after_s: float
    # True when the decision comes from the failure policy, not from Redis.
    degraded: bool = False

    @classmethod
    def from_reply(cls, reply) -> "Decision":
        """The decision in a RATELIMIT.CHECK or RATELIMIT.PEEK reply:
        [allowed, remaining, limit, retry_after_ms, reset_after_ms]."""
        allowed, remaining, limit, retry_after_ms, reset_after_ms = reply
        return cls(
            allowed=allowed == 1,
            remaining=remaining,
            limit=limit,
            retry_after_s=retry_after_ms / 1000 if retry_after_ms >= 0 else None,
            reset_after_s=reset_after_ms / 1000,
        )

    def headers(self) -> Dict[str, str]:
        """The HTTP rate-limit headers for this decision.

        Times are rounded up to whole seconds: a client that waits
        Retry-After seconds is never too early. A degraded decision knows
        only the configured limit, so that is all it reports.
        """
        headers = {"RateLimit-Limit": str(self.limit)}
        if self.degraded:
            return headers
        headers["RateLimit-Remaining"] = str(self.remaining)
        headers["RateLimit-Reset"] = str(math.ceil(self.reset_after_s))
        if not self.allowed and self.retry_after_s is not None:
            headers["Retry-After"] = str(math.ceil(self.retry_after_s))
        return headers


class RateLimiter:
    """`limit` units per `period_s` seconds for each key, in Redis."""

    def __init__(
        self,
        client: Optional[redis.Redis] = None,
        *,
        limit: int,
        period_s: int,
        algorithm: str = "FIXED",
        burst: Optional[int] = None,
        on_error: str = "open",
        timeout_s: float = 0.2,
        prefix: str = "",
        **connection_kwargs,
    ):
        """Either pass `client` (with `socket_timeout` set), or connection
        parameters for the client to build (`host`, `port`, `db`,
        `password`, ... as `redis.Redis` takes them).

        `algorithm` is FIXED, SLIDING or TOKEN (`burst`: the token bucket's
        size, default `limit`). The arguments are not checked here: the
        server checks them, and a bad one raises ResponseError on first use.

        The defaults are the module's: a fixed window, on the key as given.
        So `is_allowed("user:42")` and `RATELIMIT.CHECK user:42 100 60` from
        redis-cli count against the same limiter. `prefix` is put before
        every key (e.g. "ratelimit:") to keep limiters apart from other
        keys. Every user of one key must agree on its algorithm: a key made
        by one algorithm is WRONGTYPE to another.
        """
        if on_error not in ("open", "closed"):
            raise ValueError('on_error must be "open" or "closed"')
        if client is None:
            client = redis.Redis(
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # No retries: a retry would double the time a request waits
                # on a dead server (recent redis-py versions retry by
                # default).
                retry=Retry(NoBackoff(), 0),
                **connection_kwargs,
            )
        else:
            pool = getattr(client, "connection_pool", None)
            kwargs = getattr(pool, "connection_kwargs", {})
            if kwargs.get("socket_timeout") is None:
                raise ValueError(
                    "the client has no socket_timeout: a slow Redis would hang "
                    "every request instead of applying the failure policy"
                )
        self.client = client
        self.limit = limit
        self.period_s = period_s
        self.on_error = on_error
        self.prefix = prefix
        # The options after `limit period`, the same for every call.
        self._options = ["ALGORITHM", algorithm]
        if burst is not None:
            self._options += ["BURST", burst]

    def is_allowed(self, key: str, cost: int = 1) -> Decision:
        """Counts a request of `cost` units against `key`, if it is admitted."""
        try:
            reply = self._call("RATELIMIT.CHECK", key, cost)
        except UNAVAILABLE:
            return self._degraded()
        return Decision.from_reply(reply)

    def remaining(self, key: str) -> int:
        """The units `key` may still use now, counting nothing
        (RATELIMIT.PEEK). When Redis is unavailable: `limit` if failing open,
        0 if failing closed."""
        try:
            reply = self._call("RATELIMIT.PEEK", key, 1)
        except UNAVAILABLE:
            return self.limit if self.on_error == "open" else 0
        return reply[1]

    def _call(self, command: str, key: str, cost: int):
        return self.client.execute_command(
            command,
            self.prefix + key,
            self.limit,
            self.period_s,
            "COST",
            cost,
            *self._options,
        )

    def _degraded(self) -> Decision:
        """The failure policy's decision."""
        allowed = self.on_error == "open"
        return Decision(
            allowed=allowed,
            remaining=self.limit if allowed else 0,
            limit=self.limit,
            retry_after_s=None,
            reset_after_s=0.0,
            degraded=True,
        )
