"""Holds: RESERVE, SETTLE and EXTEND with typed results on every backend
(the module, the Functions library, the script on Redis 6.2 when there is
one), sync and asyncio; the `reservation` helper settling with the actual,
with 0 on an exception, never twice, extended while it runs."""

import asyncio
import time

import pytest
import redis

from redis_ratelimit_client import (AsyncRateLimiter, Decision, Denied, Hold, Limit, RateLimiter, Reserved,
                                    SettleStatus, SpecError)
from servers import Server

HOLDS = "{o}:holds"
RPM = ("{o}:rpm", "60 60")
TPM = "{o}:tpm"


def limiter_for(server: Server, **kwargs) -> RateLimiter:
    return RateLimiter(url=server.url(), timeout_s=2, **kwargs)


def count(admin, key) -> int:
    value = admin.get(key)
    return 0 if value is None else int(value)


def server_ms(admin) -> int:
    s, us = admin.time()
    return s * 1000 + us // 1000


def test_reserve_settle_and_extend_round_trip_with_exact_counts(backend):
    name, server = backend
    limiter = limiter_for(server)
    admin = server.client()

    r = limiter.reserve(HOLDS, "req-1", 30000, [RPM, (TPM, "1000 60", Hold(300))])
    assert limiter.backend == name
    assert isinstance(r, Reserved)
    assert (r.allowed, r.remaining, r.limit, r.retry_after_ms, r.binding) == (True, 700, 1000, None, 1)
    assert [(e.allowed, e.remaining, e.limit, e.period_s) for e in r.each] == [(True, 59, 60, 60),
                                                                               (True, 700, 1000, 60)]
    assert (r.held, r.hold_ttl_ms, r.id) == (300, 30000, "req-1")
    assert (count(admin, "{o}:rpm"), count(admin, TPM)) == (1, 300)

    # Replayed: the first reply, the time left, nothing charged.
    again = limiter.reserve(HOLDS, "req-1", 30000, [RPM, (TPM, "1000 60", Hold(300))])
    assert (again.allowed, again.remaining, again.held, again.each) == (True, 700, 300, r.each)
    assert 0 < again.hold_ttl_ms <= 30000
    assert (count(admin, "{o}:rpm"), count(admin, TPM)) == (1, 300)

    assert limiter.extend(HOLDS, "req-1", 45000) == 45000
    assert limiter.extend(HOLDS, "req-1", 120000) == 60000  # hold-max-ttl-ms
    assert limiter.extend(HOLDS, "nobody", 45000) == 0

    s = limiter.settle(HOLDS, "req-1", [(TPM, "1000 60", 120)])
    assert s.status is SettleStatus.SETTLED and s.settled
    assert [(e.allowed, e.remaining, e.limit, e.retry_after_ms) for e in s.each] == [(True, 880, 1000, None)]
    assert count(admin, TPM) == 120

    # A retried SETTLE charges nothing and says so; so does a RESERVE of a settled id.
    assert limiter.settle(HOLDS, "req-1", [(TPM, "1000 60", 120)]).status is SettleStatus.ALREADY_SETTLED
    settled = limiter.reserve(HOLDS, "req-1", 30000, [RPM, (TPM, "1000 60", Hold(300))])
    assert (settled.allowed, settled.held, settled.hold_ttl_ms) == (True, 0, None)
    assert limiter.extend(HOLDS, "req-1", 1000) == 0
    assert (count(admin, "{o}:rpm"), count(admin, TPM)) == (1, 120)

    # An unknown id: the actual charged in full.
    assert limiter.settle(HOLDS, "never", [(TPM, "1000 60", 5)]).status is SettleStatus.UNKNOWN
    assert count(admin, TPM) == 125

    # An estimate above half the limit holds half; the rest is a debt at SETTLE.
    big = limiter.reserve(HOLDS, "req-2", 30000, [(TPM, Limit(1000, 60), Hold(3000))])
    assert (big.allowed, big.held, big.remaining) == (True, 500, 375)
    debt = limiter.settle(HOLDS, "req-2", [(TPM, Limit(1000, 60), 900)])
    assert count(admin, TPM) == 1025
    assert (debt.each[0].allowed, debt.each[0].remaining) == (False, 0)
    assert 0 < debt.each[0].retry_after_ms <= 60000

    # Denied: nothing charged, nothing recorded.
    denied = limiter.reserve(HOLDS, "req-3", 30000, [RPM, (TPM, "1000 60", Hold(1))])
    assert (denied.allowed, denied.held, denied.hold_ttl_ms, denied.binding) == (False, 0, None, 1)
    assert admin.hget(HOLDS, "req-3") is None
    assert (count(admin, "{o}:rpm"), count(admin, TPM)) == (1, 1025)

    # A token bucket (its options pass through) refunded into the bucket.
    tb = limiter.reserve(HOLDS, "req-4", 30000, [("{o}:tb", "10 60 ALGORITHM TOKEN BURST 20", Hold(8))])
    assert (tb.held, tb.remaining) == (8, 12)
    back = limiter.settle(HOLDS, "req-4", [("{o}:tb", "10 60 ALGORITHM TOKEN BURST 20", 2)])
    assert back.each[0].remaining == 18


