"""Web framework integration: key functions, an ASGI middleware
(Starlette, FastAPI) and a WSGI / Flask decorator.

A key function takes the request (Flask's `request`, or an `AsgiRequest`)
and returns the subject it is limited by, or None to let it pass:

    by_ip()                 the client's address
    by_header("X-API-Key")  a header's value
    by_user(fn)             fn(request): the user's id

A denied request gets 429 (503 for a degraded denial when
`degraded_status=503`), `Retry-After`, the RateLimit fields in
`header_style` ("ietf", "legacy", "both", "none") and a JSON body
`{"error": "rate limited", "retry_after_s": …, "policy": …}`.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Dict, Optional, Union

from ._spec import Limit


def by_ip() -> Callable:
    def key(request):
        if hasattr(request, "remote_addr"):  # Flask / Werkzeug
            return request.remote_addr
        return request.client_ip
    return key


def by_header(name: str) -> Callable:
    def key(request):
        return request.headers.get(name)
    return key


def by_user(get_user: Callable) -> Callable:
    return get_user


class AsgiRequest:
    """What a key function sees under ASGI: `scope`, `headers` (a dict,
    lower-case names), `client_ip`, `path`, `method`."""

    def __init__(self, scope):
        self.scope = scope
        self.headers = _Headers({k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])})
        client = scope.get("client")
        self.client_ip = client[0] if client else None
        self.path = scope.get("path")
        self.method = scope.get("method")


class _Headers(dict):
    def get(self, name, default=None):
        return super().get(name.lower(), default)


def _body(decision) -> bytes:
    return json.dumps({"error": "rate limited", "retry_after_s": decision.retry_after_s,
                       "policy": decision.policy}).encode()


class _Rule:
    def __init__(self, limiter, policy, plan, limit, key, cost, header_style, degraded_status, prefix):
        if sum(x is not None for x in (policy, plan, limit)) != 1:
            raise TypeError("give one of policy, plan or limit")
        self.limiter, self.policy, self.plan = limiter, policy, plan
        self.limit = None if limit is None else (limit if isinstance(limit, Limit) else Limit.parse(limit))
        self.key = key or by_ip()
        self.cost = cost
        self.header_style = header_style or limiter.header_style
        self.degraded_status = degraded_status
        self.prefix = prefix

    def status(self, decision) -> int:
        return self.degraded_status if decision.degraded and self.degraded_status else 429


class RateLimitMiddleware:
    """ASGI middleware: `app.add_middleware(RateLimitMiddleware,
    limiter=AsyncRateLimiter(...), limit="100 60", key=by_ip())` (or
    `policy=` / `plan=` names in Redis). Only HTTP requests are limited."""

    def __init__(self, app, *, limiter, policy: Optional[str] = None, plan: Optional[str] = None,
                 limit: Union[str, Limit, None] = None, key: Optional[Callable] = None,
                 cost: Union[int, Callable] = 1, header_style: Optional[str] = None,
                 degraded_status: Optional[int] = None, prefix: str = "http:"):
        self.app = app
        self.rule = _Rule(limiter, policy, plan, limit, key, cost, header_style, degraded_status, prefix)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rule = self.rule
        request = AsgiRequest(scope)
        subject = rule.key(request)
        if subject is None:
            return await self.app(scope, receive, send)
        cost = rule.cost(request) if callable(rule.cost) else rule.cost
        if rule.policy is not None:
            decision = await rule.limiter.check_policy(rule.policy, str(subject), cost)
        elif rule.plan is not None:
            decision = await rule.limiter.check_plan(rule.plan, str(subject), cost)
        else:
            decision = await rule.limiter.check(f"{rule.prefix}{subject}", rule.limit, cost=cost)
        scope.setdefault("state", {})["ratelimit"] = decision
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in decision.headers(rule.header_style).items()]
        if not decision.allowed:
            body = _body(decision)
            await send({"type": "http.response.start", "status": rule.status(decision),
                        "headers": headers + [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def rate_limit(limiter, *, policy: Optional[str] = None, plan: Optional[str] = None,
               limit: Union[str, Limit, None] = None, key: Optional[Callable] = None,
               cost: Union[int, Callable] = 1, header_style: Optional[str] = None,
               degraded_status: Optional[int] = None, prefix: str = "http:"):
    """A Flask view decorator (sync RateLimiter): `@rate_limit(limiter,
    limit="10 60", key=by_header("X-API-Key"))`. The decision is on
    `flask.g.ratelimit`; its headers go on the response."""
    rule = _Rule(limiter, policy, plan, limit, key, cost, header_style, degraded_status, prefix)

    def decorate(view):
        @functools.wraps(view)
        def limited(*args, **kwargs):
            import flask

            request = flask.request
            subject = rule.key(request)
            if subject is None:
                return view(*args, **kwargs)
            cost = rule.cost(request) if callable(rule.cost) else rule.cost
            if rule.policy is not None:
                decision = rule.limiter.check_policy(rule.policy, str(subject), cost)
            elif rule.plan is not None:
                decision = rule.limiter.check_plan(rule.plan, str(subject), cost)
            else:
                decision = rule.limiter.check(f"{rule.prefix}{subject}", rule.limit, cost=cost)
            flask.g.ratelimit = decision
            headers = decision.headers(rule.header_style)
            if not decision.allowed:
                return flask.Response(_body(decision), status=rule.status(decision), headers=headers,
                                      mimetype="application/json")
            response = flask.make_response(view(*args, **kwargs))
            response.headers.update(headers)
            return response
        return limited
    return decorate
