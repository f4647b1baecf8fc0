"""A rate limiter for an application, on the redis-ratelimit module or,
where the server has no module, on the module's fallback library.

Copy this file into your project. It needs redis-py (`pip install redis`),
and either a Redis server with the module loaded or the module's fallback
library, `fallback/ratelimit.lua` (copy it too, and pass its path as
`library=` unless it stays two directories up, where it is in the
repository).

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

The limiter finds out at its first call what the server offers, and logs
its choice once (logger "ratelimiter", INFO); `limiter.backend` says it:

- "module": the module is loaded; the RATELIMIT.* commands.
- "functions": no module, but Redis Functions (Redis 7.0+, Valkey): the
  library, called with FCALL. It is loaded (FUNCTION LOAD REPLACE) when
  the server has none, or one of another version, and loaded again should
  it disappear (FUNCTION FLUSH, a restart without persistence).
- "script": no functions either (Redis 6.2): the same file less its first
  line, through EVALSHA, loaded again on NOSCRIPT.

The three answer alike, with the same replies, errors and keys: nothing
else in this file, nor in the application, depends on the choice.

The choice asks `COMMAND INFO`. A user whose ACL refuses it (the recipes
of docs/operations.md give a client only what its backend needs) is
served all the same: the limiter then tries the commands themselves
(`RATELIMIT.PEEK` on a key that is never written, `FCALL_RO
ratelimit_version`); a server that lacks a command says so before it
consults ACLs, so any other answer, NOPERM included, means it has it. Or
name the backend (`backend="module"`, `"functions"` or `"script"`), and
nothing is asked: with "functions", a user that may not `FUNCTION LOAD`
needs the library loaded beforehand, in this version.

`concurrency` limits work in flight rather than a rate: at most `max`
holders of a key at once, each lease given back when its `with` block
ends, and ending by itself after `lease_ms` if the process dies holding it:

    try:
        with limiter.concurrency(f"reports:{user_id}", max=2, lease_ms=30_000):
            build_report()
    except Busy as busy:
        return Response(status=429, headers=busy.headers())
"""

import logging
import math
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# The failures the policy covers: the server is down, unreachable or slow.
# redis-py raises TimeoutError for a socket timeout; it is not a subclass
# of ConnectionError, so both are listed.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# What can run the limits, in the order the limiter prefers them.
BACKENDS = ("module", "functions", "script")

# The fallback library, where it is in the repository.
LIBRARY = Path(__file__).resolve().parent / ".." / ".." / "fallback" / "ratelimit.lua"

log = logging.getLogger("ratelimiter")


def library_version(text: str) -> Optional[int]:
    """The version the library's source declares, as `FCALL ratelimit_version`
    answers it: 0.2.0 is 200."""
    found = re.search(r"^local VERSION = '(\d+)\.(\d+)\.(\d+)'", text, re.MULTILINE)
    if found is None:
        return None
    major, minor, patch = map(int, found.groups())
    return major * 10000 + minor * 100 + patch


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


@dataclass(frozen=True)
class Lease:
    """One of `max` slots of work in flight on a key, held inside a
    `with limiter.concurrency(...)` block."""

    key: str
    # The lease's id (generated by the server); None when degraded.
    id: Optional[bytes]
    # Slots still free after this one was taken.
    remaining: int
    max: int
    # Seconds until the last live lease on the key ends by itself.
    reset_after_s: float
    # True when Redis could not be asked and the failure policy let the
    # work go ahead without a lease.
    degraded: bool = False


