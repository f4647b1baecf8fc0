"""What the sync and the asyncio limiters share: the calls each method
makes, how replies become results, and every decision made without Redis.
Only sending a call differs between them."""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import redis

from ._spec import (HOLD_MAX_TTL_MS, Hold, Limit, SpecError, check_actual, check_cost, check_hold_id,
                    check_hold_ttl, held_for)
from .breaker import CircuitBreaker
from .local import LocalLimiter
from .policies import DEFAULT_KEY, PolicyError, PolicySet, policy_key
from .results import (Acquired, Decision, Denied, HEADER_STYLES, MultiDecision, Reserved, Settled,
                      SettleStatus, Throttle)

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
# The holds key first, then the id (and ttl_ms), then numkeys and the keys.
HOLDS_KEYED = ("RESERVE", "SETTLE")
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


def command_for(backend: str, verb: str, keys: Sequence, args: Sequence, sha: Optional[str] = None,
                head: Sequence = ()) -> list:
    """The command that runs RATELIMIT.<verb> on `backend`. RESERVE and
    SETTLE: keys[0] is the holds key and `head` the id (and ttl_ms), which
    the module takes before numkeys and the library after its keys."""
    if backend == "module":
        if verb in HOLDS_KEYED:
            return [f"RATELIMIT.{verb}", keys[0], *head, len(keys) - 1, *keys[1:], *args]
        numkeys = [len(keys)] if verb in MULTI_KEY else []
        return [f"RATELIMIT.{verb}", *numkeys, *keys, *head, *args]
    function = f"ratelimit_{verb.lower()}"
    if backend == "functions":
        return ["FCALL_RO" if verb in READ_ONLY else "FCALL", function, len(keys), *keys, *head, *args]
    return ["EVALSHA", sha, len(keys), *keys, function, *head, *args]


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
    # RESERVE's and SETTLE's id (and ttl_ms): see command_for.
    head: List[Any] = field(default_factory=list)


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

    def _reserve_call(self, holds: str, hold_id: str, ttl_ms: int, limits: Sequence,
                      policy: Optional[str]) -> Call:
        """RESERVE: `limits` as MCHECK's, with a Hold(estimate) in place of
        a cost for a limit that holds rather than charges for good."""
        hold_id, ttl_ms = check_hold_id(hold_id), check_hold_ttl(ttl_ms)
        items, held = [], []
        for entry in limits:
            if len(entry) == 2:
                (key, limit), units, name = entry, 1, None
            elif len(entry) == 3:
                (key, limit, units), name = entry, None
            else:
                key, limit, units, name = entry
            limit = self._limit(limit, None, "FIXED", None)
            if limit.shadow:
                raise SpecError(f"{key}: a shadow limit cannot be reserved (SHADOW is for CHECK and MCHECK)")
            if not isinstance(units, Hold):
                check_cost(units)
            items.append((self._key(key), limit, units, name))
        if not 1 <= len(items) <= 16:
            raise ValueError("RESERVE takes 1 to 16 limits")
        holds = self._key(holds)
        if holds in (k for k, *_ in items):
            raise ValueError("the holds key cannot also be a limiter key")
        args: List[Any] = []
        for _, limit, units, _ in items:
            if isinstance(units, Hold):
                args += ["LIMIT", *limit.group("HOLD", units.estimate)]
            else:
                args += ["LIMIT", *limit.args(units)]
        return Call("RESERVE", [holds, *(k for k, *_ in items)], args, "reserve", policy, items,
                    extra={"holds": holds, "id": hold_id, "ttl_ms": ttl_ms}, head=[hold_id, ttl_ms])

    def _settle_call(self, holds: str, hold_id: str, limits: Sequence, policy: Optional[str]) -> Call:
        """SETTLE: `limits` as (key, limit, actual[, name])."""
        hold_id = check_hold_id(hold_id)
        items = []
        for entry in limits:
            if len(entry) == 3:
                (key, limit, actual), name = entry, None
            else:
                key, limit, actual, name = entry
            items.append((self._key(key), self._limit(limit, None, "FIXED", None), check_actual(actual), name))
        if not 1 <= len(items) <= 16:
            raise ValueError("SETTLE takes 1 to 16 limits")
        holds = self._key(holds)
        if holds in (k for k, *_ in items):
            raise ValueError("the holds key cannot also be a limiter key")
        args: List[Any] = []
        for _, limit, actual, _ in items:
            args += ["LIMIT", *limit.group("ACTUAL", actual)]
        return Call("SETTLE", [holds, *(k for k, *_ in items)], args, "settle", policy, items,
                    extra={"holds": holds, "id": hold_id}, head=[hold_id])

    def _extend_call(self, holds: str, hold_id: str, ttl_ms: int) -> Call:
        hold_id, ttl_ms = check_hold_id(hold_id), check_hold_ttl(ttl_ms)
        holds = self._key(holds)
        return Call("EXTEND", [holds], [hold_id, ttl_ms], "extend",
                    extra={"holds": holds, "id": hold_id, "ttl_ms": ttl_ms})

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
        if kind == "reserve":
            result = Reserved.from_reply(reply, [l.period_s for _, l, _, _ in call.limits],
                                         [n for *_, n in call.limits], call.extra["id"])
            return self._counted(call, result)
        if kind == "settle":
            return Settled.from_reply(reply, [l.period_s for _, l, _, _ in call.limits],
                                      [n for *_, n in call.limits])
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
        if kind in ("reserve", "settle", "extend"):
            return self._degrade_hold(call, mode)
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

    def _degrade_hold(self, call: Call, mode: str):
        """RESERVE, SETTLE and EXTEND without Redis. Local: the module's
        holds in-process (the estimate, capped as the module's defaults cap
        it, charged and recorded; SETTLE refunds or charges the rest; an
        expired hold refunded), marked degraded. Open: admitted, nothing
        held; closed: denied. SETTLE of a hold the local limiter never
        recorded charges the actual locally (status UNKNOWN), as the module
        does for an id it does not know."""
        extra = call.extra
        periods = [l.period_s for _, l, _, _ in call.limits]
        names = [n for *_, n in call.limits]
        if call.kind == "extend":
            if mode == "local":
                extended = self.local.extend(extra["holds"], extra["id"], extra["ttl_ms"])
                if extended is not None:
                    return extended
            # A hold Redis keeps cannot be extended now: it is refunded by
            # itself, and its SETTLE charges the actual in full.
            return min(extra["ttl_ms"], HOLD_MAX_TTL_MS) if mode != "closed" else 0
        if call.kind == "reserve":
            if mode == "local":
                groups = [(k, l, held_for(u.estimate, l.bucket), True) if isinstance(u, Hold) else (k, l, u, False)
                          for k, l, u, _ in call.limits]
                reply = self.local.reserve(extra["holds"], extra["id"], extra["ttl_ms"], groups)
                result = Reserved.from_reply(reply, periods, names, extra["id"])
                result = replace(result, degraded=True, degraded_by="local",
                                 each=tuple(replace(d, degraded=True, degraded_by="local") for d in result.each))
                return self._counted(call, result)
            allowed = mode == "open"
            each = tuple(Decision(allowed, l.limit if allowed else 0, l.limit, None, 0, l.period_s, n, True, mode)
                         for _, l, _, n in call.limits)
            return self._counted(call, Reserved(allowed, each[0].remaining, each[0].limit, None, 0, 0, each,
                                                True, mode, id=extra["id"]))
        if mode == "local":
            reply = self.local.settle(extra["holds"], extra["id"], [(k, l, a) for k, l, a, _ in call.limits])
            result = Settled.from_reply(reply, periods, names)
            return replace(result, degraded=True, degraded_by="local",
                           each=tuple(replace(d, degraded=True, degraded_by="local") for d in result.each))
        allowed = mode == "open"
        each = tuple(Decision(allowed, l.limit if allowed else 0, l.limit, None, 0, l.period_s, n, True, mode)
                     for _, l, _, n in call.limits)
        return Settled(SettleStatus.UNKNOWN, each, True, mode)


