"""Real Flask and FastAPI apps: limits enforced exactly under concurrent
requests, headers and 429 bodies; Flask-Limiter and SlowAPI configured
through their storage URI; the Prometheus adapter."""

from concurrent.futures import ThreadPoolExecutor

import flask
import prometheus_client
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

# What the installed package's .pth runs at start-up (a source tree on
# PYTHONPATH runs no .pth): the apps below name the storage URI and import
# nothing of the package's limits storage.
import _redis_ratelimit_limits_hook  # noqa: F401
from redis_ratelimit_client import AsyncRateLimiter, RateLimiter
from redis_ratelimit_client.http import RateLimitMiddleware, by_header, rate_limit
from redis_ratelimit_client.metrics import PrometheusMetrics


def concurrently(n, fn):
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def test_a_flask_app_with_the_decorator(server):
    registry = prometheus_client.CollectorRegistry()
    limiter = RateLimiter(url=server.url(), timeout_s=2, metrics=PrometheusMetrics(registry))
    app = flask.Flask(__name__)

    @app.get("/api")
    @rate_limit(limiter, limit="10 60", key=by_header("X-API-Key"), header_style="both")
    def api():
        return {"ok": True}

    responses = concurrently(30, lambda: app.test_client().get("/api", headers={"X-API-Key": "k1"}))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    denied = next(r for r in responses if r.status_code == 429)
    assert denied.headers["RateLimit-Policy"] == '"default";q=10;w=60'
    assert denied.headers["RateLimit"] in ('"default";r=0;t=60', '"default";r=0;t=59')
    assert denied.headers["RateLimit-Limit"] == "10" and denied.headers["RateLimit-Remaining"] == "0"
    assert denied.headers["Retry-After"] in ("59", "60")
    assert denied.get_json() == {"error": "rate limited", "retry_after_s": int(denied.headers["Retry-After"]),
                                 "policy": None}
    ok = next(r for r in responses if r.status_code == 200)
    assert "Retry-After" not in ok.headers and ok.get_json() == {"ok": True}
    assert registry.get_sample_value("ratelimit_client_decisions_total",
                                     {"policy": "default", "event": "allowed"}) == 10
    assert registry.get_sample_value("ratelimit_client_decisions_total",
                                     {"policy": "default", "event": "denied"}) == 20


def test_a_fastapi_app_with_the_middleware_and_a_policy(server):
    server.client().hset("ratelimit:policies", mapping={"policy:api": "5 60", "version": "1"})
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, limiter=AsyncRateLimiter(url=server.url(), timeout_s=2), policy="api",
                       key=by_header("X-User"))

    @app.get("/items")
    async def items(request: Request):
        return {"remaining": request.scope["state"]["ratelimit"].remaining}

    with TestClient(app) as client:
        responses = concurrently(20, lambda: client.get("/items", headers={"X-User": "alice"}))
        assert [r.status_code for r in responses].count(200) == 5
        denied = next(r for r in responses if r.status_code == 429)
        assert denied.headers["ratelimit-policy"] == '"api";q=5;w=60'
        assert denied.json()["policy"] == "api" and "retry-after" in denied.headers
        assert client.get("/items", headers={"X-User": "bob"}).json() == {"remaining": 4}
        assert server.client().get("{alice}:api") == b"5"


def test_flask_limiter_configured_only_by_its_storage_uri(server):
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    for strategy in ("fixed-window", "sliding-window-counter"):
        app = flask.Flask(__name__)
        app.config["RATELIMIT_STORAGE_URI"] = f"redis-ratelimit://127.0.0.1:{server.port}"
        app.config["RATELIMIT_STRATEGY"] = strategy
        Limiter(get_remote_address, app=app, default_limits=["7 per minute"])

        @app.get("/")
        def index():
            return "ok"

        statuses = [r.status_code for r in concurrently(25, lambda: app.test_client().get("/"))]
        assert statuses.count(200) == 7 and statuses.count(429) == 18, (strategy, statuses)
        # The module's own state: denied hits were not counted.
        (key,) = server.client().keys("LIMITER*")
        assert server.client().get(key) == {"fixed-window": b"7", "sliding-window-counter": b"S0:7"}[strategy]
        server.client().flushall()


def test_slowapi_configured_only_by_its_storage_uri(server):
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri=f"redis-ratelimit://127.0.0.1:{server.port}")
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/")
    @limiter.limit("4/minute")
    def index(request: Request):
        return {"ok": True}

    with TestClient(app) as client:
        statuses = [r.status_code for r in concurrently(12, lambda: client.get("/"))]
    assert statuses.count(200) == 4 and statuses.count(429) == 8
