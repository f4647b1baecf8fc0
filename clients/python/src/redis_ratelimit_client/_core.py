"""What the sync and the asyncio limiters share: the calls each method
makes, how replies become results, and every decision made without Redis.
Only sending a call differs between them."""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import redis

from ._spec import Limit, SpecError, check_cost
from .breaker import CircuitBreaker
from .local import LocalLimiter
from .policies import DEFAULT_KEY, PolicyError, PolicySet, policy_key
from .results import Acquired, Decision, HEADER_STYLES, MultiDecision, Throttle

log = logging.getLogger("redis_ratelimit_client")

# Redis could not be asked: down, unreachable, or slower than the timeout.
# An error reply (ResponseError: a bad argument, WRONGTYPE, NOPERM) is not
# in here: it is raised, whatever the policy.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.MasterDownError,
    builtins.TimeoutError,
    builtins.ConnectionError,
)

BACKENDS = ("module", "functions", "script")
MODES = ("open", "closed", "local")
MULTI_KEY = ("MCHECK", "MPEEK")
READ_ONLY = ("PEEK", "MPEEK")
PROBE_KEY = "ratelimit:backend-probe"


def library_text() -> str:
    """The Functions library shipped in this package (fallback/ratelimit.lua
    of the module's repository, at this package's version)."""
    return resources.files(__package__).joinpath("ratelimit.lua").read_text(encoding="utf-8")


def library_version(text: str) -> Optional[int]:
    """The version the library declares, as `FCALL_RO ratelimit_version 0`
    answers it (0.3.0 is 300)."""
    found = re.search(r"^local VERSION = '(\d+)\.(\d+)\.(\d+)'", text, re.MULTILINE)
    if found is None:
        return None
    major, minor, patch = map(int, found.groups())
    return major * 10000 + minor * 100 + patch


def script_text(library: str) -> str:
    """Redis 6.2: the library less its `#!lua name=` line is a script."""
    return library.split("\n", 1)[1]


def command_for(backend: str, verb: str, keys: Sequence, args: Sequence, sha: Optional[str] = None) -> list:
    """The command that runs RATELIMIT.<verb> on `backend`."""
    if backend == "module":
        numkeys = [len(keys)] if verb in MULTI_KEY else []
        return [f"RATELIMIT.{verb}", *numkeys, *keys, *args]
    function = f"ratelimit_{verb.lower()}"
    if backend == "functions":
        return ["FCALL_RO" if verb in READ_ONLY else "FCALL", function, len(keys), *keys, *args]
    return ["EVALSHA", sha, len(keys), *keys, function, *args]


def is_unknown_command(error: Exception) -> bool:
    return "unknown command" in str(error).lower()


@dataclass
class Call:
    """One command to run: RATELIMIT.<verb> keys args, and what to make of
    its reply (`kind`) or of its absence."""

    verb: str
    keys: List[str]
    args: List[Any]
    kind: str
    policy: Optional[str] = None
    # For decisions: (key, Limit, cost, policy name) per limit.
    limits: List[Tuple[str, Limit, int, Optional[str]]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)


Metrics = Callable[[str, Optional[str]], None]