def test_async_reserve_settle_extend_and_reservation(backend):
    name, server = backend
    admin = server.client()

    async def scenario():
        async with AsyncRateLimiter(url=server.url(), timeout_s=2) as limiter:
            r = await limiter.reserve(HOLDS, "a-1", 30000, [RPM, (TPM, "1000 60", Hold(400))])
            assert await limiter.backend() == name
            assert (r.allowed, r.remaining, r.held, r.hold_ttl_ms) == (True, 600, 400, 30000)
            assert await limiter.extend(HOLDS, "a-1", 10000) == 10000
            s = await limiter.settle(HOLDS, "a-1", [(TPM, "1000 60", 1000)])
            assert (s.status, s.each[0].remaining) == (SettleStatus.SETTLED, 0)
            assert count(admin, TPM) == 1000
            assert (await limiter.settle(HOLDS, "a-1", [(TPM, "1000 60", 1)])).status is SettleStatus.ALREADY_SETTLED

            async with limiter.reservation(HOLDS, [RPM, ("{o}:tpd", "10000 86400", Hold(700))], 30000) as res:
                assert res.held == 700 and count(admin, "{o}:tpd") == 700
                res.actual = 250
            assert res.settled.status is SettleStatus.SETTLED and count(admin, "{o}:tpd") == 250
            with pytest.raises(ZeroDivisionError):
                async with limiter.reservation(HOLDS, [("{o}:tpd", "10000 86400", Hold(700))], 30000) as res:
                    assert count(admin, "{o}:tpd") == 950
                    1 / 0
            assert res.settled.status is SettleStatus.SETTLED and count(admin, "{o}:tpd") == 250

            # A cancelled stream: what it reported before the cancellation is charged.
            started = asyncio.Event()

            async def stream():
                async with limiter.reservation(HOLDS, [("{o}:tpd", "10000 86400", Hold(700))], 30000) as r:
                    r.actual = 30
                    started.set()
                    await asyncio.sleep(60)

            task = asyncio.ensure_future(stream())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert count(admin, "{o}:tpd") == 280
            with pytest.raises(Denied) as no:
                async with limiter.reservation(HOLDS, [(TPM, "1000 60", Hold(1))], 30000):
                    pass
            assert isinstance(no.value.result, Reserved) and "Retry-After" in no.value.headers()
            assert count(admin, "{o}:rpm") == 2

    asyncio.run(scenario())


def test_the_reservation_settles_the_actual_or_zero_on_an_exception(server):
    limiter = limiter_for(server)
    admin = server.client()
    limits = [("{org:7}:rpm", "600 60"), ("{org:7}:tpm", "200000 60", Hold(3000))]

    with limiter.reservation("{org:7}:holds", limits, 60000) as r:
        assert (r.held, r.reserved.hold_ttl_ms, r.degraded) == (3000, 60000, False)
        assert len(r.id) == 36  # a uuid4
        assert count(admin, "{org:7}:tpm") == 3000
        r.actual = 1234
    assert (r.settled.status, r.settled.each[0].remaining) == (SettleStatus.SETTLED, 200000 - 1234)
    assert (count(admin, "{org:7}:rpm"), count(admin, "{org:7}:tpm")) == (1, 1234)

    # The body raises: 0 is settled, the exception goes on.
    with pytest.raises(KeyError):
        with limiter.reservation("{org:7}:holds", limits, 60000) as r:
            assert count(admin, "{org:7}:tpm") == 4234
            raise KeyError("model down")
    assert r.settled.status is SettleStatus.SETTLED
    assert (count(admin, "{org:7}:rpm"), count(admin, "{org:7}:tpm")) == (2, 1234)

    # What the body reported before raising (a stream cut short) stands.
    with pytest.raises(ConnectionResetError):
        with limiter.reservation("{org:7}:holds", limits, 60000) as r:
            r.actual = 500
            raise ConnectionResetError
    assert count(admin, "{org:7}:tpm") == 1734

    # Nothing reported: the estimate stands.
    with limiter.reservation("{org:7}:holds", limits, 60000):
        pass
    assert count(admin, "{org:7}:tpm") == 4734

    # Settled early in the body: never twice.
    before = admin.info("ratelimit")["ratelimit_settle_calls"]
    with limiter.reservation("{org:7}:holds", limits, 60000) as r:
        first = r.settle(100)
        assert r.settle(999) is first
    assert r.settled is first and count(admin, "{org:7}:tpm") == 4834
    assert admin.info("ratelimit")["ratelimit_settle_calls"] == before + 1

    # An actual per HOLD limit, by key.
    two = [("{org:7}:tpm", "200000 60", Hold(100)), ("{org:7}:tpd", "1000000 86400", Hold(100))]
    with limiter.reservation("{org:7}:holds", two, 60000) as r:
        r.actual = {"{org:7}:tpm": 10, "{org:7}:tpd": 20}
    assert (count(admin, "{org:7}:tpm"), count(admin, "{org:7}:tpd")) == (4844, 20)
    with pytest.raises(ValueError, match="not a HOLD limit"):
        with limiter.reservation("{org:7}:holds", two, 60000) as r:
            r.actual = {"{org:7}:rpm": 1}
    # Nothing settled: the estimates stay held until the hold expires.
    assert (count(admin, "{org:7}:tpm"), count(admin, "{org:7}:tpd")) == (4944, 120)

    # Denied: raised before the body, as a lease's denial is; nothing recorded.
    full = [("{org:7}:tiny", "1 60"), ("{org:7}:tpm", "200000 60", Hold(3000))]
    with limiter.reservation("{org:7}:holds", full, 60000):
        pass
    assert count(admin, "{org:7}:tpm") == 7944
    ran = False
    with pytest.raises(Denied) as denied:
        with limiter.reservation("{org:7}:holds", full, 60000, id="req-denied"):
            ran = True
    assert not ran and denied.value.result.binding == 0 and denied.value.result.retry_after_ms > 0
    assert admin.hget("{org:7}:holds", "req-denied") is None
    assert count(admin, "{org:7}:tpm") == 7944


