"""A Flask API allowing each API key 10 requests a minute, decided in Redis.

    python examples/python/flask_app.py    # http://127.0.0.1:5000/api
    curl -i -H 'X-API-Key: k1' http://127.0.0.1:5000/api

REDIS_URL (default redis://localhost:6379) names the server, PORT the port.
"""

import os

from flask import Flask

from redis_ratelimit_client import RateLimiter
from redis_ratelimit_client.http import by_header, rate_limit

app = Flask(__name__)
limiter = RateLimiter(url=os.environ.get("REDIS_URL", "redis://localhost:6379"))


@app.get("/api")
@rate_limit(limiter, limit="10 60", key=by_header("X-API-Key"))
def api():
    return {"ok": True}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
