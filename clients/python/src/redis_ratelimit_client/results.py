"""Typed replies, and the HTTP headers they map to.

Every reply integer of the module is at most 2^53 - 1; the -1 sentinels of
the replies become None here."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# The header styles `headers()` can write.
#   "ietf":   RateLimit and RateLimit-Policy as structured fields
#             (draft-ietf-httpapi-ratelimit-headers-08 and later):
#             RateLimit-Policy: "api";q=100;w=60   RateLimit: "api";r=42;t=17
#   "legacy": RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (and
#             RateLimit-Policy: 100;w=60), as drafts up to -07 and many
#             existing clients read them
#   "both":   both sets
#   "none":   only Retry-After on a denial
HEADER_STYLES = ("ietf", "legacy", "both", "none")


def _ceil_s(ms: int) -> int:
    """Whole seconds, rounded up: a client that waits that long is never early."""
    return math.ceil(ms / 1000)


def _sf_string(name: str) -> str:
    """`name` as a structured-field String (RFC 8941): printable ASCII,
    with `"` and `\\` escaped."""
    cleaned = "".join(c if 0x20 <= ord(c) < 0x7F else "_" for c in name)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _none_if_negative(value: int) -> Optional[int]:
    return None if value < 0 else value


@dataclass(frozen=True)
class Decision:
    """The answer to CHECK or PEEK (or one limit of MCHECK / MPEEK).

    `remaining`: units still admissible now (after this request, when a
    CHECK admitted it; PEEK deducts nothing). `retry_after_ms`: None when
    allowed, or when the cost can never fit. `degraded`: not Redis' answer
    but the unavailability policy's (`degraded_by`: "open", "closed" or
    "local"). `shadow_denied`: a shadow limit would have denied this
    request; it was allowed."""

    allowed: bool
    remaining: int
    limit: int
    retry_after_ms: Optional[int]
    reset_after_ms: int
    period_s: Optional[int] = None
    policy: Optional[str] = None
    degraded: bool = False
    degraded_by: Optional[str] = None
    shadow_denied: bool = False

    @classmethod
    def from_reply(cls, reply: Sequence[int], period_s: Optional[int] = None,
                   policy: Optional[str] = None) -> "Decision":
        allowed, remaining, limit, retry_after_ms, reset_after_ms = (int(v) for v in reply[:5])
        return cls(allowed == 1, remaining, limit, _none_if_negative(retry_after_ms),
                   reset_after_ms, period_s, policy)

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def retry_after_s(self) -> Optional[int]:
        """Retry-After, in whole seconds rounded up; None when allowed or never."""
        return None if self.retry_after_ms is None else _ceil_s(self.retry_after_ms)

    @property
    def reset_after_s(self) -> int:
        return _ceil_s(self.reset_after_ms)

    def _knows_counts(self) -> bool:
        # Failing open or closed, Redis' counts are unknown: only the limit is.
        return not self.degraded or self.degraded_by == "local"

    def headers(self, style: str = "ietf") -> Dict[str, str]:
        return _headers([self], self, style)


@dataclass(frozen=True)
class MultiDecision:
    """The answer to MCHECK or MPEEK: the whole request's verdict, the
    numbers of the binding limit (the one to report), and each limit's own
    `Decision` in key order. `binding` is the binding limit's index, from 0
    (the reply's position minus one)."""

    allowed: bool
    remaining: int
    limit: int
    retry_after_ms: Optional[int]
    reset_after_ms: int
    binding: int
    each: Tuple[Decision, ...]
    degraded: bool = False
    degraded_by: Optional[str] = None
    shadow_denied: bool = False

    @classmethod
    def from_reply(cls, reply: Sequence, periods: Sequence[Optional[int]] = (),
                   policies: Sequence[Optional[str]] = ()) -> "MultiDecision":
        allowed, remaining, limit, retry_after_ms, reset_after_ms, binding = (int(v) for v in reply[:6])
        each = []
        for i, one in enumerate(reply[6]):
            each.append(Decision.from_reply(one, periods[i] if i < len(periods) else None,
                                            policies[i] if i < len(policies) else None))
        return cls(allowed == 1, remaining, limit, _none_if_negative(retry_after_ms),
                   reset_after_ms, binding - 1, tuple(each))

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def binding_decision(self) -> Decision:
        return self.each[self.binding]

    @property
    def policy(self) -> Optional[str]:
        return self.binding_decision.policy if self.each else None

    @property
    def retry_after_s(self) -> Optional[int]:
        return None if self.retry_after_ms is None else _ceil_s(self.retry_after_ms)

    def _knows_counts(self) -> bool:
        return not self.degraded or self.degraded_by == "local"

    def headers(self, style: str = "ietf") -> Dict[str, str]:
        return _headers(list(self.each), self, style)


@dataclass(frozen=True)
class Reserved(MultiDecision):
    """RATELIMIT.RESERVE's reply: MCHECK's (the verdict, the binding
    limit's numbers, `each` limit's Decision, `headers()`), then `held`, the
    units held under `id` (the least among its HOLD limits, after the
    module's cap; 0 when denied or without a HOLD limit) and `hold_ttl_ms`,
    the milliseconds until the hold is refunded unless settled (None when
    nothing is recorded: denied, or an id settled already). A replayed
    RESERVE (an id already recorded) replies the first reply and charges
    nothing."""

    held: int = 0
    hold_ttl_ms: Optional[int] = None
    id: Optional[str] = None

    @classmethod
    def from_reply(cls, reply: Sequence, periods: Sequence[Optional[int]] = (),
                   policies: Sequence[Optional[str]] = (), id: Optional[str] = None) -> "Reserved":
        multi = MultiDecision.from_reply(reply[:7], periods, policies)
        return cls(**{f: getattr(multi, f) for f in MultiDecision.__dataclass_fields__},
                   held=int(reply[7]), hold_ttl_ms=_none_if_negative(int(reply[8])), id=id)


class SettleStatus(enum.IntEnum):
    """What SETTLE found under the id (the reply's first integer)."""

    #: Nothing: never reserved, or expired and refunded already; the actual
    #: cost was charged in full.
    UNKNOWN = 0
    #: A live hold, now settled: each key charged actual − held.
    SETTLED = 1
    #: Settled already: nothing was charged (a retried SETTLE is safe).
    ALREADY_SETTLED = 2


@dataclass(frozen=True)
class Settled:
    """RATELIMIT.SETTLE's reply: `status` (a SettleStatus) and `each`
    limit's Decision as PEEK of one unit shows it after the settle (in debt:
    not allowed, 0 remaining, `retry_after_ms` until the window holding the
    debt ends). `degraded`: decided without Redis."""

    status: SettleStatus
    each: Tuple[Decision, ...]
    degraded: bool = False
    degraded_by: Optional[str] = None

    @classmethod
    def from_reply(cls, reply: Sequence, periods: Sequence[Optional[int]] = (),
                   policies: Sequence[Optional[str]] = ()) -> "Settled":
        each = tuple(Decision.from_reply(one, periods[i] if i < len(periods) else None,
                                         policies[i] if i < len(policies) else None)
                     for i, one in enumerate(reply[1]))
        return cls(SettleStatus(int(reply[0])), each)

    @property
    def settled(self) -> bool:
        """Whether this SETTLE ended a live hold."""
        return self.status == SettleStatus.SETTLED


def _headers(limits: List[Decision], verdict, style: str) -> Dict[str, str]:
    if style not in HEADER_STYLES:
        raise ValueError(f"header style must be one of {', '.join(HEADER_STYLES)}")
    headers: Dict[str, str] = {}
    knows = verdict._knows_counts()
    if style in ("ietf", "both"):
        policies, states = [], []
        for i, d in enumerate(limits):
            name = _sf_string(d.policy or ("default" if len(limits) == 1 else f"limit{i + 1}"))
            window = f";w={d.period_s}" if d.period_s else ""
            policies.append(f"{name};q={d.limit}{window}")
            if knows:
                states.append(f"{name};r={d.remaining};t={d.reset_after_s}")
        headers["RateLimit-Policy"] = ", ".join(policies)
        if states:
            headers["RateLimit"] = ", ".join(states)
    if style in ("legacy", "both"):
        headers["RateLimit-Limit"] = str(verdict.limit)
        if knows:
            headers["RateLimit-Remaining"] = str(verdict.remaining)
            headers["RateLimit-Reset"] = str(_ceil_s(verdict.reset_after_ms))
        if style == "legacy":
            windows = [f"{d.limit};w={d.period_s}" for d in limits if d.period_s]
            if windows:
                headers["RateLimit-Policy"] = ", ".join(windows)
    if not verdict.allowed and verdict.retry_after_ms is not None:
        headers["Retry-After"] = str(_ceil_s(verdict.retry_after_ms))
    return headers


@dataclass(frozen=True)
class Throttle:
    """RATELIMIT.THROTTLE's (redis-cell's CL.THROTTLE's) reply: `limited`,
    the total `limit` (max_burst + 1), `remaining`, `retry_after_s` (None
    when allowed) and `reset_after_s`, in whole seconds."""

    limited: bool
    limit: int
    remaining: int
    retry_after_s: Optional[int]
    reset_after_s: int
    degraded: bool = False
    degraded_by: Optional[str] = None

    @classmethod
    def from_reply(cls, reply: Sequence[int]) -> "Throttle":
        limited, limit, remaining, retry_after_s, reset_after_s = (int(v) for v in reply[:5])
        return cls(limited == 1, limit, remaining, _none_if_negative(retry_after_s), reset_after_s)

    @property
    def allowed(self) -> bool:
        return not self.limited


@dataclass(frozen=True)
class Acquired:
    """RATELIMIT.ACQUIRE's reply: `acquired`, slots `remaining`, `max`,
    `retry_after_ms` (None when acquired, or when a slot never frees by
    itself), `reset_after_ms` and the lease `id` (None when not acquired)."""

    acquired: bool
    remaining: int
    max: int
    retry_after_ms: Optional[int]
    reset_after_ms: int
    id: Optional[str]
    degraded: bool = False
    degraded_by: Optional[str] = None

    @classmethod
    def from_reply(cls, reply: Sequence) -> "Acquired":
        acquired, remaining, limit, retry_after_ms, reset_after_ms = (int(v) for v in reply[:5])
        lease_id = reply[5]
        if isinstance(lease_id, bytes):
            lease_id = lease_id.decode("utf-8", "surrogateescape")
        return cls(acquired == 1, remaining, limit, _none_if_negative(retry_after_ms),
                   reset_after_ms, lease_id)

    def __bool__(self) -> bool:
        return self.acquired

    @property
    def retry_after_s(self) -> Optional[int]:
        return None if self.retry_after_ms is None else _ceil_s(self.retry_after_ms)

    def headers(self) -> Dict[str, str]:
        if self.acquired or self.retry_after_ms is None:
            return {}
        return {"Retry-After": str(_ceil_s(self.retry_after_ms))}


class Denied(Exception):
    """Raised by the helpers that refuse to run work over a limit (`lease`,
    `reservation`, the framework integrations when told to raise). `result`
    is the Decision, MultiDecision, Reserved or Acquired that said no."""

    def __init__(self, result, message: str = ""):
        super().__init__(message or "rate limited")
        self.result = result

    def headers(self, style: str = "ietf") -> Dict[str, str]:
        if isinstance(self.result, Acquired):
            return self.result.headers()
        return self.result.headers(style)
