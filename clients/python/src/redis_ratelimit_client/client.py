"""The limiter, on redis-py (sync). See the package's README for the whole
API; `aio.AsyncRateLimiter` is the same on redis.asyncio."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ._core import (PROBE_KEY, UNAVAILABLE, Call, LimiterBase, ReservationBase, command_for, decode,
                    is_unknown_command, log)
from ._spec import Limit
from .policies import PolicyAdmin, PolicyError, PolicySet
from .results import Acquired, Decision, Denied, MultiDecision, Reserved, Settled, Throttle


def _no_retry_kwargs(timeout_s: float) -> Dict[str, Any]:
    # No retries: a retry of a limiter call doubles the time a request waits
    # on a dead server (redis-py 6 retries 3 times by default), and a retried
    # CHECK may be counted twice.
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0)}


def connect(url: str, timeout_s: float, cluster: Optional[bool] = None, **kwargs):
    """A redis-py client for a limiter: timeouts of `timeout_s`, no retries.
    `redis+cluster://host:port` (or cluster=True) makes a RedisCluster."""
    if url.startswith("redis+cluster://") or url.startswith("rediss+cluster://"):
        cluster = True
        url = url.replace("+cluster", "", 1)
    options = {**_no_retry_kwargs(timeout_s), **kwargs}
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def _has_timeout(client) -> bool:
    if isinstance(client, RedisCluster):
        kwargs = getattr(client, "nodes_manager").connection_kwargs
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return kwargs.get("socket_timeout") is not None


class Lease:
    """A held lease (`RateLimiter.lease`): `id`, `key`, `acquired` (the
    ACQUIRE result) and `lost`, which turns True when a renewal found the
    lease already ended (its slot may be someone else's: stop the work)."""

    def __init__(self, key: str, acquired: Acquired):
        self.key = key
        self.acquired = acquired
        self.id = acquired.id
        self.lost = False


class Reservation(ReservationBase):
    """An estimate held for one piece of work (`RateLimiter.reservation`):
    RESERVE on entry, SETTLE with the actual cost on exit, EXTEND while it
    runs.

        with limiter.reservation("{org:7}:holds", [("{org:7}:rpm", "600 60"),
                                                   ("{org:7}:tpm", "200000 60", Hold(3000))],
                                 ttl_ms=60_000) as r:
            answer = model(prompt)
            r.actual = answer.total_tokens

    `r.actual`: one number for every HOLD limit, or {key: number}. Unset when
    the block ends, each HOLD limit settles at its estimate; when the block
    raises, at 0 (what it reported before raising stands), and the exception
    goes on. `r.settle(actual)` settles early; a reservation never settles
    twice. `id` (a uuid4 unless given), `reserved` (the Reserved), `settled`,
    `held`, `degraded`, `lost` (an extension found the hold gone).

    Without `with`: `r.reserve()` (raises Denied), `r.extend()` as the work
    runs, `r.settle(actual)`. Only the `with` block extends by itself."""

    def __init__(self, limiter: "RateLimiter", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limiter = limiter
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._extender: Optional[threading.Thread] = None

    def reserve(self) -> Reserved:
        """RESERVE; raises Denied when a limit refuses (nothing is held)."""
        if self.reserved is not None:
            raise RuntimeError("this reservation has reserved already")
        return self._admitted(self.limiter.reserve(self.holds, self.id, self.ttl_ms, self.limits, name=self.name))

    def extend(self, ttl_ms: Optional[int] = None) -> int:
        """EXTEND: the hold now lasts `ttl_ms` (the reservation's) from now;
        the ms it lasts, 0 when it is gone (then `lost` turns True)."""
        self._check_reserved()
        left = self.limiter.extend(self.holds, self.id, ttl_ms if ttl_ms is not None else self.ttl_ms)
        if left == 0:
            self.lost = True
        return left

    def settle(self, actual: Union[None, int, Dict[str, int]] = None, *, failed: bool = False) -> Optional[Settled]:
        """SETTLE each HOLD limit with `actual` (see `actual`; `failed`:
        an unreported limit settles at 0 rather than its estimate), once:
        later calls return the first result. None without a HOLD limit."""
        self._check_reserved()
        with self._lock:
            if self.done:
                return self.settled
            if actual is not None:
                self.actual = actual
            self._stop_extending()
            items = self._settle_limits(actual, failed)
            if items and self.reserved.allowed:
                self.settled = self.limiter.settle(self.holds, self.id, items, name=self.name)
            self.done = True
            return self.settled

    def _start_extending(self) -> None:
        interval = self._interval_s()
        if interval is None:
            return

        def extend_until_stopped():
            while not self._stop.wait(interval):
                try:
                    if self.extend() == 0:
                        return
                except Exception:
                    log.exception("extending reservation %s failed", self.id)

        self._extender = threading.Thread(target=extend_until_stopped, daemon=True,
                                          name=f"reservation-extender {self.holds}")
        self._extender.start()

    def _stop_extending(self) -> None:
        self._stop.set()
        if self._extender is not None and self._extender is not threading.current_thread():
            self._extender.join()

    def __enter__(self) -> "Reservation":
        self.reserve()
        self._start_extending()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.settle()
            return
        try:
            self.settle(failed=True)
        except Exception:
            log.exception("settling reservation %s after %s failed", self.id, kind.__name__)


class RateLimiter(LimiterBase):
    """Rate limits and concurrency leases in Redis, through the
    redis-ratelimit module or its Functions library.

    Give `client` (a redis.Redis or redis.cluster.RedisCluster with
    `socket_timeout` set), or `url` (`redis://…`, `redis+cluster://…`) for
    the limiter to build one with `timeout_s` timeouts and no retries.

    backend          "module", "functions" or "script"; None (default):
                     found out at the first call
    on_unavailable   what a decision is when Redis cannot be asked:
                     "local" (default), "open" or "closed"
    timeout_s        the deadline of every call (0.2 s)
    failure_threshold, cooldown_s
                     the circuit breaker: open after 3 failures in a row,
                     probe again after 2 s
    local_max_keys   keys the in-process limiter keeps (10,000, LRU)
    prefix           put before every key given to a method
    metrics          callback(event, policy): see metrics.EVENTS
    on_shadow_denied callback(decision, key) for a shadow limit's denial
    header_style     the default of the framework integrations' headers
    """

    def __init__(self, client=None, *, url: Optional[str] = None, cluster: Optional[bool] = None, **options):
        super().__init__(**options)
        if client is None:
            client = connect(url or "redis://localhost:6379", self.timeout_s, cluster)
        elif not _has_timeout(client):
            raise ValueError("the client has no socket_timeout: a slow Redis would hang every request "
                             "instead of applying the unavailability policy")
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._choosing = threading.Lock()
        self._policy_lock = threading.Lock()
        self._watcher: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # -- the commands -------------------------------------------------------

    def check(self, key: str, limit: Union[int, str, Limit], period_s: Optional[int] = None, *,
              cost: int = 1, algorithm: str = "FIXED", burst: Optional[int] = None,
              name: Optional[str] = None) -> Decision:
        """RATELIMIT.CHECK: counts a request of `cost` against `key` if it is
        admitted. `limit` is a number (with `period_s`, `algorithm`,
        `burst`), a Limit, or a spec string ("100 60 ALGORITHM SLIDING").
        `name` labels the decision (metrics, headers)."""
        call = self._check_call("CHECK", key, self._limit(limit, period_s, algorithm, burst), cost, name)
        return self._decide(call)

    def peek(self, key: str, limit: Union[int, str, Limit], period_s: Optional[int] = None, *,
             cost: int = 1, algorithm: str = "FIXED", burst: Optional[int] = None,
             name: Optional[str] = None) -> Decision:
        """RATELIMIT.PEEK: what CHECK would answer, counting nothing."""
        call = self._check_call("PEEK", key, self._limit(limit, period_s, algorithm, burst), cost, name)
        return self._decide(call)

    def mcheck(self, limits: Sequence, *, name: Optional[str] = None) -> MultiDecision:
        """RATELIMIT.MCHECK: one request against several limits, all charged
        or none. `limits`: (key, limit) or (key, limit, cost) tuples, a limit
        being a Limit or a spec string; in Cluster every key in one slot
        (a shared hash tag: `{user:42}:rpm`, `{user:42}:tpd`)."""
        return self._decide(self._multi_call("MCHECK", limits, name))

    def mpeek(self, limits: Sequence, *, name: Optional[str] = None) -> MultiDecision:
        """RATELIMIT.MPEEK: what MCHECK would answer, counting nothing."""
        return self._decide(self._multi_call("MPEEK", limits, name))

    def reset(self, *keys: str) -> int:
        """RATELIMIT.RESET: forgets limiters; how many keys it removed.
        Raises when Redis is unavailable (it is no decision)."""
        call = Call("RESET", [self._key(k) for k in keys], [], "int")
        try:
            return int(self._execute(call))
        except redis.exceptions.ResponseError:
            self._error(call)
            raise

    def throttle(self, key: str, max_burst: int, count_per_period: int, period_s: int,
                 quantity: int = 1) -> Throttle:
        """RATELIMIT.THROTTLE: redis-cell's CL.THROTTLE."""
        call = Call("THROTTLE", [self._key(key)], [max_burst, count_per_period, period_s, quantity], "throttle",
                    extra={"throttle": (max_burst, count_per_period, period_s, quantity)})
        return self._decide(call)

    def acquire(self, key: str, max: int, lease_ms: int, *, id: Optional[str] = None,
                name: Optional[str] = None) -> Acquired:
        """RATELIMIT.ACQUIRE: one of `max` leases on `key`, ending by itself
        after `lease_ms` unless released or renewed."""
        args: List[Any] = [max, lease_ms] + (["ID", id] if id is not None else [])
        call = Call("ACQUIRE", [self._key(key)], args, "acquire", name, extra={"acquire": (max, lease_ms, id)})
        return self._decide(call)

    def release(self, key: str, *ids: str) -> int:
        """RATELIMIT.RELEASE: ends leases; how many were live."""
        call = Call("RELEASE", [self._key(key)], list(ids), "release")
        return self._decide(call)

    def renew(self, key: str, id: str, lease_ms: int) -> bool:
        """RATELIMIT.RENEW: whether the lease was live (and now ends
        `lease_ms` from now)."""
        call = Call("RENEW", [self._key(key)], [id, lease_ms], "renew",
                    extra={"renew": (self._key(key), id, lease_ms)})
        return self._decide(call)

    def reserve(self, holds: str, id: str, ttl_ms: int, limits: Sequence, *,
                name: Optional[str] = None) -> Reserved:
        """RATELIMIT.RESERVE: MCHECK of `limits` (all or none) that records
        the request under `id` in the hash `holds` for `ttl_ms`. `limits` are
        MCHECK's (key, limit[, cost[, name]]) with `Hold(estimate)` in place
        of the cost of a limit that holds the estimate until SETTLE (at most
        half of the limit, by default; the rest is charged at SETTLE), rather
        than charging for good. A RESERVE of an id recorded already charges
        nothing and replies the first reply. In Cluster, `holds` and the
        keys share a slot (`{org:7}:holds`, `{org:7}:tpm`)."""
        return self._decide(self._reserve_call(holds, id, ttl_ms, limits, name))

    def settle(self, holds: str, id: str, limits: Sequence, *, name: Optional[str] = None) -> Settled:
        """RATELIMIT.SETTLE: charges each (key, limit, actual[, name]) its
        actual cost less what `id` holds on it (a refund, or a debt past the
        limit); never denies. `status`: SETTLED, UNKNOWN (no live hold: the
        actual was charged in full) or ALREADY_SETTLED (nothing charged)."""
        return self._decide(self._settle_call(holds, id, limits, name))

    def extend(self, holds: str, id: str, ttl_ms: int) -> int:
        """RATELIMIT.EXTEND: the hold now expires `ttl_ms` from now (at most
        the module's `hold-max-ttl-ms`, 60 s by default); the ms until it
        expires, or 0 when `id` holds nothing."""
        return self._decide(self._extend_call(holds, id, ttl_ms))

    def reservation(self, holds: str, limits: Sequence, ttl_ms: int, *, id: Optional[str] = None,
                    extend_every_s: Optional[float] = None, name: Optional[str] = None) -> Reservation:
        """A Reservation: `with limiter.reservation(holds, limits, ttl_ms) as
        r:` RESERVEs (raising Denied), EXTENDs every `extend_every_s` (a
        third of the hold's ttl; 0: never) while the block runs, and SETTLEs
        with `r.actual` on exit (0 when the block raises). `id`: a uuid4
        unless given (give the request's own id to make retries safe)."""
        return Reservation(self, holds, limits, ttl_ms, id, extend_every_s, name)

    @contextmanager
    def lease(self, key: str, max: int, lease_ms: int, *, id: Optional[str] = None,
              renew_every_s: Optional[float] = None) -> Iterator[Lease]:
        """Holds one of `max` slots of `key` for the `with` block, released
        when it ends (also on an exception), renewed every `renew_every_s`
        (default: a third of `lease_ms`) while it runs. Raises Denied when
        every slot is taken. If the process dies inside the block, the slot
        comes back by itself `lease_ms` after the last renewal."""
        acquired = self.acquire(key, max, lease_ms, id=id)
        if not acquired.acquired:
            raise Denied(acquired, f"{key}: all {max} slots are taken")
        held = Lease(key, acquired)
        stop = threading.Event()
        renewer = None
        if acquired.id is not None:
            interval = renew_every_s if renew_every_s is not None else lease_ms / 3000

            def renew_until_stopped():
                while not stop.wait(interval):
                    if not self.renew(key, acquired.id, lease_ms):
                        held.lost = True
                        return

            renewer = threading.Thread(target=renew_until_stopped, daemon=True, name=f"lease-renewer {key}")
            renewer.start()
        try:
            yield held
        finally:
            stop.set()
            if renewer is not None:
                renewer.join()
            if acquired.id is not None:
                self.release(key, acquired.id)

    # -- policies ----------------------------------------------------------

    def check_policy(self, policy: str, subject: str, cost: int = 1) -> Decision:
        """CHECK of the named policy (or `subject`'s override of it) on the
        key `<prefix>{<subject>}:<policy>`. An unknown policy raises
        PolicyError."""
        return self._policy_decision("CHECK", policy, subject, cost)

    def peek_policy(self, policy: str, subject: str, cost: int = 1) -> Decision:
        return self._policy_decision("PEEK", policy, subject, cost)

    def check_plan(self, plan: str, subject: str, cost: Union[int, Dict[str, int]] = 1) -> MultiDecision:
        """MCHECK of every policy of `plan` for `subject`, all or none;
        `cost` is one cost for each, or a cost per policy name (others: 1)."""
        return self._policy_decision("MCHECK", plan, subject, cost)

    def peek_plan(self, plan: str, subject: str, cost: Union[int, Dict[str, int]] = 1) -> MultiDecision:
        return self._policy_decision("MPEEK", plan, subject, cost)

    def _policy_decision(self, verb: str, name: str, subject: str, cost):
        if self.policies is None:
            try:
                self.refresh_policies()
            except UNAVAILABLE:
                return self._unknown_limits(verb, name)
        if verb in ("CHECK", "PEEK"):
            return self._decide(self._policy_call(verb, name, subject, cost))
        return self._decide(self._plan_call(verb, name, subject, cost))

    def _unknown_limits(self, verb: str, name: str):
        # Never read and Redis down: there is no limit to apply locally.
        allowed = self.on_unavailable != "closed"
        by = "closed" if not allowed else "open"
        self._metric("degraded", name)
        decision = Decision(allowed, 0, 0, None, 0, None, name, True, by)
        if verb in ("CHECK", "PEEK"):
            return decision
        return MultiDecision(allowed, 0, 0, None, 0, 0, (decision,), True, by)

    def refresh_policies(self) -> PolicySet:
        """Reads the policy hash now, and starts the watcher that keeps it
        current (a daemon thread) if it is not running."""
        with self._policy_lock:
            fields = self.client.hgetall(self.policy_key)
            policies = PolicySet.from_hash(fields)
            changed = self.policies is None or policies != self.policies
            self.policies = policies
            self._last_full = time.monotonic()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, daemon=True, name="ratelimit policies")
                self._watcher.start()
        if changed:
            for listener in list(self.policy_listeners):
                try:
                    listener(policies)
                except Exception:
                    log.exception("a policy listener raised")
        return policies

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                version = decode(self.client.hget(self.policy_key, "version"))
                stale = time.monotonic() - self._last_full >= self.refresh_interval_s
                if stale or self.policies is None or version != self.policies.version:
                    self.refresh_policies()
            except UNAVAILABLE:
                continue
            except Exception:
                log.exception("reading the policies failed")

    def policy_admin(self) -> PolicyAdmin:
        return PolicyAdmin(self.client, self.policy_key)

    def close(self) -> None:
        """Stops the policy watcher and closes the client."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending -------------------------------------------------------------

    def _decide(self, call: Call):
        if not self.breaker.allow():
            return self._degrade(call)
        try:
            reply = self._execute(call)
        except UNAVAILABLE:
            self.breaker.failure()
            return self._degrade(call)
        except redis.exceptions.ResponseError:
            self.breaker.success()
            self._error(call)
            raise
        self.breaker.success()
        result = self._finish(call, reply)
        if call.kind != "multi":
            return result
        charged = None
        followup = self._shadow_followup(call, result)
        if followup is not None:
            try:
                charged = MultiDecision.from_reply(self._execute(followup))
            except UNAVAILABLE:
                charged = None
        return self._after_multi(call, result, charged)

    @property
    def backend(self) -> str:
        """"module", "functions" or "script": chosen at the first call (or
        now), logged once."""
        return self._backend or self._choose_backend()

    def _send(self, command: list, key: Optional[str] = None, node=None):
        if self.cluster:
            target = node if node is not None else self.client.get_node_from_key(key)
            return self.client.execute_command(*command, target_nodes=target)
        return self.client.execute_command(*command)

    def _primaries(self) -> list:
        return self.client.get_primaries() if self.cluster else [None]

    def _execute(self, call: Call):
        backend = self._backend or self._choose_backend()
        command = command_for(backend, call.verb, call.keys, call.args, self.sha, call.head)
        key = call.keys[0]
        try:
            return self._send(command, key)
        except redis.exceptions.NoScriptError:
            self._load_script()
        except redis.exceptions.ResponseError as e:
            if backend != "functions" or "function not found" not in str(e).lower():
                raise
            # Removed since it was chosen (FUNCTION FLUSH, a new master):
            # load it again, then run the call once more.
            self._load_library()
        return self._send(command, key)

    def _choose_backend(self) -> str:
        with self._choosing:
            if self._backend is not None:
                return self._backend
            backend = self.named_backend or self._offered()
            if backend == "functions":
                how = self._load_library()
                log.info("rate limits on the Functions library through FCALL (no module on the server): %s", how)
            elif backend == "script":
                self._load_script()
                log.info("rate limits on the library as a script through EVALSHA (no module, no functions)")
            else:
                log.info("rate limits on the module (RATELIMIT.* commands)")
            self._backend = backend
            return backend

    def _offered(self) -> str:
        node = self._primaries()[0]
        try:
            info = self._send(["COMMAND INFO", "ratelimit.check", "fcall"], PROBE_KEY, node)
            if isinstance(info, dict):
                module, functions = "ratelimit.check" in info, "fcall" in info
            else:
                module, functions = info[0] is not None, info[1] is not None
        except redis.exceptions.NoPermissionError:
            module = self._has(["RATELIMIT.PEEK", PROBE_KEY, 1, 1], PROBE_KEY)
            functions = not module and self._has(["FCALL_RO", "ratelimit_version", 0], None, node)
        return "module" if module else "functions" if functions else "script"

    def _has(self, command: list, key: Optional[str], node=None) -> bool:
        """Whether the server knows `command`: an unknown command is refused
        before ACLs are consulted, so any other answer means it does."""
        try:
            self._send(command, key, node)
        except redis.exceptions.ResponseError as e:
            return not is_unknown_command(e)
        return True

    def _load_library(self) -> str:
        """Loads the library on every master that lacks this version."""
        done = []
        for node in self._primaries():
            try:
                found = self._send(["FCALL_RO", "ratelimit_version", 0], None, node)
            except redis.exceptions.ResponseError:
                found = None
            if found == self.library_version:
                done.append(f"version {found} already loaded")
                continue
            self._send(["FUNCTION", "LOAD", "REPLACE", self.library], None, node)
            done.append(f"version {self.library_version} loaded" +
                        (f" in place of {found}" if found is not None else ""))
        return "; ".join(sorted(set(done)))

    def _load_script(self) -> None:
        for node in self._primaries():
            self._send(["SCRIPT", "LOAD", self.script], None, node)
