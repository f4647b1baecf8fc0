"""Redis Cluster (3 masters on loopback): every call routed to its key's
master, the library loaded on every master, plans in one slot per subject."""

import asyncio

import redis
from redis.cluster import RedisCluster

from redis_ratelimit_client import AsyncRateLimiter, Hold, RateLimiter, SettleStatus
from redis_ratelimit_client._core import library_version, library_text


def exercise(limiter: RateLimiter, backend: str):
    for i in range(30):  # keys on every master
        assert limiter.check(f"user:{i}", 2, 60).remaining == 1
    assert limiter.backend == backend
    assert limiter.mcheck([("{u}:a", "1 60"), ("{u}:b", "2 60")]).allowed
    assert not limiter.mcheck([("{u}:a", "1 60"), ("{u}:b", "2 60")]).allowed
    assert limiter.peek("user:0", 2, 60).remaining == 1
    a = limiter.acquire("jobs", 1, 5000)
    assert a.acquired and limiter.renew("jobs", a.id, 5000) and limiter.release("jobs", a.id) == 1
    assert limiter.throttle("t", 0, 1, 60).allowed
    assert limiter.reset("user:0") == 1
    admin = limiter.policy_admin()
    admin.set_policy("rpm", "2 60")
    admin.set_policy("tpd", "10 86400")
    admin.set_plan("pro", "rpm tpd")
    for subject in ("a", "b", "c", "d"):
        assert limiter.check_plan("pro", subject, cost={"tpd": 3}).each[1].remaining == 7
    for org in ("a", "b", "c", "d"):  # holds keys on every master
        holds, limits = f"{{org:{org}}}:holds", [(f"{{org:{org}}}:rpm", "60 60"),
                                                  (f"{{org:{org}}}:tpm", "1000 60", Hold(300))]
        r = limiter.reserve(holds, "req-1", 30000, limits)
        assert (r.allowed, r.held, r.hold_ttl_ms, r.each[1].remaining) == (True, 300, 30000, 700)
        assert limiter.extend(holds, "req-1", 20000) == 20000
        s = limiter.settle(holds, "req-1", [(f"{{org:{org}}}:tpm", "1000 60", 120)])
        assert (s.status, s.each[0].remaining) == (SettleStatus.SETTLED, 880)
        with limiter.reservation(holds, limits, 30000) as res:
            res.actual = 80
        assert res.settled.each[0].remaining == 800


def test_module_backend_on_a_cluster(cluster):
    limiter = RateLimiter(url=cluster.url(), timeout_s=2)
    exercise(limiter, "module")
    limiter.close()


def test_functions_backend_on_a_cluster_loads_the_library_on_every_master(bare_cluster):
    limiter = RateLimiter(RedisCluster(host="127.0.0.1", port=bare_cluster.ports()[0], socket_timeout=2))
    exercise(limiter, "functions")
    for port in bare_cluster.ports():
        node = redis.Redis(port=port)
        assert node.fcall_ro("ratelimit_version", 0) == library_version(library_text())
        node.close()
    limiter.close()


def test_async_on_a_cluster(cluster):
    async def scenario():
        limiter = AsyncRateLimiter(url=cluster.url(), timeout_s=2)
        for i in range(20):
            assert (await limiter.check(f"async:{i}", 2, 60)).remaining == 1
        assert (await limiter.mcheck([("{v}:a", "1 60"), ("{v}:b", "2 60")])).allowed
        async with limiter.lease("ajobs", 1, 5000):
            pass
        for org in ("a", "b", "c", "d"):
            async with limiter.reservation(f"{{aorg:{org}}}:holds", [(f"{{aorg:{org}}}:tpm", "1000 60", Hold(300))],
                                           30000) as res:
                assert res.held == 300
                res.actual = 40
            assert (res.settled.status, res.settled.each[0].remaining) == (SettleStatus.SETTLED, 960)
        await limiter.aclose()

    asyncio.run(scenario())
