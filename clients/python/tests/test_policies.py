"""Limits kept in Redis: policies, plans, overrides and shadow mode, the
CLI, and a change reaching running application instances."""

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from redis_ratelimit_client import Limit, PolicyError, RateLimiter
from redis_ratelimit_client.policies import PolicySet

SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli(server, *args):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "redis_ratelimit_client", "--url", server.url(), *args],
                          capture_output=True, text=True, env=env, timeout=30)


def test_the_cli_writes_checked_policies_and_refuses_malformed_ones(server):
    assert cli(server, "policy", "set", "api", "100", "60", "algorithm", "token", "burst", "20").returncode == 0
    assert server.client().hget("ratelimit:policies", "policy:api") == b"100 60 ALGORITHM TOKEN BURST 20"
    version = server.client().hget("ratelimit:policies", "version")
    for bad in (["0 60"], ["100 60 BURST 5"], ["100"], ["100 60 ALGORITHM LEAKY"], ["100 60 COST 2"]):
        out = cli(server, "policy", "set", "api", *bad)
        assert out.returncode == 2, out
        assert out.stderr.startswith("refused: ")
    refused_name = cli(server, "policy", "set", "a b", "10 60")
    assert refused_name.returncode == 2
    # Nothing was written by the refused commands.
    assert server.client().hget("ratelimit:policies", "policy:api") == b"100 60 ALGORITHM TOKEN BURST 20"
    assert server.client().hget("ratelimit:policies", "version") == version
    assert cli(server, "policy", "get", "api").stdout.strip() == "100 60 ALGORITHM TOKEN BURST 20"
    assert cli(server, "policy", "get", "nope").returncode == 1
    assert cli(server, "policy", "set-plan", "pro", "api", "daily").returncode == 0
    listed = cli(server, "policy", "list").stdout
    assert "plan:pro\tapi daily" in listed and "policy:api\t" in listed
    assert cli(server, "policy", "del", "api").returncode == 0
    assert cli(server, "policy", "del", "api").returncode == 1


def test_policies_plans_and_override_precedence(server):
    admin = RateLimiter(url=server.url()).policy_admin()
    admin.set_policy("rpm", "3 60")
    admin.set_policy("tpd", "1000 86400")
    admin.set_plan("pro", ["rpm", "tpd"])
    admin.set_override("rpm", "customer-42", "5 60")
    limiter = RateLimiter(url=server.url())
    d = limiter.check_policy("rpm", "customer-1")
    assert (d.limit, d.remaining, d.policy, d.period_s) == (3, 2, "rpm", 60)
    assert server.client().get("{customer-1}:rpm") == b"1"
    # The override wins for its subject only.
    assert limiter.check_policy("rpm", "customer-42").limit == 5
    assert limiter.check_policy("rpm", "customer-7").limit == 3
    # A plan: every policy at once, with the subject's overrides.
    m = limiter.check_plan("pro", "customer-42", cost={"tpd": 400})
    assert m.allowed and [(e.policy, e.limit, e.remaining) for e in m.each] == [("rpm", 5, 3), ("tpd", 1000, 600)]
    assert m.headers()["RateLimit-Policy"] == '"rpm";q=5;w=60, "tpd";q=1000;w=86400'
    m = limiter.check_plan("pro", "customer-42", cost={"tpd": 700})
    assert not m.allowed and m.each[m.binding].policy == "tpd"
    # Removing the override: the policy's own limit again.
    admin.delete("override", "rpm", "customer-42")
    limiter.refresh_policies()
    assert limiter.peek_policy("rpm", "customer-42").limit == 3


def test_an_unknown_or_invalid_policy_is_a_clear_error(server):
    server.client().hset("ratelimit:policies", mapping={"policy:ok": "1 60", "policy:bad": "ten 60",
                                                      "plan:p": "ok missing"})
    limiter = RateLimiter(url=server.url())
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        limiter.check_policy("nope", "s")
    with pytest.raises(PolicyError, match="policy 'bad' is invalid in Redis: limit must be"):
        limiter.check_policy("bad", "s")
    with pytest.raises(PolicyError, match="unknown policy 'missing'"):
        limiter.check_plan("p", "s")
    with pytest.raises(PolicyError, match="unknown plan"):
        limiter.check_plan("nope", "s")