class ReservationBase:
    """What the sync and the asyncio reservations share: see
    client.Reservation."""

    def __init__(self, holds: str, limits: Sequence, ttl_ms: int, id: Optional[str] = None,
                 extend_every_s: Optional[float] = None, name: Optional[str] = None):
        self.holds = holds
        self.limits = list(limits)
        self.ttl_ms = check_hold_ttl(ttl_ms)
        self.id = check_hold_id(id) if id is not None else str(uuid.uuid4())
        self.extend_every_s = extend_every_s
        self.name = name
        # (key as given, limit, estimate, name) of every HOLD limit.
        self._held = []
        for entry in self.limits:
            if len(entry) >= 3 and isinstance(entry[2], Hold):
                self._held.append((entry[0], entry[1], entry[2].estimate, entry[3] if len(entry) > 3 else None))
        #: What the work cost: one number for every HOLD limit, or a mapping
        #: from a HOLD limit's key to its number. Unset at exit: each limit's
        #: estimate (0 when the block raised).
        self.actual: Union[None, int, Mapping[str, int]] = None
        #: RESERVE's result, once reserved.
        self.reserved: Optional[Reserved] = None
        #: SETTLE's result, once settled (None without a HOLD limit).
        self.settled: Optional[Settled] = None
        self.done = False
        #: True when an extension found the hold gone (expired and refunded,
        #: or settled elsewhere): its SETTLE will charge the actual in full.
        self.lost = False

    @property
    def held(self) -> int:
        """The units RESERVE held (the least among the HOLD limits)."""
        return self.reserved.held if self.reserved is not None else 0

    @property
    def degraded(self) -> bool:
        return bool(self.reserved is not None and self.reserved.degraded)

    def _admitted(self, reserved: Reserved) -> Reserved:
        self.reserved = reserved
        if not reserved.allowed:
            self.done = True
            limit = reserved.each[reserved.binding] if reserved.each else None
            key = self.limits[reserved.binding][0] if limit is not None else self.holds
            raise Denied(reserved, f"{key}: over its limit (reservation {self.id} denied)")
        return reserved

    def _interval_s(self) -> Optional[float]:
        """How often the block's hold is extended, or None for never."""
        if self.reserved is None or self.reserved.hold_ttl_ms is None or self.extend_every_s == 0:
            return None
        if self.extend_every_s is not None:
            return self.extend_every_s
        return max(self.reserved.hold_ttl_ms, 1) / 3000

    def _settle_limits(self, actual, failed: bool) -> List[tuple]:
        """SETTLE's (key, limit, actual, name) for each HOLD limit: `actual`
        (a number, or a mapping by key), else the estimate (0 after a failure)."""
        if actual is None:
            actual = self.actual
        known = {key for key, *_ in self._held}
        if isinstance(actual, Mapping):
            unknown = set(actual) - known
            if unknown:
                raise ValueError(f"not a HOLD limit of this reservation: {', '.join(sorted(map(str, unknown)))}")
        items = []
        for key, limit, estimate, name in self._held:
            value = actual.get(key) if isinstance(actual, Mapping) else actual
            if value is None:
                value = 0 if failed else estimate
            items.append((key, limit, value, name))
        return items

    def _check_reserved(self) -> None:
        if self.reserved is None:
            raise RuntimeError("reserve() first")


def decode(value) -> Optional[str]:
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
