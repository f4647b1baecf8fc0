"""Every client call on every backend: the module, the Functions library
(a server without the module), and the script on Redis 6.2 when there is
one; sync and asyncio."""

import asyncio
import hashlib
import threading
import time
import tomllib
from pathlib import Path

import pytest
import redis

import redis_ratelimit_client as rl
from redis_ratelimit_client import (Acquired, AsyncRateLimiter, Decision, Denied, Limit, MultiDecision,
                                    RateLimiter, SpecError, Throttle)
from redis_ratelimit_client._core import library_text, library_version
from servers import REPO, Server


def limiter_for(server: Server, **kwargs) -> RateLimiter:
    return RateLimiter(url=server.url(), timeout_s=2, **kwargs)


def test_the_version_is_the_modules():
    with open(REPO / "Cargo.toml", "rb") as f:
        assert rl.__version__ == tomllib.load(f)["package"]["version"]


def test_the_library_shipped_is_fallback_ratelimit_lua_byte_for_byte():
    assert library_text().encode() == (REPO / "fallback" / "ratelimit.lua").read_bytes()
    major, minor, patch = map(int, rl.__version__.split("."))
    assert library_version(library_text()) == major * 10000 + minor * 100 + patch


def test_every_call_has_typed_results(backend):
    name, server = backend
    limiter = limiter_for(server)
    d = limiter.check("user:1", 3, 60)
    assert limiter.backend == name
    assert d == Decision(True, 2, 3, None, 60000, 60)
    assert limiter.check("user:1", 3, 60, cost=3).allowed is False
    p = limiter.peek("user:1", "3 60")
    assert (p.allowed, p.remaining, p.limit) == (True, 2, 3)
    assert limiter.check("user:1", Limit(3, 60), cost=2).remaining == 0
    denied = limiter.check("user:1", 3, 60)
    assert not denied and 0 < denied.retry_after_ms <= 60000 and denied.retry_after_s == 60

    t = limiter.check("tok", 10, 60, algorithm="TOKEN", burst=20, cost=15)
    assert (t.allowed, t.remaining, t.limit, t.reset_after_ms) == (True, 5, 10, 90000)
    s = limiter.check("sl", "2 60 ALGORITHM SLIDING")
    assert (s.allowed, s.remaining) == (True, 1)

    m = limiter.mcheck([("{u}:rpm", "60 60"), ("{u}:tpm", "100000 60", 1200)])
    assert isinstance(m, MultiDecision)
    assert (m.allowed, m.remaining, m.limit, m.binding) == (True, 59, 60, 0)
    assert [(e.remaining, e.limit) for e in m.each] == [(59, 60), (98800, 100000)]
    mp = limiter.mpeek([("{u}:rpm", "60 60"), ("{u}:tpm", "100000 60", 150000)])
    assert (mp.allowed, mp.binding, mp.retry_after_ms) == (False, 1, None)
    assert mp.each[1].remaining == 98800

    th = limiter.throttle("user123", 15, 30, 60)
    assert th == Throttle(False, 16, 15, None, 2)

    a = limiter.acquire("jobs", 2, 30000, id="job-7")
    assert a == Acquired(True, 1, 2, None, 30000, "job-7")
    b = limiter.acquire("jobs", 2, 30000)
    assert b.acquired and len(b.id) == 32
    c = limiter.acquire("jobs", 2, 30000)
    assert (c.acquired, c.id, c.remaining) == (False, None, 0) and 0 < c.retry_after_ms <= 30000
    assert limiter.renew("jobs", "job-7", 60000) is True
    assert limiter.renew("jobs", "nope", 60000) is False
    assert limiter.release("jobs", "job-7", b.id, "nope") == 2
    assert limiter.reset("user:1", "tok", "missing") == 2


def test_async_calls_match_the_sync_ones(backend):
    name, server = backend

    async def scenario():
        async with AsyncRateLimiter(url=server.url(), timeout_s=2) as limiter:
            d = await limiter.check("user:1", 3, 60)
            assert await limiter.backend() == name
            assert d == Decision(True, 2, 3, None, 60000, 60)
            assert (await limiter.peek("user:1", 3, 60)).remaining == 2
            m = await limiter.mcheck([("{a}:1", "1 60"), ("{a}:2", "5 60")])
            assert (m.allowed, m.binding) == (True, 0)
            m = await limiter.mcheck([("{a}:1", "1 60"), ("{a}:2", "5 60")])
            assert (m.allowed, m.binding, m.each[1].remaining) == (False, 0, 4)
            assert (await limiter.mpeek([("{a}:2", "5 60", 5)])).allowed is False
            assert (await limiter.throttle("t", 0, 1, 60)).limited is False
            assert (await limiter.throttle("t", 0, 1, 60)).limited is True
            async with limiter.lease("jobs", 1, 5000) as lease:
                assert server.client().zcard("jobs") == 1
                with pytest.raises(Denied):
                    async with limiter.lease("jobs", 1, 5000):
                        pass
                assert await limiter.renew("jobs", lease.id, 5000)
            assert server.client().exists("jobs") == 0
            assert await limiter.reset("user:1") == 1

    asyncio.run(scenario())


