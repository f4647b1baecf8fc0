"""The module's algorithms in-process, for when Redis cannot be asked.

The same arithmetic as the module's `src/limiter/` (fixed window, sliding
window, token bucket in ticks of 1/limit ms, leases, holds), on Python's exact
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

from ._spec import HOLD_MAX_TTL_MS, Limit

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


def _counts_at(state, period: int, now_ms: int):
    """A sliding window's (previous, current) counts as seen from now."""
    window = now_ms // period
    if state is None:
        return 0, 0
    prev_s, cur_s, expires = state
    bound = (window + 2) * period
    stored_window = (expires - 1) // period - 1 if expires <= bound else window
    if stored_window == window:
        return prev_s, cur_s
    if stored_window + 1 == window:
        return cur_s, 0
    return 0, 0


def sliding(state, limit: Limit, cost: int, now_ms: int):
    """src/limiter/sliding_window.rs: state (previous, current, expires at ms),
    windows aligned to the epoch, the estimate in unit-milliseconds."""
    period = limit.period_ms
    window, elapsed = divmod(now_ms, period)
    previous, current = _counts_at(state, period, now_ms)
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

MAX_COUNT = 2**53 - 1
# A refund that leaves a bucket full deletes the key, as the module does.
DELETE = object()


def force(state, limit: Limit, units: int, now_ms: int):
    """The state after taking `units` past the limit (a SETTLE's debt), as
    the module's `force`: the window in force counts them; a bucket goes
    down to empty and no further. None: nothing to store."""
    if units == 0:
        return None
    if limit.algorithm == "FIXED":
        count, end = fixed_window_at(state, limit, now_ms)
        return (min(count + units, MAX_COUNT), end)
    if limit.algorithm == "SLIDING":
        period = limit.period_ms
        previous, current = _counts_at(state, period, now_ms)
        return (previous, min(current + units, MAX_COUNT), (now_ms // period + 2) * period)
    now = now_ms * limit.limit
    capacity = limit.bucket * limit.period_ms
    full_at = now if state is None else min(max(state, now), now + capacity)
    return min(full_at + units * limit.period_ms, now + capacity)


def refund(state, limit: Limit, units: int, charged_at_ms: int, now_ms: int):
    """The state after giving back `units` charged at `charged_at_ms`, as the
    module's `refund`: a fixed window only while the window charged lasts, a
    sliding window into the count of the window charged (current or
    previous), a bucket never above full. None: nothing changes; DELETE: a
    bucket left full."""
    if state is None or units == 0:
        return None
    if limit.algorithm == "FIXED":
        count, end = state
        given = min(units, count)
        if end - limit.period_ms <= charged_at_ms < end and now_ms < end and given > 0:
            return (count - given, end)
        return None
    if limit.algorithm == "SLIDING":
        period = limit.period_ms
        window = now_ms // period
        previous, current = _counts_at(state, period, now_ms)
        charged = charged_at_ms // period
        if charged == window and min(units, current) > 0:
            current -= min(units, current)
        elif charged + 1 == window and min(units, previous) > 0:
            previous -= min(units, previous)
        else:
            return None
        return (previous, current, (window + 2) * period)
    now = now_ms * limit.limit
    full_at = min(max(state, now), now + limit.bucket * limit.period_ms)
    given = max(full_at - units * limit.period_ms, now)
    if given >= full_at:
        return None
    return DELETE if given <= now else given


def fixed_window_at(state, limit: Limit, now_ms: int) -> Tuple[int, int]:
    """A fixed window's (count, end) as CHECK sees it now."""
    new_end = now_ms + limit.period_ms
    if state is not None and state[1] > new_end:
        return state[0], new_end
    if state is not None and state[1] > now_ms:
        return state
    return 0, new_end


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
            return self._mcheck(limits, peek, self._clock())

    def _mcheck(self, limits: Sequence[Tuple[str, Limit, int]], peek: bool, now: int):
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
        # Picked on the answers with each cost, as the module picks it: an
        # MPEEK shows the counts as they are, which can rank otherwise.
        binding = _binding([d[5] for d in decided], allowed)
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

    # -- holds: RESERVE, SETTLE, EXTEND as the module keeps them, in-process.
    # A holds key's entry maps each id to a record: ("L", deadline,
    # charged_at, ttl_ms, reply, [(key, limit, held)]) for a live hold,
    # ("S", deadline, reply) for a settled one.

    def _holds(self, holds: str, now: int) -> Dict[str, tuple]:
        """The records of `holds` after refunding and forgetting those whose
        deadline has passed (the module's sweep)."""
        records = dict(self._get(holds, "HOLDS") or {})
        for hold_id, record in list(records.items()):
            if record[1] > now:
                continue
            del records[hold_id]
            if record[0] == "L":
                for key, limit, held in record[5]:
                    self._refund(key, limit, held, record[2], now)
        return records

    def _refund(self, key: str, limit: Limit, units: int, charged_at: int, now: int) -> None:
        state = self._get(key, limit.algorithm)
        after = refund(state, limit, units, charged_at, now)
        if after is DELETE:
            self._states.pop(key, None)
        elif after is not None:
            self._put(key, limit.algorithm, after)

    def _keep_holds(self, holds: str, records: Dict[str, tuple]) -> None:
        if records:
            self._put(holds, "HOLDS", records)
        else:
            self._states.pop(holds, None)

    def reserve(self, holds: str, hold_id: str, ttl_ms: int,
                groups: Sequence[Tuple[str, Limit, int, bool]]) -> list:
        """RESERVE's reply: MCHECK of `groups` (key, limit, units, held?),
        the units already capped, then held and hold_ttl_ms (-1: none)."""
        with self._lock:
            now = self._clock()
            records = self._holds(holds, now)
            record = records.get(hold_id)
            if record is not None:
                reply = [*record[4], min((h for *_, h in record[5]), default=0), record[1] - now] \
                    if record[0] == "L" else [*record[2], 0, -1]
            else:
                reply = list(self._mcheck([(k, l, units) for k, l, units, _ in groups], False, now))
                if reply[0]:
                    ttl = min(ttl_ms, HOLD_MAX_TTL_MS)
                    kept = [(k, l, units) for k, l, units, held in groups if held]
                    records[hold_id] = ("L", now + ttl, now, ttl, reply, kept)
                    reply += [min((h for *_, h in kept), default=0), ttl]
                else:
                    reply += [0, -1]
            self._keep_holds(holds, records)
            return reply

    def settle(self, holds: str, hold_id: str, groups: Sequence[Tuple[str, Limit, int]]) -> list:
        """SETTLE's reply: [status, each limit as PEEK of one unit shows it]."""
        with self._lock:
            now = self._clock()
            records = self._holds(holds, now)
            record = records.get(hold_id)
            status = 0 if record is None else 1 if record[0] == "L" else 2
            if status != 2:
                held_at = {k: h for k, _, h in record[5]} if record is not None else {}
                for key, limit, actual in groups:
                    held = held_at.get(key, 0)
                    if actual >= held:
                        state = force(self._get(key, limit.algorithm), limit, actual - held, now)
                        if state is not None:
                            self._put(key, limit.algorithm, state)
                    else:
                        self._refund(key, limit, held - actual, record[2], now)
            if status == 1:
                records[hold_id] = ("S", now + record[3], record[4])
            self._keep_holds(holds, records)
            return [status, [_peek_one(self._get(k, l.algorithm), l, now) for k, l, _ in groups]]

    def extend(self, holds: str, hold_id: str, ttl_ms: int) -> Optional[int]:
        """EXTEND's reply, or None when this limiter has no record of the id
        (a hold Redis keeps, or one forgotten)."""
        with self._lock:
            now = self._clock()
            records = self._holds(holds, now)
            record = records.get(hold_id)
            reply = None
            if record is not None and record[0] == "L":
                reply = min(ttl_ms, HOLD_MAX_TTL_MS)
                records[hold_id] = ("L", now + reply, record[2], reply, record[4], record[5])
            elif record is not None:
                reply = 0
            self._keep_holds(holds, records)
            return reply

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


def _peek_one(state, limit: Limit, now: int) -> List[int]:
    """A limit as MPEEK of one unit shows it: SETTLE's reply per limit."""
    algorithm = ALGORITHMS[limit.algorithm]
    return list(looked(algorithm(state, limit, 1, now)[0], algorithm(state, limit, 0, now)[0]))


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
