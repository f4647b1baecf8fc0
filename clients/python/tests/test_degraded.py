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


def test_reservations_are_held_locally_while_redis_is_down():
    from redis_ratelimit_client import Hold, SettleStatus
    server = Server(module=True)
    try:
        limiter = RateLimiter(url=server.url(), on_unavailable="local", failure_threshold=1, cooldown_s=60)
        on_redis = limiter.reserve("{o}:holds", "before", 30000, [("{o}:tpm", "1000 60", Hold(100))])
        assert not on_redis.degraded
        server.stop()
        tpm = [("{o}:rpm", "3 60"), ("{o}:tpm", "1000 60", Hold(300))]
        r = limiter.reserve("{o}:holds", "r1", 30000, tpm)
        assert (r.allowed, r.degraded, r.degraded_by, r.held, r.hold_ttl_ms) == (True, True, "local", 300, 30000)
        assert [(e.remaining, e.degraded) for e in r.each] == [(2, True), (700, True)]
        # The module's caps: half the limit at most, 60 s at most.
        big = limiter.reserve("{o}:holds", "r2", 120000, [("{o}:tpm", "1000 60", Hold(3000))])
        assert (big.held, big.hold_ttl_ms, big.remaining) == (500, 60000, 200)
        assert not limiter.reserve("{o}:holds", "r3", 30000, [("{o}:tpm", "1000 60", Hold(201))]).allowed
        replayed = limiter.reserve("{o}:holds", "r1", 30000, tpm)
        assert (replayed.held, replayed.each[1].remaining) == (300, 700)
        assert limiter.extend("{o}:holds", "r1", 45000) == 45000
        # SETTLE refunds locally, once.
        s = limiter.settle("{o}:holds", "r1", [("{o}:tpm", "1000 60", 100)])
        assert (s.status, s.degraded_by, s.each[0].remaining) == (SettleStatus.SETTLED, "local", 400)
        assert limiter.settle("{o}:holds", "r1", [("{o}:tpm", "1000 60", 100)]).status is SettleStatus.ALREADY_SETTLED
        assert limiter.extend("{o}:holds", "r1", 45000) == 0
        # A hold Redis keeps: its actual is charged locally; it cannot be extended now.
        s = limiter.settle("{o}:holds", "before", [("{o}:tpm", "1000 60", 50)])
        assert (s.status, s.degraded, s.each[0].remaining) == (SettleStatus.UNKNOWN, True, 350)
        assert limiter.extend("{o}:holds", "before", 45000) == 45000
        # The helper works the same, and nothing is raised into the app.
        with limiter.reservation("{o}:holds", [("{o}:tpm", "1000 60", Hold(100))], 30000) as res:
            assert res.degraded
            res.actual = 10
        assert res.settled.degraded and res.settled.each[0].remaining == 340
        assert limiter.breaker.state == OPEN
    finally:
        server.remove()


@pytest.mark.parametrize("mode,allowed", [("open", True), ("closed", False)])
def test_reservations_fail_open_and_closed_marked_degraded(mode, allowed):
    from redis_ratelimit_client import Hold, SettleStatus
    server = Server(module=True)
    try:
        limiter = RateLimiter(url=server.url(), on_unavailable=mode, failure_threshold=1, cooldown_s=60)
        server.stop()
        r = limiter.reserve("{o}:holds", "r1", 30000, [("{o}:tpm", "1000 60", Hold(300))])
        assert (r.allowed, r.degraded, r.degraded_by, r.held, r.hold_ttl_ms) == (allowed, True, mode, 0, None)
        s = limiter.settle("{o}:holds", "r1", [("{o}:tpm", "1000 60", 100)])
        assert (s.status, s.degraded, s.degraded_by) == (SettleStatus.UNKNOWN, True, mode)
        assert limiter.extend("{o}:holds", "r1", 1000) == (1000 if allowed else 0)
    finally:
        server.remove()


def test_the_async_reservation_degrades_alike():
    from redis_ratelimit_client import Hold
    server = Server(module=True)

    async def scenario():
        limiter = AsyncRateLimiter(url=server.url(), on_unavailable="local", failure_threshold=1, cooldown_s=60)
        server.stop()
        async with limiter.reservation("{o}:holds", [("{o}:tpm", "1000 60", Hold(300))], 30000) as res:
            assert (res.degraded, res.held) == (True, 300)
            res.actual = 20
        assert res.settled.degraded and res.settled.each[0].remaining == 980
        await limiter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.remove()


def test_local_holds_refund_as_the_module_does():
    """The local limiter's SETTLE and expiry refunds, on a clock of its own."""
    from redis_ratelimit_client import Limit, LocalLimiter
    now = [60_000 * 1000 + 10_000]   # 10 s into a minute
    local = LocalLimiter(clock=lambda: now[0])
    fixed, sliding = Limit(100, 10), Limit(100, 60, "SLIDING")
    bucket = Limit(1, 3600, "TOKEN", 20)
    reply = local.reserve("h", "a", 60000, [("f", fixed, 40, True), ("s", sliding, 40, True), ("t", bucket, 8, True)])
    assert reply[0] == 1 and reply[7:] == [8, 60000]
    now[0] += 55_000   # the next minute, a later 10 s window
    assert local.check("f", fixed, 5)[1] == 95
    status, each = local.settle("h", "a", [("f", fixed, 10), ("s", sliding, 10), ("t", bucket, 0)])
    assert status == 1
    # FIXED: the window charged has ended: nothing comes back into this one.
    assert each[0][1] == 95
    # SLIDING: into the previous window's count.
    assert local._states["s"][1][:2] == (10, 0)
    # TOKEN: never above a full bucket (a full one is deleted).
    assert "t" not in local._states
    # An expired hold is refunded by the next call on its holds key.
    local.reserve("h", "b", 1000, [("f", fixed, 30, True)])
    assert local.check("f", fixed, 0, peek=True)[1] == 65
    now[0] += 1000
    assert local.extend("h", "b", 1000) is None
    assert local.check("f", fixed, 0, peek=True)[1] == 95


def test_local_mpeek_names_the_binding_limit_the_module_names(server):
    """MPEEK shows the counts as they are, but picks the binding limit on the
    answers with each cost, as MCHECK would: here 5 of 10 left (0.5, then
    0.4 after one more) against 45 of 100 (0.45, then 0.44)."""
    from redis_ratelimit_client import Limit, LocalLimiter
    small, large = Limit(10, 3600), Limit(100, 3600)
    local = LocalLimiter()
    module = RateLimiter(url=server.url(), timeout_s=2)
    module.client.delete("{b}small", "{b}large")
    for limiter_mcheck in (lambda ls: local.mcheck([(k, lim, c) for k, lim, c in ls]),
                           lambda ls: module.mcheck(ls)):
        limiter_mcheck([("{b}small", small, 5), ("{b}large", large, 55)])
    local_reply = local.mcheck([("{b}small", small, 1), ("{b}large", large, 1)], peek=True)
    module_peek = module.mpeek([("{b}small", small, 1), ("{b}large", large, 1)])
    assert (module_peek.allowed, module_peek.binding, module_peek.remaining) == (True, 0, 5)
    assert (local_reply[0], local_reply[5] - 1, local_reply[1]) == (1, module_peek.binding, module_peek.remaining)
