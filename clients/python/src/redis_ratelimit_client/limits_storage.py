"""A `limits` storage on the module: Flask-Limiter and SlowAPI switch to it
by their storage URI alone.

    redis-ratelimit://host:6379/0             a server
    redis-ratelimit+cluster://host:6379       a cluster

Importing this module registers the schemes. An installed package does it
for the app: its .pth file makes the first import of `limits.storage`
import this module too (see _redis_ratelimit_limits_hook.py), so the app
names the URI and nothing else. From a source tree on PYTHONPATH, where no
.pth runs, `import redis_ratelimit_client.limits_storage` once.

What is exact, and why: `limits`' fixed-window strategy asks a storage to
`incr(key, expiry, amount)` and compares the count with the limit itself,
so a storage alone never sees the limit. `limits` puts it in the key,
`…/<amount>/<multiples>/<granularity>`: this storage reads it back and makes
each hit one RATELIMIT.CHECK of that limit, so a denied hit is not counted
(a count of `limit + cost` is returned for it, which the strategy denies)
and concurrent hits admit exactly the limit. The sliding-window-counter
strategy hands the storage the limit: each hit is RATELIMIT.CHECK … ALGORITHM
SLIDING, the module's own decision. The moving-window strategy keeps a log
of every hit, which the module has no command for: it is refused when the
limiter is built (NotImplementedError), rather than approximated.
"""

from __future__ import annotations

import time
from typing import Tuple

import redis
from limits.storage import Storage
from limits.storage.base import SlidingWindowCounterSupport

from ._core import UNAVAILABLE
from ._spec import MAX_LIMIT, Limit
from .client import RateLimiter, connect


def _limit_in_key(key: str) -> int:
    """The limit `limits` wrote into the key, else the largest (plain counting)."""
    parts = key.rsplit("/", 3)
    if len(parts) == 4 and parts[1].isdigit():
        return max(1, min(int(parts[1]), MAX_LIMIT))
    return MAX_LIMIT


class RatelimitStorage(Storage, SlidingWindowCounterSupport):
    STORAGE_SCHEME = ["redis-ratelimit", "redis-ratelimit+cluster", "rediss-ratelimit"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        scheme, rest = uri.split("://", 1)
        cluster = scheme.endswith("+cluster")
        url = ("rediss" if scheme.startswith("rediss") else "redis") + "://" + rest
        timeout_s = float(options.pop("timeout_s", 0.2))
        limiter_options = {k: options.pop(k) for k in list(options) if k in (
            "backend", "on_unavailable", "failure_threshold", "cooldown_s", "prefix")}
        self.limiter = RateLimiter(connect(url, timeout_s, cluster), timeout_s=timeout_s, **limiter_options)

    @property
    def base_exceptions(self):
        return redis.exceptions.RedisError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        decision = self.limiter.check(key, Limit(_limit_in_key(key), max(1, int(expiry))), cost=amount)
        used = decision.limit - decision.remaining
        return used if decision.allowed else decision.limit + amount

    def get(self, key: str) -> int:
        value = self.limiter.client.get(self.limiter.prefix + key)
        return int(value) if value is not None and value.isdigit() else 0

    def get_expiry(self, key: str) -> float:
        pttl = self.limiter.client.pttl(self.limiter.prefix + key)
        return time.time() + max(0, pttl) / 1000

    def check(self) -> bool:
        try:
            return bool(self.limiter.client.ping())
        except UNAVAILABLE:
            return False

    def reset(self):
        return None

    def clear(self, key: str) -> None:
        self.limiter.client.delete(self.limiter.prefix + key)

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.limiter.check(key, Limit(limit, max(1, int(expiry)), "SLIDING"), cost=amount).allowed

    def get_sliding_window(self, key: str, expiry: int) -> Tuple[int, float, int, float]:
        """From the SLIDING state `S<previous>:<current>` and its expiry (the
        end of the window after the counts' window)."""
        name = self.limiter.prefix + key
        value, pttl = self.limiter.client.get(name), self.limiter.client.pttl(name)
        if value is None or pttl < 0 or not value.startswith(b"S"):
            return 0, 0.0, 0, 0.0
        previous, current = (int(x) for x in value[1:].split(b":"))
        period_ms = int(expiry) * 1000
        if pttl > period_ms:  # the counts are this window's
            left = (pttl - period_ms) / 1000
            return previous, left, current, left
        return current, pttl / 1000, 0, pttl / 1000  # the window before's

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.clear(key)
