"""A circuit breaker in front of Redis.

closed     every call goes to Redis; `failure_threshold` consecutive
           failures (a connection error or a timeout) open it
open       no call goes to Redis: decisions come from the unavailability
           policy at once, without waiting for a timeout each time
half-open  after `cooldown_s`, one call (the probe) goes to Redis while the
           others stay degraded: its success closes the breaker, its failure
           opens it again for another `cooldown_s`
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._since = 0.0
        # Called with (old state, new state) on every change.
        self.listeners = []

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def _move(self, state: str) -> None:
        old, self._state = self._state, state
        self._since = self._clock()
        if old != state:
            for listener in list(self.listeners):
                listener(old, state)

    def allow(self) -> bool:
        """Whether this call may go to Redis."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._clock() - self._since < self.cooldown_s:
                return False
            # Open past its cool-down, or a probe that never reported back
            # (cancelled): one caller probes.
            self._move(HALF_OPEN)
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state != CLOSED:
                self._move(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.failure_threshold):
                self._move(OPEN)
