"""Limits as values: the arguments of a CHECK after its key, parsed and
checked as the module checks them, so that a bad policy is refused before it
is written and never reaches a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

# The module's bounds (src/limiter/mod.rs, token_bucket.rs).
MAX_LIMIT = 10**15
MAX_COST = MAX_LIMIT
MAX_PERIOD_S = 10**9
# A full bucket must refill within this many seconds.
MAX_REFILL_S = 10**9
ALGORITHMS = ("FIXED", "SLIDING", "TOKEN")
# Holds (src/limiter/holds.rs): a RESERVE's or EXTEND's ttl_ms, an id's
# length; and the module's defaults of `hold-max-percent` and
# `hold-max-ttl-ms`, which the local limiter applies while Redis is down.
MAX_HOLD_TTL_MS = 86_400_000
MAX_ID_BYTES = 64
HOLD_MAX_PERCENT = 50
HOLD_MAX_TTL_MS = 60_000


class SpecError(ValueError):
    """A limit that the module would refuse, or that is no limit at all."""


def _integer(text: Union[str, int], what: str, low: int, high: int, message: str) -> int:
    if isinstance(text, bool):
        raise SpecError(message)
    if isinstance(text, int):
        value = text
    else:
        # As Redis reads integers: digits only, no sign, no leading zeros.
        if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
            raise SpecError(message)
        value = int(text)
    if not low <= value <= high:
        raise SpecError(message)
    return value


def check_cost(cost: int) -> int:
    return _integer(cost, "cost", 0, MAX_COST,
                    f"cost must be a non-negative integer (at most {MAX_COST})")


def check_actual(actual: int) -> int:
    return _integer(actual, "actual", 0, MAX_COST,
                    f"actual must be a non-negative integer (at most {MAX_COST})")


def check_hold_ttl(ttl_ms: int) -> int:
    return _integer(ttl_ms, "ttl_ms", 1, MAX_HOLD_TTL_MS,
                    f"ttl_ms must be an integer from 1 to {MAX_HOLD_TTL_MS}")


def check_hold_id(hold_id) -> str:
    """A hold's id as the module takes it: 1 to 64 bytes, not NOW (the
    fallback's clock word)."""
    if isinstance(hold_id, bytes):
        raw = hold_id
        hold_id = hold_id.decode("utf-8", "surrogateescape")
    elif isinstance(hold_id, str):
        raw = hold_id.encode("utf-8", "surrogateescape")
    else:
        raise SpecError("id must be a string")
    if not 1 <= len(raw) <= MAX_ID_BYTES or hold_id.upper() == "NOW":
        raise SpecError(f"id must be 1 to {MAX_ID_BYTES} bytes and not NOW")
    return hold_id


