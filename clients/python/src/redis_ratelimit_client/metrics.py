"""Counters of what the limiter decided, through a callback.

A limiter calls `metrics(event, policy)` once per decision or error, where
`event` is one of EVENTS and `policy` the policy's name (the name given to
the call, or "default"). Keep the callback fast and never let it raise: it
runs on the request's path (an exception it raises is logged and dropped).
"""

from __future__ import annotations

from typing import Optional

# allowed        admitted by Redis (shadow denials included: they were allowed)
# denied         denied by Redis
# degraded       decided without Redis (also counted as allowed or denied)
# error          an error reply was raised to the caller
# shadow_denied  a shadow limit would have denied (and did not)
EVENTS = ("allowed", "denied", "degraded", "error", "shadow_denied")


class PrometheusMetrics:
    """A `metrics` callback that counts in prometheus_client (an optional
    dependency: `pip install redis-ratelimit-client[prometheus]`).

    One counter, `<namespace>_decisions_total{policy, event}`, with every
    event of EVENTS. `registry` defaults to prometheus_client's global one.
    """

    def __init__(self, registry=None, namespace: str = "ratelimit_client"):
        try:
            from prometheus_client import REGISTRY, Counter
        except ImportError as e:  # pragma: no cover - the message is the point
            raise ImportError("PrometheusMetrics needs prometheus_client: "
                              "pip install 'redis-ratelimit-client[prometheus]'") from e
        self.counter = Counter(f"{namespace}_decisions", "Rate-limit decisions and errors, by policy and event",
                               ["policy", "event"], registry=registry if registry is not None else REGISTRY)

    def __call__(self, event: str, policy: Optional[str]) -> None:
        self.counter.labels(policy=policy or "default", event=event).inc()
