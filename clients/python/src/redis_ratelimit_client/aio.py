"""The limiter on redis.asyncio: `AsyncRateLimiter`, the same methods as
`RateLimiter`, awaited."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from ._core import (PROBE_KEY, UNAVAILABLE, Call, LimiterBase, ReservationBase, command_for, decode,
                    is_unknown_command, log)
from ._spec import Limit
from .client import Lease
from .policies import PolicyError, PolicySet
from .results import Acquired, Decision, Denied, MultiDecision, Reserved, Settled, Throttle


def connect(url: str, timeout_s: float, cluster: Optional[bool] = None, **kwargs):
    """A redis.asyncio client for a limiter: timeouts of `timeout_s`, no retries."""
    if url.startswith("redis+cluster://") or url.startswith("rediss+cluster://"):
        cluster = True
        url = url.replace("+cluster", "", 1)
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
               "retry": Retry(NoBackoff(), 0), **kwargs}
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.asyncio.Redis.from_url(url, **options)


def _has_timeout(client) -> bool:
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return kwargs.get("socket_timeout") is not None


class AsyncReservation(ReservationBase):
    """`client.Reservation` for asyncio: `async with
    limiter.reservation(...) as r:`, or `await r.reserve()`, `await
    r.extend()`, `await r.settle(actual)`. A cancelled block settles as a
    failed one (0 unless reported), then the cancellation goes on."""

    def __init__(self, limiter: "AsyncRateLimiter", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limiter = limiter
        self._lock = asyncio.Lock()
        self._extender: Optional[asyncio.Task] = None

    async def reserve(self) -> Reserved:
        if self.reserved is not None:
            raise RuntimeError("this reservation has reserved already")
        return self._admitted(await self.limiter.reserve(self.holds, self.id, self.ttl_ms, self.limits,
                                                         name=self.name))

    async def extend(self, ttl_ms: Optional[int] = None) -> int:
        self._check_reserved()
        left = await self.limiter.extend(self.holds, self.id, ttl_ms if ttl_ms is not None else self.ttl_ms)
        if left == 0:
            self.lost = True
        return left

    async def settle(self, actual: Union[None, int, Dict[str, int]] = None, *,
                     failed: bool = False) -> Optional[Settled]:
        self._check_reserved()
        async with self._lock:
            if self.done:
                return self.settled
            if actual is not None:
                self.actual = actual
            await self._stop_extending()
            items = self._settle_limits(actual, failed)
            if items and self.reserved.allowed:
                self.settled = await self.limiter.settle(self.holds, self.id, items, name=self.name)
            self.done = True
            return self.settled

    def _start_extending(self) -> None:
        interval = self._interval_s()
        if interval is None:
            return

        async def extend_forever():
            while True:
                await asyncio.sleep(interval)
                try:
                    if await self.extend() == 0:
                        return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("extending reservation %s failed", self.id)

        self._extender = asyncio.ensure_future(extend_forever())

    async def _stop_extending(self) -> None:
        extender, self._extender = self._extender, None
        if extender is not None and extender is not asyncio.current_task():
            extender.cancel()
            try:
                await extender
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> "AsyncReservation":
        await self.reserve()
        self._start_extending()
        return self

    async def __aexit__(self, kind, error, traceback) -> None:
        if kind is None:
            await self.settle()
            return
        try:
            await self.settle(failed=True)
        except Exception:
            log.exception("settling reservation %s after %s failed", self.id, kind.__name__)


class AsyncRateLimiter(LimiterBase):
    """`RateLimiter` for asyncio: the same options, with `client` a
    redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster."""

    def __init__(self, client=None, *, url: Optional[str] = None, cluster: Optional[bool] = None, **options):
        super().__init__(**options)
        if client is None:
            client = connect(url or "redis://localhost:6379", self.timeout_s, cluster)
        elif not _has_timeout(client):
            raise ValueError("the client has no socket_timeout: a slow Redis would hang every request "
                             "instead of applying the unavailability policy")
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._choosing = asyncio.Lock()
        self._policy_lock = asyncio.Lock()
        self._watcher: Optional[asyncio.Task] = None

    async def check(self, key: str, limit: Union[int, str, Limit], period_s: Optional[int] = None, *,
                    cost: int = 1, algorithm: str = "FIXED", burst: Optional[int] = None,
                    name: Optional[str] = None) -> Decision:
        call = self._check_call("CHECK", key, self._limit(limit, period_s, algorithm, burst), cost, name)
        return await self._decide(call)

    async def peek(self, key: str, limit: Union[int, str, Limit], period_s: Optional[int] = None, *,
                   cost: int = 1, algorithm: str = "FIXED", burst: Optional[int] = None,
                   name: Optional[str] = None) -> Decision:
        call = self._check_call("PEEK", key, self._limit(limit, period_s, algorithm, burst), cost, name)
        return await self._decide(call)

    async def mcheck(self, limits: Sequence, *, name: Optional[str] = None) -> MultiDecision:
        return await self._decide(self._multi_call("MCHECK", limits, name))

    async def mpeek(self, limits: Sequence, *, name: Optional[str] = None) -> MultiDecision:
        return await self._decide(self._multi_call("MPEEK", limits, name))

    async def reset(self, *keys: str) -> int:
        call = Call("RESET", [self._key(k) for k in keys], [], "int")
        try:
            return int(await self._execute(call))
        except redis.exceptions.ResponseError:
            self._error(call)
            raise

    async def throttle(self, key: str, max_burst: int, count_per_period: int, period_s: int,
                       quantity: int = 1) -> Throttle:
        call = Call("THROTTLE", [self._key(key)], [max_burst, count_per_period, period_s, quantity], "throttle",
                    extra={"throttle": (max_burst, count_per_period, period_s, quantity)})
        return await self._decide(call)

    async def acquire(self, key: str, max: int, lease_ms: int, *, id: Optional[str] = None,
                      name: Optional[str] = None) -> Acquired:
        args: List[Any] = [max, lease_ms] + (["ID", id] if id is not None else [])
        call = Call("ACQUIRE", [self._key(key)], args, "acquire", name, extra={"acquire": (max, lease_ms, id)})
        return await self._decide(call)

    async def release(self, key: str, *ids: str) -> int:
        return await self._decide(Call("RELEASE", [self._key(key)], list(ids), "release"))

    async def renew(self, key: str, id: str, lease_ms: int) -> bool:
        call = Call("RENEW", [self._key(key)], [id, lease_ms], "renew",
                    extra={"renew": (self._key(key), id, lease_ms)})
        return await self._decide(call)

    async def reserve(self, holds: str, id: str, ttl_ms: int, limits: Sequence, *,
                      name: Optional[str] = None) -> Reserved:
        """RATELIMIT.RESERVE, as RateLimiter.reserve."""
        return await self._decide(self._reserve_call(holds, id, ttl_ms, limits, name))

    async def settle(self, holds: str, id: str, limits: Sequence, *, name: Optional[str] = None) -> Settled:
        """RATELIMIT.SETTLE, as RateLimiter.settle."""
        return await self._decide(self._settle_call(holds, id, limits, name))

    async def extend(self, holds: str, id: str, ttl_ms: int) -> int:
        """RATELIMIT.EXTEND, as RateLimiter.extend."""
        return await self._decide(self._extend_call(holds, id, ttl_ms))

    def reservation(self, holds: str, limits: Sequence, ttl_ms: int, *, id: Optional[str] = None,
                    extend_every_s: Optional[float] = None, name: Optional[str] = None) -> AsyncReservation:
        """`async with limiter.reservation(holds, limits, ttl_ms) as r:` as
        RateLimiter.reservation, extended by a task while the block runs."""
        return AsyncReservation(self, holds, limits, ttl_ms, id, extend_every_s, name)

    @asynccontextmanager
    async def lease(self, key: str, max: int, lease_ms: int, *, id: Optional[str] = None,
                    renew_every_s: Optional[float] = None) -> AsyncIterator[Lease]:
        """`async with limiter.lease(key, max, lease_ms):` as RateLimiter.lease,
        renewed by a task while the block runs."""
        acquired = await self.acquire(key, max, lease_ms, id=id)
        if not acquired.acquired:
            raise Denied(acquired, f"{key}: all {max} slots are taken")
        held = Lease(key, acquired)
        renewer = None
        if acquired.id is not None:
            interval = renew_every_s if renew_every_s is not None else lease_ms / 3000

            async def renew_forever():
                while True:
                    await asyncio.sleep(interval)
                    if not await self.renew(key, acquired.id, lease_ms):
                        held.lost = True
                        return

            renewer = asyncio.ensure_future(renew_forever())
        try:
            yield held
        finally:
            if renewer is not None:
                renewer.cancel()
                try:
                    await renewer
                except asyncio.CancelledError:
                    pass
            if acquired.id is not None:
                await self.release(key, acquired.id)

    async def check_policy(self, policy: str, subject: str, cost: int = 1) -> Decision:
        return await self._policy_decision("CHECK", policy, subject, cost)

    async def peek_policy(self, policy: str, subject: str, cost: int = 1) -> Decision:
        return await self._policy_decision("PEEK", policy, subject, cost)

    async def check_plan(self, plan: str, subject: str, cost: Union[int, Dict[str, int]] = 1) -> MultiDecision:
        return await self._policy_decision("MCHECK", plan, subject, cost)

    async def peek_plan(self, plan: str, subject: str, cost: Union[int, Dict[str, int]] = 1) -> MultiDecision:
        return await self._policy_decision("MPEEK", plan, subject, cost)

    async def _policy_decision(self, verb: str, name: str, subject: str, cost):
        if self.policies is None:
            try:
                await self.refresh_policies()
            except UNAVAILABLE:
                allowed = self.on_unavailable != "closed"
                by = "closed" if not allowed else "open"
                self._metric("degraded", name)
                decision = Decision(allowed, 0, 0, None, 0, None, name, True, by)
                if verb in ("CHECK", "PEEK"):
                    return decision
                return MultiDecision(allowed, 0, 0, None, 0, 0, (decision,), True, by)
        if verb in ("CHECK", "PEEK"):
            return await self._decide(self._policy_call(verb, name, subject, cost))
        return await self._decide(self._plan_call(verb, name, subject, cost))

    async def refresh_policies(self) -> PolicySet:
        """Reads the policy hash now, and starts the watcher task if it is
        not running."""
        async with self._policy_lock:
            fields = await self.client.hgetall(self.policy_key)
            policies = PolicySet.from_hash(fields)
            changed = self.policies is None or policies != self.policies
            self.policies = policies
            self._last_full = time.monotonic()
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.ensure_future(self._watch())
        if changed:
            for listener in list(self.policy_listeners):
                try:
                    listener(policies)
                except Exception:
                    log.exception("a policy listener raised")
        return policies

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                version = decode(await self.client.hget(self.policy_key, "version"))
                stale = time.monotonic() - self._last_full >= self.refresh_interval_s
                if stale or self.policies is None or version != self.policies.version:
                    await self.refresh_policies()
            except UNAVAILABLE:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the policies failed")

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def _decide(self, call: Call):
        if not self.breaker.allow():
            return self._degrade(call)
        try:
            reply = await self._execute(call)
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
                charged = MultiDecision.from_reply(await self._execute(followup))
            except UNAVAILABLE:
                charged = None
        return self._after_multi(call, result, charged)

    async def backend(self) -> str:
        """"module", "functions" or "script" (a coroutine here)."""
        return self._backend or await self._choose_backend()

    async def _send(self, command: list, key: Optional[str] = None, node=None):
        if self.cluster:
            target = node if node is not None else self.client.get_node_from_key(key)
            return await self.client.execute_command(*command, target_nodes=target)
        return await self.client.execute_command(*command)

    async def _primaries(self) -> list:
        if not self.cluster:
            return [None]
        await self.client.initialize()
        return self.client.get_primaries()

    async def _execute(self, call: Call):
        backend = self._backend or await self._choose_backend()
        command = command_for(backend, call.verb, call.keys, call.args, self.sha, call.head)
        key = call.keys[0]
        if self.cluster:
            await self.client.initialize()
        try:
            return await self._send(command, key)
        except redis.exceptions.NoScriptError:
            await self._load_script()
        except redis.exceptions.ResponseError as e:
            if backend != "functions" or "function not found" not in str(e).lower():
                raise
            await self._load_library()
        return await self._send(command, key)

    async def _choose_backend(self) -> str:
        async with self._choosing:
            if self._backend is not None:
                return self._backend
            backend = self.named_backend or await self._offered()
            if backend == "functions":
                how = await self._load_library()
                log.info("rate limits on the Functions library through FCALL (no module on the server): %s", how)
            elif backend == "script":
                await self._load_script()
                log.info("rate limits on the library as a script through EVALSHA (no module, no functions)")
            else:
                log.info("rate limits on the module (RATELIMIT.* commands)")
            self._backend = backend
            return backend

    async def _offered(self) -> str:
        node = (await self._primaries())[0]
        try:
            info = await self._send(["COMMAND INFO", "ratelimit.check", "fcall"], PROBE_KEY, node)
            if isinstance(info, dict):
                module, functions = "ratelimit.check" in info, "fcall" in info
            else:
                module, functions = info[0] is not None, info[1] is not None
        except redis.exceptions.NoPermissionError:
            module = await self._has(["RATELIMIT.PEEK", PROBE_KEY, 1, 1], PROBE_KEY)
            functions = not module and await self._has(["FCALL_RO", "ratelimit_version", 0], None, node)
        return "module" if module else "functions" if functions else "script"

    async def _has(self, command: list, key: Optional[str], node=None) -> bool:
        try:
            await self._send(command, key, node)
        except redis.exceptions.ResponseError as e:
            return not is_unknown_command(e)
        return True

    async def _load_library(self) -> str:
        done = []
        for node in await self._primaries():
            try:
                found = await self._send(["FCALL_RO", "ratelimit_version", 0], None, node)
            except redis.exceptions.ResponseError:
                found = None
            if found == self.library_version:
                done.append(f"version {found} already loaded")
                continue
            await self._send(["FUNCTION", "LOAD", "REPLACE", self.library], None, node)
            done.append(f"version {self.library_version} loaded" +
                        (f" in place of {found}" if found is not None else ""))
        return "; ".join(sorted(set(done)))

    async def _load_script(self) -> None:
        for node in await self._primaries():
            await self._send(["SCRIPT", "LOAD", self.script], None, node)
