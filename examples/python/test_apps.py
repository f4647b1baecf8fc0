"""The example apps against a real redis-server with the module: the Flask
app as its own process, the FastAPI app through its test client. Each
admits 10 requests a minute, then answers 429 with Retry-After and the
RateLimit fields."""

import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from servers import Server, free_port

HERE = Path(__file__).resolve().parent


@pytest.fixture
def server():
    s = Server(module=True)
    yield s
    s.remove()


def get(url, headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_flask_app_admits_ten_a_minute_per_api_key(server):
    port = free_port()
    env = dict(os.environ, REDIS_URL=server.url(), PORT=str(port))
    app = subprocess.Popen([sys.executable, str(HERE / "flask_app.py")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert app.poll() is None and time.monotonic() < deadline, "the app did not start"
                time.sleep(0.05)
        replies = [get(url, {"X-API-Key": "k1"}) for _ in range(12)]
        assert [status for status, _, _ in replies] == [200] * 10 + [429] * 2
        status, headers, body = replies[-1]
        assert int(headers["Retry-After"]) >= 1
        assert "r=0" in headers["RateLimit"]
        assert json.loads(body)["error"] == "rate limited"
        # Another key has its own 10.
        assert get(url, {"X-API-Key": "k2"})[0] == 200
    finally:
        app.kill()
        app.wait()


def test_the_fastapi_app_admits_ten_a_minute_per_address(server, monkeypatch):
    from fastapi.testclient import TestClient
    monkeypatch.setenv("REDIS_URL", server.url())
    sys.modules.pop("fastapi_app", None)
    # One event loop for the whole session, as a served app has.
    with TestClient(importlib.import_module("fastapi_app").app) as client:
        statuses = [client.get("/items") for _ in range(12)]
    assert [r.status_code for r in statuses] == [200] * 10 + [429] * 2
    denied = statuses[-1]
    assert int(denied.headers["retry-after"]) >= 1
    assert "r=0" in denied.headers["ratelimit"]
    assert denied.json()["error"] == "rate limited"