def test_a_shadow_policy_counts_never_denies_and_reports(server):
    seen, events = [], []
    server.client().hset("ratelimit:policies", mapping={"policy:new": "2 60 SHADOW", "policy:old": "10 60",
                                                      "plan:both": "old new"})
    limiter = RateLimiter(url=server.url(), on_shadow_denied=lambda d, key: seen.append((d.policy, key)),
                          metrics=lambda event, policy: events.append((event, policy)))
    results = [limiter.check_policy("new", "u") for _ in range(4)]
    assert all(r.allowed for r in results)
    assert [r.shadow_denied for r in results] == [False, False, True, True]
    assert seen == [("new", "{u}:new")] * 2
    assert server.client().get("{u}:new") == b"2"  # counted as usual: two admitted
    assert events.count(("shadow_denied", "new")) == 2 and ("denied", "new") not in events
    # In a plan, a denial by the shadow policy alone still charges the rest.
    m = limiter.check_plan("both", "u")
    assert m.allowed and m.shadow_denied
    assert server.client().get("{u}:old") == b"1"


def test_a_change_from_redis_cli_reaches_three_running_instances_within_a_second(server):
    server.cli("HSET", "ratelimit:policies", "policy:api", "5 60", "version", "1")
    app = (
        "import sys\n"
        "from redis_ratelimit_client import RateLimiter\n"
        f"limiter = RateLimiter(url='{server.url()}', poll_interval_s=0.25)\n"
        "limiter.policy_listeners.append(lambda p: print('limit', p.limit('api').limit, flush=True))\n"
        "print('limit', limiter.check_policy('api', 'u').limit, flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    apps = [subprocess.Popen([sys.executable, "-c", app], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env) for _ in range(3)]
    # Each app's lines through a thread: select() on the pipe misses lines
    # that a readline() already took into the stream's buffer.
    lines = [queue.Queue() for _ in apps]
    for a, q in zip(apps, lines):
        threading.Thread(target=lambda a=a, q=q: [q.put(line) for line in a.stdout], daemon=True).start()
    try:
        for q in lines:
            assert q.get(timeout=15).split() == ["limit", "5"]
        # The first read prints once more (the listener sees the first set):
        # only lines after the change count.
        server.cli("HSET", "ratelimit:policies", "policy:api", "7 60", "version", "2")
        changed_at = time.monotonic()
        for q in lines:
            while True:
                left = changed_at + 1.0 - time.monotonic()
                try:
                    line = q.get(timeout=max(0.0, left))
                except queue.Empty:
                    raise AssertionError("an instance did not see the change within 1 s") from None
                if line.split() == ["limit", "7"]:
                    break
    finally:
        for a in apps:
            a.kill()
            a.wait()
            a.stdin.close()
            a.stdout.close()


def test_an_edit_that_leaves_the_version_is_picked_up_by_the_full_refresh(server):
    server.cli("HSET", "ratelimit:policies", "policy:api", "5 60", "version", "1")
    limiter = RateLimiter(url=server.url(), poll_interval_s=0.05, refresh_interval_s=0.3)
    assert limiter.check_policy("api", "u").limit == 5
    server.cli("HSET", "ratelimit:policies", "policy:api", "9 60")
    give_up = time.monotonic() + 5
    while limiter.policies.limit("api").limit != 9:
        assert time.monotonic() < give_up
        time.sleep(0.02)
    limiter.close()


def test_the_hash_parses_as_documented():
    p = PolicySet.from_hash({b"version": b"3", b"policy:a": b"1 2", b"override:a:x:y": b"3 4",
                             b"plan:p": b"a"})
    assert p.version == "3" and p.limit("a") == Limit(1, 2) and p.limit("a", "x:y") == Limit(3, 4)
    assert p.plan("p") == ("a",)
