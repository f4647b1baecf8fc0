"""Redis unreachable: fail-open, fail-closed, or local decisions behind a
circuit breaker; never an exception into the application."""

import asyncio
import time

import pytest

from redis_ratelimit_client import AsyncRateLimiter, RateLimiter
from redis_ratelimit_client.breaker import CLOSED, OPEN, CircuitBreaker
from servers import Server


def test_killed_mid_traffic_local_decisions_are_bounded_and_the_breaker_closes_again():
    server = Server(module=True)
    try:
        limiter = RateLimiter(url=server.url(), on_unavailable="local", timeout_s=0.2,
                              failure_threshold=3, cooldown_s=0.2)
        admitted = [limiter.check("k", 5, 60) for _ in range(3)]
        assert [d.allowed for d in admitted] == [True] * 3 and not any(d.degraded for d in admitted)
        server.stop()
        during = [limiter.check("k", 5, 60) for _ in range(50)]
        assert all(d.degraded and d.degraded_by == "local" for d in during)
        # The local limiter enforces the limit by itself: 5, no more.
        assert sum(d.allowed for d in during) == 5
        assert limiter.breaker.state == OPEN
        other = [limiter.check(f"user:{i}", 1, 60) for i in range(3)]
        assert all(d.allowed and d.degraded for d in other)
        server.start()
        give_up = time.monotonic() + 10
        while True:
            d = limiter.check("k", 5, 60)
            if not d.degraded:
                break
            assert time.monotonic() < give_up, "never closed again"
        assert limiter.breaker.state == CLOSED
        # Redis' own count again (the server restarted empty, without persistence).
        assert (d.allowed, d.remaining) == (True, 4)
    finally:
        server.remove()


@pytest.mark.parametrize("mode,allowed", [("open", True), ("closed", False)])
def test_fail_open_and_fail_closed_are_marked_degraded(mode, allowed):
    server = Server(module=True)
    try:
        limiter = RateLimiter(url=server.url(), on_unavailable=mode, failure_threshold=1, cooldown_s=60)
        events = []
        limiter.metrics = lambda event, policy: events.append(event)
        server.stop()
        d = limiter.check("k", 5, 60)
        assert (d.allowed, d.degraded, d.degraded_by) == (allowed, True, mode)
        assert "RateLimit" not in d.headers() and "RateLimit-Policy" in d.headers()
        m = limiter.mcheck([("{a}1", "1 1"), ("{a}2", "1 1")])
        assert (m.allowed, m.degraded) == (allowed, True)
        assert limiter.acquire("jobs", 1, 1000).acquired is allowed
        assert limiter.throttle("t", 1, 1, 1).limited is not allowed
        assert "degraded" in events and "error" not in events
    finally:
        server.remove()


def test_the_async_limiter_degrades_alike():
    server = Server(module=True)

    async def scenario():
        limiter = AsyncRateLimiter(url=server.url(), on_unavailable="local", failure_threshold=2, cooldown_s=60)
        assert not (await limiter.check("k", 2, 60)).degraded
        server.stop()
        during = [await limiter.check("k", 2, 60) for _ in range(10)]
        assert all(d.degraded for d in during) and sum(d.allowed for d in during) == 2
        assert limiter.breaker.state == OPEN
        async with limiter.lease("jobs", 1, 1000) as lease:
            assert lease.acquired.degraded
        await limiter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.remove()


def test_the_breaker_opens_probes_and_closes():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=1.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 1.0
    assert breaker.allow()       # the probe
    assert not breaker.allow()   # the others wait for it
    breaker.failure()
    assert not breaker.allow()
    now[0] = 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


def test_local_memory_is_bounded():
    from redis_ratelimit_client import Limit, LocalLimiter
    local = LocalLimiter(max_keys=100)
    for i in range(1000):
        local.check(f"k{i}", Limit(1, 60))
    assert len(local) == 100
