"""A FastAPI app allowing each client address 10 requests a minute, decided
in Redis by the asyncio limiter, as ASGI middleware.

    uvicorn fastapi_app:app    # from examples/python, with uvicorn installed

REDIS_URL (default redis://localhost:6379) names the server.
"""

import os

from fastapi import FastAPI

from redis_ratelimit_client import AsyncRateLimiter
from redis_ratelimit_client.http import RateLimitMiddleware, by_ip

app = FastAPI()
app.add_middleware(RateLimitMiddleware, limiter=AsyncRateLimiter(url=os.environ.get("REDIS_URL", "redis://localhost:6379")),
                   limit="10 60", key=by_ip())


@app.get("/items")
async def items():
    return []