def test_a_replayed_reservation_charges_nothing_twice(server):
    limiter = limiter_for(server)
    admin = server.client()
    limits = [("{u}:rpm", "10 60"), ("{u}:tpm", "1000 60", Hold(100))]
    with limiter.reservation("{u}:holds", limits, 60000, id="req-9") as r:
        r.actual = 40
    assert (count(admin, "{u}:rpm"), count(admin, "{u}:tpm")) == (1, 40)
    # The same request retried (a gateway's retry after a lost reply).
    with limiter.reservation("{u}:holds", limits, 60000, id="req-9") as again:
        assert (again.reserved.allowed, again.held, again.reserved.hold_ttl_ms) == (True, 0, None)
        again.actual = 40
    assert again.settled.status is SettleStatus.ALREADY_SETTLED
    assert (count(admin, "{u}:rpm"), count(admin, "{u}:tpm")) == (1, 40)


def test_a_reservation_is_extended_while_the_work_runs(server):
    limiter = limiter_for(server)
    admin = server.client()
    limits = [("{l}:tpm", "1000 60", Hold(10))]
    with limiter.reservation("{l}:holds", limits, 600, extend_every_s=0.1) as r:
        first_deadline = int(admin.hget("{l}:holds", r.id).split()[1])
        give_up = time.monotonic() + 10
        while server_ms(admin) <= first_deadline + 50:
            assert time.monotonic() < give_up
            time.sleep(0.05)
        record = admin.hget("{l}:holds", r.id).split()
        assert record[0] == b"L" and int(record[1]) > server_ms(admin)
        assert not r.lost
        r.actual = 3
    assert r.settled.status is SettleStatus.SETTLED and count(admin, "{l}:tpm") == 3

    with limiter.reservation("{l}:holds", limits, 60000, extend_every_s=0.05) as r:
        admin.delete("{l}:holds")
        give_up = time.monotonic() + 10
        while not r.lost:
            assert time.monotonic() < give_up
            time.sleep(0.02)
        r.actual = 7
    # Gone (as if expired): the actual is charged in full, on top of the estimate.
    assert r.settled.status is SettleStatus.UNKNOWN and count(admin, "{l}:tpm") == 20


def test_holds_are_checked_before_they_are_sent(server):
    limiter = limiter_for(server)
    with pytest.raises(SpecError, match="estimate must be"):
        Hold(-1)
    with pytest.raises(SpecError, match="id must be"):
        limiter.reserve("h", "now", 1000, [("k", "1 60")])
    with pytest.raises(SpecError, match="ttl_ms must be"):
        limiter.reserve("h", "x", 0, [("k", "1 60")])
    with pytest.raises(SpecError, match="shadow"):
        limiter.reserve("h", "x", 1000, [("k", "1 60 SHADOW", Hold(1))])
    with pytest.raises(ValueError, match="holds key"):
        limiter.reserve("h", "x", 1000, [("h", "1 60")])
    with pytest.raises(SpecError, match="actual must be"):
        limiter.settle("h", "x", [("k", "1 60", -2)])
    server.client().set("h", "a string")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        limiter.reserve("h", "x", 1000, [("k", "1 60")])
    assert limiter.check("k", 1, 60) == Decision(True, 0, 1, None, 60000, 60)