def held_for(estimate: int, capacity: int, percent: int = HOLD_MAX_PERCENT) -> int:
    """What RESERVE holds for `estimate` on a limit that takes at most
    `capacity` per request: the estimate, but at most `percent`% of the
    capacity (rounded down, at least 1); 0 for 0 (src/limiter/holds.rs)."""
    if estimate == 0:
        return 0
    cap = (capacity // 100) * percent + ((capacity % 100) * percent) // 100
    return min(estimate, max(1, cap))


@dataclass(frozen=True)
class Hold:
    """In a RESERVE's limits, in place of a cost: hold `estimate` units
    under the request's id until SETTLE charges the actual cost (a refund or
    a debt), rather than charging a cost for good:

        limiter.reserve("{org:7}:holds", "req-81", 60_000,
                        [("{org:7}:rpm", "600 60"),                  # COST 1, for good
                         ("{org:7}:tpm", "200000 60", Hold(3000))])  # HOLD 3000
    """

    estimate: int

    def __post_init__(self):
        _integer(self.estimate, "estimate", 0, MAX_COST,
                 f"estimate must be a non-negative integer (at most {MAX_COST})")


@dataclass(frozen=True)
class Limit:
    """`limit` units per `period_s` seconds with `algorithm` (FIXED, SLIDING
    or TOKEN; `burst`: the token bucket's size, default `limit`).

    `shadow`: counted as usual but never denied (see the README's shadow
    mode); it is the client's, never sent to the server."""

    limit: int
    period_s: int
    algorithm: str = "FIXED"
    burst: Optional[int] = None
    shadow: bool = False

    def __post_init__(self):
        _integer(self.limit, "limit", 1, MAX_LIMIT,
                 f"limit must be a positive integer (at most {MAX_LIMIT})")
        _integer(self.period_s, "period", 1, MAX_PERIOD_S,
                 f"period must be a positive integer number of seconds (at most {MAX_PERIOD_S})")
        algorithm = str(self.algorithm).upper()
        if algorithm not in ALGORITHMS:
            raise SpecError("ALGORITHM must be FIXED, SLIDING or TOKEN")
        object.__setattr__(self, "algorithm", algorithm)
        if self.burst is not None:
            if algorithm != "TOKEN":
                raise SpecError("BURST is only valid with ALGORITHM TOKEN")
            _integer(self.burst, "burst", 1, MAX_LIMIT,
                     f"burst must be a positive integer (at most {MAX_LIMIT})")
        if algorithm == "TOKEN":
            burst = self.burst if self.burst is not None else self.limit
            if burst * self.period_s > MAX_REFILL_S * self.limit:
                raise SpecError("burst is too large for this rate: a full bucket must refill "
                                f"within {MAX_REFILL_S} seconds")

    @property
    def bucket(self) -> int:
        """The most one request may take: `burst` for a token bucket, else `limit`."""
        return self.burst if self.burst is not None else self.limit

    @property
    def period_ms(self) -> int:
        return self.period_s * 1000

    def args(self, cost: int = 1) -> List[Union[str, int]]:
        """CHECK's arguments after the key, for a request of `cost`."""
        args: List[Union[str, int]] = [self.limit, self.period_s]
        if cost != 1:
            args += ["COST", cost]
        return args + self.options()

    def group(self, word: str, value: int) -> List[Union[str, int]]:
        """A RESERVE or SETTLE group after LIMIT: `limit period <word>
        <value>` and the options (`HOLD 3000`, `ACTUAL 1830`)."""
        return [self.limit, self.period_s, word, value, *self.options()]

    def options(self) -> List[Union[str, int]]:
        options: List[Union[str, int]] = []
        if self.algorithm != "FIXED":
            options += ["ALGORITHM", self.algorithm]
        if self.burst is not None:
            options += ["BURST", self.burst]
        return options

    def spec(self) -> str:
        """The limit as a policy string: `100 60 ALGORITHM TOKEN BURST 20`."""
        words = [str(a) for a in self.args()]
        if self.shadow:
            words.append("SHADOW")
        return " ".join(words)

    def without_shadow(self) -> "Limit":
        return Limit(self.limit, self.period_s, self.algorithm, self.burst)

    @classmethod
    def parse(cls, spec: Union[str, bytes, Sequence[str]]) -> "Limit":
        """A limit from CHECK's arguments after the key, e.g.
        `"100 60 ALGORITHM TOKEN BURST 20"`; options in any order and any
        case, each once; `SHADOW` marks the limit as shadow. `COST` is a
        request's, not a limit's, and is refused."""
        if isinstance(spec, bytes):
            spec = spec.decode("utf-8", "replace")
        words = spec.split() if isinstance(spec, str) else list(spec)
        if len(words) < 2:
            raise SpecError("a limit is `limit period [ALGORITHM FIXED|SLIDING|TOKEN] "
                            "[BURST burst] [SHADOW]`")
        options = {}
        rest = words[2:]
        i = 0
        while i < len(rest):
            word = rest[i].upper()
            if word in options:
                raise SpecError(f"{word} given twice")
            if word == "SHADOW":
                options[word] = True
                i += 1
                continue
            if word == "COST":
                raise SpecError("COST belongs to a request, not to a limit")
            if word not in ("ALGORITHM", "BURST"):
                raise SpecError(f"unknown option {rest[i]!r} (expected ALGORITHM, BURST or SHADOW)")
            if i + 1 >= len(rest):
                raise SpecError(f"{word} needs a value")
            options[word] = rest[i + 1]
            i += 2
        burst = options.get("BURST")
        if burst is not None:
            burst = _integer(burst, "burst", 1, MAX_LIMIT,
                             f"burst must be a positive integer (at most {MAX_LIMIT})")
        return cls(
            limit=_integer(words[0], "limit", 1, MAX_LIMIT,
                           f"limit must be a positive integer (at most {MAX_LIMIT})"),
            period_s=_integer(words[1], "period", 1, MAX_PERIOD_S,
                              f"period must be a positive integer number of seconds (at most {MAX_PERIOD_S})"),
            algorithm=options.get("ALGORITHM", "FIXED"),
            burst=burst,
            shadow=bool(options.get("SHADOW", False)),
        )