class LimiterBase:
    """Configuration and everything that is not I/O. See RateLimiter."""

    def __init__(self, *, backend: Optional[str] = None, on_unavailable: str = "local",
                 timeout_s: float = 0.2, failure_threshold: int = 3, cooldown_s: float = 2.0,
                 local_max_keys: int = 10_000, prefix: str = "", policy_key_name: str = DEFAULT_KEY,
                 poll_interval_s: float = 0.25, refresh_interval_s: float = 10.0,
                 metrics: Optional[Metrics] = None,
                 on_shadow_denied: Optional[Callable[[Any, str], None]] = None,
                 header_style: str = "ietf", library: Optional[str] = None):
        if backend not in (None, *BACKENDS):
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, or None to find out")
        if on_unavailable not in MODES:
            raise ValueError(f"on_unavailable must be one of {', '.join(MODES)}")
        if header_style not in HEADER_STYLES:
            raise ValueError(f"header_style must be one of {', '.join(HEADER_STYLES)}")
        if timeout_s is None or timeout_s <= 0:
            raise ValueError("timeout_s must be positive: a limiter call needs a deadline")
        self.named_backend = backend
        self.on_unavailable = on_unavailable
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(failure_threshold, cooldown_s)
        self.local = LocalLimiter(local_max_keys)
        self.prefix = prefix
        self.policy_key = policy_key_name
        self.poll_interval_s = poll_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.metrics = metrics
        self.on_shadow_denied = on_shadow_denied
        self.header_style = header_style
        self.library = library if library is not None else library_text()
        self.library_version = library_version(self.library)
        self.script = script_text(self.library)
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self._backend: Optional[str] = None
        self.policies: Optional[PolicySet] = None
        # Called with the new PolicySet whenever the policies changed.
        self.policy_listeners: List[Callable[[PolicySet], None]] = []
        # Local state is only good for one outage: forget it once closed.
        self.breaker.listeners.append(self._breaker_moved)

    def _breaker_moved(self, old: str, new: str) -> None:
        if new == "open":
            log.warning("Redis unavailable: rate limits decided %s until it answers again",
                        {"open": "by allowing", "closed": "by denying", "local": "in-process"}[self.on_unavailable])
        elif new == "closed":
            log.warning("Redis answers again: rate limits decided by Redis")
            self.local.clear()

    # -- building calls ---------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _limit(limit, period_s, algorithm, burst) -> Limit:
        if isinstance(limit, Limit):
            return limit
        if isinstance(limit, str):
            return Limit.parse(limit)
        if period_s is None:
            raise TypeError("period_s is needed with a numeric limit")
        return Limit(limit, period_s, algorithm, burst)

    def _check_call(self, verb: str, key: str, limit: Limit, cost: int, policy: Optional[str],
                    raw_key: bool = False) -> Call:
        check_cost(cost)
        name = key if raw_key else self._key(key)
        return Call(verb, [name], limit.args(cost), "decision", policy, [(name, limit, cost, policy)])

    def _multi_call(self, verb: str, limits: Sequence, policy: Optional[str], raw_keys: bool = False) -> Call:
        items = []
        for entry in limits:
            if len(entry) == 2:
                (key, limit), cost, name = entry, 1, None
            elif len(entry) == 3:
                (key, limit, cost), name = entry, None
            else:
                key, limit, cost, name = entry
            limit = self._limit(limit, None, "FIXED", None)
            check_cost(cost)
            items.append((key if raw_keys else self._key(key), limit, cost, name))
        if not 1 <= len(items) <= 16:
            raise ValueError("MCHECK takes 1 to 16 limits")
        args: List[Any] = []
        for _, limit, cost, _ in items:
            args += ["LIMIT", *limit.args(cost)]
        return Call(verb, [i[0] for i in items], args, "multi", policy, items)

    # -- policies -----------------------------------------------------------

    def _policy_call(self, verb: str, policy: str, subject: str, cost: int) -> Call:
        limit = self._policy_set().limit(policy, subject)
        return self._check_call(verb, policy_key(self.prefix, subject, policy), limit, cost, policy, raw_key=True)

    def _plan_call(self, verb: str, plan: str, subject: str, cost) -> Call:
        policies = self._policy_set()
        names = policies.plan(plan)
        costs = cost if isinstance(cost, dict) else {n: cost for n in names}
        unknown = set(costs) - set(names)
        if unknown:
            raise PolicyError(f"plan {plan!r} has no policy {', '.join(sorted(unknown))}")
        items = [(policy_key(self.prefix, subject, n), policies.limit(n, subject), costs.get(n, 1), n)
                 for n in names]
        return self._multi_call(verb, items, plan, raw_keys=True)

    def _policy_set(self) -> PolicySet:
        if self.policies is None:
            raise PolicyError("the policies have not been read from Redis yet")
        return self.policies

    # -- results ------------------------------------------------------------

    def _finish(self, call: Call, reply):
        kind = call.kind
        if kind == "decision":
            key, limit, cost, name = call.limits[0]
            decision = Decision.from_reply(reply, limit.period_s, name)
            if not decision.allowed and limit.shadow and call.verb == "CHECK":
                decision = replace(decision, allowed=True, retry_after_ms=None, shadow_denied=True)
                self._shadow(decision, key)
            self._count(call, decision)
            return decision
        if kind == "multi":
            decision = MultiDecision.from_reply(reply, [l.period_s for _, l, _, _ in call.limits],
                                                [n for *_, n in call.limits])
            return decision  # shadow and counting: _after_multi
        if kind == "throttle":
            return self._counted(call, Throttle.from_reply(reply))
        if kind == "acquire":
            return self._counted(call, Acquired.from_reply(reply))
        if kind == "renew":
            return int(reply) == 1
        return int(reply)

    def _shadow_followup(self, call: Call, decision: MultiDecision) -> Optional[Call]:
        """MCHECK denied only by shadow limits charged nothing: the call that
        charges the limits that admitted it, or None."""
        if decision.allowed or call.verb != "MCHECK":
            return None
        denying = [i for i, d in enumerate(decision.each) if not d.allowed]
        if not all(call.limits[i][1].shadow for i in denying):
            return None
        admitted = [call.limits[i] for i, d in enumerate(decision.each) if d.allowed]
        if not admitted:
            return None
        return self._multi_call("MCHECK", admitted, call.policy, raw_keys=True)

    def _after_multi(self, call: Call, decision: MultiDecision, charged: Optional[MultiDecision]) -> MultiDecision:
        denying = [i for i, d in enumerate(decision.each) if not d.allowed]
        if (not decision.allowed and call.verb == "MCHECK" and denying
                and all(call.limits[i][1].shadow for i in denying)):
            each = list(decision.each)
            if charged is not None:
                admitted = [i for i, d in enumerate(decision.each) if d.allowed]
                for i, d in zip(admitted, charged.each):
                    each[i] = d
            for i in denying:
                each[i] = replace(each[i], allowed=True, retry_after_ms=None, shadow_denied=True)
                self._shadow(each[i], call.limits[i][0])
            decision = replace(decision, allowed=True, retry_after_ms=None, shadow_denied=True, each=tuple(each))
        self._count(call, decision)
        return decision

    def _shadow(self, decision, key: str) -> None:
        self._metric("shadow_denied", decision.policy)
        if self.on_shadow_denied is not None:
            try:
                self.on_shadow_denied(decision, key)
            except Exception:  # the hook must never break a request
                log.exception("on_shadow_denied raised")

    def _counted(self, call: Call, result):
        self._count(call, result)
        return result

    def _count(self, call: Call, result) -> None:
        if self.metrics is None:
            return
        allowed = getattr(result, "allowed", None)
        if allowed is None:
            allowed = getattr(result, "acquired", True)
        self._metric("allowed" if allowed else "denied", call.policy)
        if getattr(result, "degraded", False):
            self._metric("degraded", call.policy)

    def _metric(self, event: str, policy: Optional[str]) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics(event, policy or "default")
        except Exception:
            log.exception("the metrics callback raised")

    def _error(self, call: Call) -> None:
        self._metric("error", call.policy)

    # -- without Redis --------------------------------------------------------

    def _degrade(self, call: Call):
        mode = self.on_unavailable
        kind = call.kind
        if kind in ("decision", "multi") and call.limits:
            if mode == "local":
                peek = call.verb in READ_ONLY
                if kind == "decision":
                    key, limit, cost, name = call.limits[0]
                    reply = self.local.check(key, limit, cost, peek=peek)
                    result = replace(Decision.from_reply(reply, limit.period_s, name), degraded=True,
                                     degraded_by="local")
                    if not result.allowed and limit.shadow and call.verb == "CHECK":
                        result = replace(result, allowed=True, retry_after_ms=None, shadow_denied=True)
                        self._shadow(result, key)
                    self._count(call, result)
                    return result
                reply = self.local.mcheck([(k, l, c) for k, l, c, _ in call.limits], peek=peek)
                result = MultiDecision.from_reply(reply, [l.period_s for _, l, _, _ in call.limits],
                                                  [n for *_, n in call.limits])
                result = replace(result, degraded=True, degraded_by="local",
                                 each=tuple(replace(d, degraded=True, degraded_by="local") for d in result.each))
                return self._after_multi(call, result, None)
            allowed = mode == "open"
            each = tuple(Decision(allowed, l.limit if allowed else 0, l.limit, None, 0, l.period_s, n,
                                  True, mode) for _, l, _, n in call.limits)
            if kind == "decision":
                return self._counted(call, each[0])
            return self._counted(call, MultiDecision(allowed, each[0].remaining, each[0].limit, None, 0, 0,
                                                     each, True, mode))
        if kind == "throttle":
            max_burst, count, period_s, quantity = call.extra["throttle"]
            if mode == "local":
                try:
                    limit = Limit(count, period_s, "TOKEN", max_burst + 1)
                except SpecError:
                    limit = None
                if limit is not None:
                    r = self.local.check(call.keys[0], limit, quantity)
                    result = Throttle(not r[0], max_burst + 1, min(r[1], max_burst + 1),
                                      None if r[3] < 0 else -(-r[3] // 1000), -(-r[4] // 1000), True, "local")
                    return self._counted(call, result)
            allowed = mode != "closed"
            return self._counted(call, Throttle(not allowed, max_burst + 1, max_burst + 1 if allowed else 0,
                                                None, 0, True, mode))
        if kind == "acquire":
            max_leases, lease_ms, lease_id = call.extra["acquire"]
            if mode == "local":
                reply = self.local.acquire(call.keys[0], max_leases, lease_ms, lease_id)
                return self._counted(call, replace(Acquired.from_reply(reply), degraded=True, degraded_by="local"))
            allowed = mode == "open"
            return self._counted(call, Acquired(allowed, max_leases if allowed else 0, max_leases, None, 0,
                                                None, True, mode))
        if kind == "renew":
            key, lease_id, lease_ms = call.extra["renew"]
            if mode == "local" and lease_id is not None and lease_id.startswith("local-"):
                return self.local.renew(key, lease_id, lease_ms) == 1
            # A lease Redis granted cannot be renewed now; it ends by itself.
            return mode != "closed"
        if kind == "release":
            if mode == "local":
                return self.local.release(call.keys[0], [i for i in call.args if isinstance(i, str)])
            return 0
        raise redis.exceptions.ConnectionError("Redis is unavailable")  # RESET: not a decision


def decode(value) -> Optional[str]:
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