class Busy(Exception):
    """Every slot is taken (or, failing closed, Redis could not be asked):
    the work must not start. Answer 429 (or 503) with `headers()`."""

    def __init__(self, key: str, max: int, retry_after_s: Optional[float], degraded: bool = False):
        super().__init__(f"{key}: all {max} slots are taken" if not degraded else f"{key}: Redis is unavailable")
        self.key = key
        self.max = max
        # Seconds until a slot frees up by itself (sooner if a holder
        # finishes); None when degraded.
        self.retry_after_s = retry_after_s
        self.degraded = degraded

    def headers(self) -> Dict[str, str]:
        """`Retry-After`, in whole seconds rounded up, when known."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after_s))}


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
        library: Union[str, Path] = LIBRARY,
        backend: Optional[str] = None,
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

        `library` is the path of `fallback/ratelimit.lua`, read when the
        server has no module.

        `backend` ("module", "functions" or "script") skips finding out
        what the server offers; by default the first call finds out.
        """
        if on_error not in ("open", "closed"):
            raise ValueError('on_error must be "open" or "closed"')
        if backend not in (None, *BACKENDS):
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, or None to find out")
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
        self.library = Path(library)
        self._backend: Optional[str] = None
        self._named_backend = backend
        self._choosing = threading.Lock()
        # The options after `limit period`, the same for every call.
        self._options = ["ALGORITHM", algorithm]
        if burst is not None:
            self._options += ["BURST", burst]

    def is_allowed(self, key: str, cost: int = 1) -> Decision:
        """Counts a request of `cost` units against `key`, if it is admitted."""
        try:
            reply = self._check("CHECK", key, cost)
        except UNAVAILABLE:
            return self._degraded()
        return Decision.from_reply(reply)

    def remaining(self, key: str) -> int:
        """The units `key` may still use now, counting nothing
        (RATELIMIT.PEEK). When Redis is unavailable: `limit` if failing open,
        0 if failing closed."""
        try:
            reply = self._check("PEEK", key, 1)
        except UNAVAILABLE:
            return self.limit if self.on_error == "open" else 0
        return reply[1]

    @contextmanager
    def concurrency(self, key: str, max: int, lease_ms: int) -> Iterator[Lease]:
        """Holds one of `max` slots of `key` for the `with` block
        (RATELIMIT.ACQUIRE on entry, RATELIMIT.RELEASE on exit, also when
        the block raises). Raises `Busy` when every slot is taken.

        If the process dies inside the block, its slot comes back by itself
        `lease_ms` after it was taken (or last renewed): make `lease_ms`
        longer than the work takes, or `renew` the lease as it goes on.

        When Redis cannot be asked: failing open, the block runs with a
        degraded lease (unlimited); failing closed, `Busy` is raised with
        `degraded=True`. A release that cannot reach Redis is left to the
        lease's own end.
        """
        name = self.prefix + key
        try:
            reply = self._run("ACQUIRE", name, max, lease_ms)
        except UNAVAILABLE:
            if self.on_error == "closed":
                raise Busy(key, max, None, degraded=True) from None
            yield Lease(key=key, id=None, remaining=max, max=max, reset_after_s=0.0, degraded=True)
            return
        acquired, remaining, limit, retry_after_ms, reset_after_ms, lease_id = reply
        if not acquired:
            raise Busy(key, limit, retry_after_ms / 1000)
        try:
            yield Lease(key=key, id=lease_id, remaining=remaining, max=limit,
                        reset_after_s=reset_after_ms / 1000)
        finally:
            try:
                self._run("RELEASE", name, lease_id)
            except UNAVAILABLE:
                pass

    def renew(self, lease: Lease, lease_ms: int) -> bool:
        """Moves the end of `lease` to `lease_ms` from now (RATELIMIT.RENEW).
        False when it had already ended: its slot may be someone else's, so
        the work should stop (or acquire again). A degraded lease has
        nothing to renew: True."""
        if lease.degraded:
            return True
        return self._run("RENEW", self.prefix + lease.key, lease.id, lease_ms) == 1

    @property
    def backend(self) -> str:
        """What runs the limits: "module", "functions" or "script" (see the
        top of this file). Chosen at the first call, and logged then; asking
        before any call chooses now, and raises ConnectionError or
        TimeoutError when Redis cannot be asked."""
        # One choice and one log line, also when threads start together.
        with self._choosing:
            if self._backend is None:
                self._backend = self._choose_backend()
            return self._backend

    def _offered(self):
        """Whether the server has the module, and whether it has functions:
        from COMMAND INFO, or, where the user may not run it, from the
        commands themselves."""
        try:
            module, functions = self.client.execute_command("COMMAND INFO", "ratelimit.check", "fcall")
            return module is not None, functions is not None
        except redis.exceptions.NoPermissionError:
            # A key that is never written: PEEK only reads.
            return (self._has("RATELIMIT.PEEK", "ratelimit:backend-probe", 1, 1),
                    self._has("FCALL_RO", "ratelimit_version", 0))

    def _has(self, *command) -> bool:
        """Whether the server knows `command`: an unknown command is refused
        before ACLs are consulted, so any other answer means it does."""
        try:
            self.client.execute_command(*command)
        except redis.exceptions.ResponseError as e:
            return "unknown command" not in str(e).lower()
        return True

    def _choose_backend(self) -> str:
        if self._named_backend is not None:
            module = self._named_backend == "module"
            functions = self._named_backend == "functions"
        else:
            module, functions = self._offered()
        if module:
            log.info("rate limits on the module (RATELIMIT.* commands)")
            return "module"
        text = self.library.read_text()
        if functions:
            self._library = text
            loaded = self._load_library()
            log.info("rate limits on the library %s through FCALL (no module on the server): %s",
                     self.library, loaded)
            return "functions"
        # Redis 6.2: the library less its `#!lua name=` line is a script,
        # ARGV[1] naming the function. redis-py's Script sends EVALSHA and
        # loads the script again when the server answers NOSCRIPT.
        self._script = self.client.register_script(text.split("\n", 1)[1])
        self.client.script_load(self._script.script)
        log.info("rate limits on the library %s through EVALSHA (no module, no functions on the server)",
                 self.library)
        return "script"

    def _load_library(self) -> str:
        """Loads the library unless the server has this version already;
        says what it did."""
        wanted = library_version(self._library)
        try:
            found = self.client.execute_command("FCALL_RO", "ratelimit_version", 0)
        except redis.exceptions.ResponseError:
            found = None  # Function not found: no library yet
        if found == wanted:
            return f"version {found} already loaded"
        self.client.function_load(self._library, replace=True)
        return f"version {wanted} loaded" + (f" in place of version {found}" if found is not None else "")

    def _check(self, verb: str, key: str, cost: int):
        return self._run(verb, self.prefix + key, self.limit, self.period_s, "COST", cost, *self._options)

    def _run(self, verb: str, key: str, *args):
        """`RATELIMIT.<verb> key args...`, on the backend."""
        backend = self.backend
        if backend == "module":
            return self.client.execute_command(f"RATELIMIT.{verb}", key, *args)
        function = f"ratelimit_{verb.lower()}"
        if backend == "script":
            return self._script(keys=[key], args=[function, *args])
        # PEEK under FCALL_RO, as the module's read-only PEEK: replicas answer it.
        fcall = "FCALL_RO" if verb == "PEEK" else "FCALL"
        try:
            return self.client.execute_command(fcall, function, 1, key, *args)
        except redis.exceptions.ResponseError as e:
            if str(e) != "Function not found":
                raise
        # The library was there when chosen: it has been removed since.
        self.client.function_load(self._library, replace=True)
        return self.client.execute_command(fcall, function, 1, key, *args)

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
