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
        if self.algorithm != "FIXED":
            args += ["ALGORITHM", self.algorithm]
        if self.burst is not None:
            args += ["BURST", self.burst]
        return args

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