def test_a_limit_is_exact_under_concurrent_callers(backend):
    _, server = backend
    limiter = limiter_for(server)
    admitted = []

    def worker():
        for _ in range(25):
            admitted.append(limiter.check("hot", 50, 60).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 50
    assert server.client().get("hot") == b"50"


def test_error_replies_are_raised_whatever_the_policy(backend):
    _, server = backend
    for mode in ("open", "closed", "local"):
        limiter = limiter_for(server, on_unavailable=mode)
        server.client().set("str", "not a limiter")
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            limiter.check("str", 3, 60)
        with pytest.raises(redis.exceptions.ResponseError, match="max must be"):
            limiter.acquire("k", 0, 1000)


def test_a_limit_is_checked_before_it_is_sent():
    with pytest.raises(SpecError, match="limit must be"):
        Limit(0, 60)
    with pytest.raises(SpecError, match="BURST is only valid"):
        Limit.parse("10 60 BURST 5")
    with pytest.raises(SpecError, match="ALGORITHM must be"):
        Limit.parse("10 60 ALGORITHM LEAKY")
    with pytest.raises(SpecError, match="refill within"):
        Limit.parse("1 1000000000 ALGORITHM TOKEN BURST 2")
    assert Limit.parse("100 60 algorithm token burst 20 shadow").spec() == "100 60 ALGORITHM TOKEN BURST 20 SHADOW"


def test_a_lease_is_released_on_exit_and_on_an_exception(server):
    limiter = limiter_for(server)
    admin = server.client()
    with pytest.raises(ZeroDivisionError):
        with limiter.lease("jobs", 1, 60000) as lease:
            assert admin.zrange("jobs", 0, -1) == [lease.id.encode()]
            1 / 0
    assert admin.exists("jobs") == 0
    with limiter.lease("jobs", 1, 60000):
        with pytest.raises(Denied) as denied:
            with limiter.lease("jobs", 1, 60000):
                pass
        assert denied.value.result.retry_after_ms > 0
        assert "Retry-After" in denied.value.headers()


def test_a_lease_is_renewed_while_the_work_runs(server):
    limiter = limiter_for(server)
    admin = server.client()

    def server_ms():
        s, us = admin.time()
        return s * 1000 + us // 1000

    with limiter.lease("long", 1, 600, renew_every_s=0.1) as lease:
        first_deadline = admin.zscore("long", lease.id)
        # Wait (on the server's clock) until the first deadline has passed.
        give_up = time.monotonic() + 10
        while server_ms() <= first_deadline + 50:
            assert time.monotonic() < give_up
            time.sleep(0.05)
        # Renewed meanwhile: still held, by us alone.
        assert admin.zscore("long", lease.id) > server_ms()
        assert not lease.lost
        assert not limiter.acquire("long", 1, 600).acquired
    assert admin.exists("long") == 0


def test_a_lost_lease_is_reported(server):
    limiter = limiter_for(server)
    admin = server.client()
    with limiter.lease("gone", 1, 60000, renew_every_s=0.05) as lease:
        admin.delete("gone")
        give_up = time.monotonic() + 10
        while not lease.lost:
            assert time.monotonic() < give_up
            time.sleep(0.02)


RECIPES = {
    "module": ["+ratelimit.check", "+ratelimit.peek", "+ratelimit.mcheck", "+ratelimit.mpeek",
               "+ratelimit.reset", "+ratelimit.throttle", "+ratelimit.acquire", "+ratelimit.release",
               "+ratelimit.renew"],
    "functions": ["+fcall", "+fcall_ro", "+time", "+get", "+set", "+incrby", "+del", "+exists", "+pttl",
                  "+pexpireat", "+pexpiretime", "+zadd", "+zcard", "+zcount", "+zrange", "+zrem",
                  "+zremrangebyscore", "+zscore"],
    "script": ["+evalsha", "+script|load", "+time", "+get", "+set", "+incrby", "+del", "+exists", "+pttl",
               "+pexpireat", "+zadd", "+zcard", "+zcount", "+zrange", "+zrem", "+zremrangebyscore", "+zscore"],
}


def test_detection_tries_the_commands_when_command_info_is_refused(backend):
    name, server = backend
    admin = server.client()
    if name == "functions":
        admin.function_load(library_text(), replace=True)
    admin.execute_command("ACL", "SETUSER", "app", "reset", "on", ">secret", "~*", "-@all", *RECIPES[name])
    limiter = RateLimiter(redis.Redis(port=server.port, username="app", password="secret", socket_timeout=2))
    with pytest.raises(redis.exceptions.NoPermissionError):
        limiter.client.execute_command("COMMAND", "INFO", "ratelimit.check")
    assert limiter.check("k", 3, 60).remaining == 2
    assert limiter.backend == name
    named = RateLimiter(redis.Redis(port=server.port, username="app", password="secret", socket_timeout=2),
                        backend=name)
    assert named.check("k", 3, 60).remaining == 1


def test_the_library_is_loaded_again_when_it_is_gone():
    server = Server(module=False)
    try:
        limiter = limiter_for(server)
        assert limiter.check("k", 3, 60).remaining == 2
        server.client().function_flush()
        assert limiter.check("k", 3, 60).remaining == 1
        older = library_text().replace(f"local VERSION = '{rl.__version__}'", "local VERSION = '0.0.1'")
        server.client().function_load(older, replace=True)
        assert RateLimiter(url=server.url()).check("k", 3, 60).remaining == 0
        assert server.client().fcall_ro("ratelimit_version", 0) == library_version(library_text())
    finally:
        server.remove()


def test_a_client_without_a_timeout_is_refused(server):
    with pytest.raises(ValueError, match="socket_timeout"):
        RateLimiter(redis.Redis(port=server.port))
