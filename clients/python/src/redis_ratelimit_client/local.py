"""The module's algorithms in-process, for when Redis cannot be asked.

The same arithmetic as the module's `src/limiter/` (fixed window, sliding
window, token bucket in ticks of 1/limit ms, leases), on Python's exact
integers, over state kept in this process only: each instance limits on its
own, so N instances admit up to N times a limit while they decide locally.
Memory is bounded: at most `max_keys` keys are kept, the least recently used
dropped first (a dropped key starts afresh, which only ever admits more).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ._spec import Limit

# (allowed, remaining, limit, retry_after_ms or -1, reset_after_ms): a reply.
Reply = Tuple[int, int, int, int, int]


def _div_ceil(a: int, b: int) -> int:
    return -(-a // b)


def fixed(state, limit: Limit, cost: int, now_ms: int):
    """src/limiter/fixed_window.rs: state (count, window end ms)."""
    period_ms = limit.period_ms
    new_end = now_ms + period_ms
    if state is not None and state[1] > new_end:
        count, end = state[0], new_end
    elif state is not None and state[1] > now_ms:
        count, end = state
    else:
        count, end = 0, new_end
    fits = cost <= limit.limit - count
    after = count + cost if fits else count
    store = (after, end) if cost > 0 and fits else None
    retry = -1 if fits or cost > limit.limit else end - now_ms
    reset = end - now_ms if after > 0 else 0
    return (int(fits), max(0, limit.limit - after), limit.limit, retry, reset), store


def sliding(state, limit: Limit, cost: int, now_ms: int):
    """src/limiter/sliding_window.rs: state (previous, current, expires at ms),
    windows aligned to the epoch, the estimate in unit-milliseconds."""
    period = limit.period_ms
    window, elapsed = divmod(now_ms, period)
    previous = current = 0
    if state is not None:
        prev_s, cur_s, expires = state
        bound = (window + 2) * period
        stored_window = (expires - 1) // period - 1 if expires <= bound else window
        if stored_window == window:
            previous, current = prev_s, cur_s
        elif stored_window + 1 == window:
            previous = cur_s
    budget = limit.limit * period

    def weighted(prev, cur):
        return prev * (period - elapsed) + cur * period

    fits = weighted(previous, current) + cost * period <= budget
    after = current + cost if fits else current
    store = (previous, after, (window + 2) * period) if cost > 0 and fits else None
    remaining = max(0, budget - weighted(previous, after)) // period
    if fits or cost > limit.limit:
        retry = -1
    else:
        retry = _first_admitting(previous, current, window, elapsed, limit, cost) - now_ms
    start = window * period
    if after > 0:
        empty_at = start + 2 * period
    elif previous > 0:
        empty_at = start + period
    else:
        empty_at = now_ms
    return (int(fits), remaining, limit.limit, retry, max(0, empty_at - now_ms)), store


def _first_fitting(previous: int, room: int, period: int) -> Optional[int]:
    if previous == 0:
        return 0
    elapsed = max(0, period - (room * period) // previous)
    return elapsed if elapsed < period else None


def _first_admitting(previous, current, window, elapsed, limit: Limit, cost) -> int:
    period = limit.period_ms
    start = window * period
    room = limit.limit - current - cost
    if room >= 0:
        e = _first_fitting(previous, room, period)
        if e is not None:
            return start + max(e, elapsed)
    e = _first_fitting(current, limit.limit - cost, period)
    if e is not None:
        return start + period + e
    return start + 2 * period


def token(state, limit: Limit, cost: int, now_ms: int):
    """src/limiter/token_bucket.rs: state = the instant the bucket is full
    again, in ticks of 1/limit ms (exact here, no rounding to store)."""
    ticks_per_ms = limit.limit
    token_ticks = limit.period_ms
    capacity = limit.bucket * limit.period_ms
    now = now_ms * ticks_per_ms
    full_at = now if state is None else max(state, now)
    full_at = min(full_at, now + capacity)
    asked = cost * token_ticks
    fits = full_at - now + asked <= capacity
    after = full_at + asked if fits else full_at
    store = after if cost > 0 and fits else None
    if fits or cost > limit.bucket:
        retry = -1
    else:
        retry = max(0, _div_ceil(full_at + asked - capacity, ticks_per_ms) - now_ms)
    debt = after - now
    return (int(fits), (capacity - debt) // token_ticks, limit.limit, retry,
            _div_ceil(debt, ticks_per_ms)), store


ALGORITHMS: Dict[str, Callable] = {"FIXED": fixed, "SLIDING": sliding, "TOKEN": token}


def looked(asked: Reply, as_is: Reply) -> Reply:
    """PEEK's reply: whether and when `asked` passes, with the counts as they are."""
    return (asked[0], as_is[1], asked[2], asked[3], as_is[4])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalLimiter:
    """In-process limiters and leases over at most `max_keys` keys (LRU)."""

    def __init__(self, max_keys: int = 10_000, clock: Callable[[], int] = now_ms):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._states: "OrderedDict[str, tuple]" = OrderedDict()
        self._lock = threading.Lock()
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()

    def _get(self, key: str, kind: str):
        entry = self._states.get(key)
        if entry is None or entry[0] != kind:
            return None
        self._states.move_to_end(key)
        return entry[1]

    def _put(self, key: str, kind: str, state) -> None:
        self._states[key] = (kind, state)
        self._states.move_to_end(key)
        while len(self._states) > self.max_keys:
            self._states.popitem(last=False)

    def check(self, key: str, limit: Limit, cost: int = 1, peek: bool = False) -> Reply:
        algorithm = ALGORITHMS[limit.algorithm]
        with self._lock:
            now = self._clock()
            state = self._get(key, limit.algorithm)
            reply, store = algorithm(state, limit, cost, now)
            if peek:
                return looked(reply, algorithm(state, limit, 0, now)[0])
            if store is not None:
                self._put(key, limit.algorithm, store)
            return reply

    def mcheck(self, limits: Sequence[Tuple[str, Limit, int]], peek: bool = False):
        """MCHECK's reply: all limits or none, the binding one as the module
        picks it."""
        with self._lock:
            now = self._clock()
            decided = []
            for key, limit, cost in limits:
                algorithm = ALGORITHMS[limit.algorithm]
                state = self._get(key, limit.algorithm)
                reply, store = algorithm(state, limit, cost, now)
                decided.append((key, limit, cost, algorithm, state, reply, store))
            allowed = all(d[5][0] for d in decided)
            each: List[Reply] = []
            for key, limit, cost, algorithm, state, reply, store in decided:
                if allowed and not peek:
                    if store is not None:
                        self._put(key, limit.algorithm, store)
                    each.append(reply)
                else:
                    each.append(looked(reply, algorithm(state, limit, 0, now)[0]))
        binding = _binding(each, allowed)
        b = each[binding]
        retry = -1 if allowed else b[3]
        return (int(allowed), b[1], b[2], retry, b[4], binding + 1, [list(e) for e in each])

    def acquire(self, key: str, max_leases: int, lease_ms: int, lease_id: Optional[str] = None):
        with self._lock:
            now = self._clock()
            leases: Dict[str, int] = dict(self._get(key, "LEASES") or {})
            leases = {i: d for i, d in leases.items() if d > now}
            if lease_id is not None and lease_id in leases:
                leases[lease_id] = now + lease_ms
                acquired = True
            elif len(leases) < max_leases:
                if lease_id is None:
                    self._next_id += 1
                    lease_id = f"local-{self._next_id:026x}"
                leases[lease_id] = now + lease_ms
                acquired = True
            else:
                acquired = False
            self._put(key, "LEASES", leases)
            deadlines = sorted(leases.values())
            reset = max(deadlines) - now if deadlines else 0
            if acquired:
                return [1, max(0, max_leases - len(leases)), max_leases, -1, reset, lease_id]
            # The first instant fewer than max are live.
            retry = deadlines[len(deadlines) - max_leases] - now
            return [0, 0, max_leases, retry, reset, None]

    def release(self, key: str, ids: Sequence[str]) -> int:
        with self._lock:
            now = self._clock()
            leases = dict(self._get(key, "LEASES") or {})
            ended = sum(1 for i in ids if leases.pop(i, 0) > now)
            self._put(key, "LEASES", leases)
            return ended

    def renew(self, key: str, lease_id: str, lease_ms: int) -> int:
        with self._lock:
            now = self._clock()
            leases = dict(self._get(key, "LEASES") or {})
            if leases.get(lease_id, 0) <= now:
                return 0
            leases[lease_id] = now + lease_ms
            self._put(key, "LEASES", leases)
            return 1


def _binding(each: Sequence[Reply], allowed: bool) -> int:
    """src/limiter/all_of.rs: denied, the denying limit freeing up last (a
    cost that never fits first); admitted, the least room left
    (remaining / limit); the first of equals."""
    best = 0
    if not allowed:
        def rank(r):  # larger binds
            return (2, 0) if r[3] < 0 else (1, r[3])
        candidates = [i for i, r in enumerate(each) if not r[0]]
        best = candidates[0]
        for i in candidates[1:]:
            if rank(each[i]) > rank(each[best]):
                best = i
        return best
    for i in range(1, len(each)):
        # remaining_i / limit_i < remaining_best / limit_best, exactly.
        if each[i][1] * each[best][2] < each[best][1] * each[i][2]:
            best = i
    return best
