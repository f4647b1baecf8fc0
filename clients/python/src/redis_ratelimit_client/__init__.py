"""A client for redis-ratelimit: rate limits and concurrency leases in
Redis, through the redis-ratelimit module where it is loaded and its
Functions library where it is not, for sync and asyncio code, a single
server or Redis Cluster.

    from redis_ratelimit_client import RateLimiter

    limiter = RateLimiter(url="redis://localhost:6379")
    decision = limiter.check("user:42", 100, 60)
    if not decision.allowed:
        ...  # 429, with decision.headers()
"""

from ._spec import Hold, Limit, SpecError
from ._version import __version__
from .breaker import CircuitBreaker
from .client import Lease, RateLimiter, Reservation, connect
from .local import LocalLimiter
from .policies import PolicyAdmin, PolicyError, PolicySet
from .results import (Acquired, Decision, Denied, MultiDecision, Reserved, Settled, SettleStatus,
                      Throttle)

__all__ = [
    "Acquired", "CircuitBreaker", "Decision", "Denied", "Hold", "Lease", "Limit", "LocalLimiter",
    "MultiDecision", "PolicyAdmin", "PolicyError", "PolicySet", "RateLimiter", "Reservation",
    "Reserved", "SettleStatus", "Settled", "SpecError", "Throttle", "__version__", "connect",
]


def __getattr__(name):
    # asyncio and the integrations load only when asked for.
    if name == "AsyncRateLimiter":
        from .aio import AsyncRateLimiter
        return AsyncRateLimiter
    if name == "AsyncReservation":
        from .aio import AsyncReservation
        return AsyncReservation
    raise AttributeError(name)
