"""A decision through redis-ratelimit-client against the raw redis-py call
sending the same command (RATELIMIT.CHECK, one request per round trip, one
connection), on a server with the module. Not a test: it prints the
throughputs and their ratio (target >= 0.9) and writes
bench/results/clients.txt. Run with the clients' venv:

    clients/prepare && target/clients/venv/bin/python bench/clients.py
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "clients" / "python" / "src"), str(ROOT / "clients" / "python" / "tests")]

import redis  # noqa: E402

from redis_ratelimit_client import RateLimiter  # noqa: E402
from servers import Server  # noqa: E402

SECONDS = 3.0


def rate(fn) -> float:
    for _ in range(2000):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        for _ in range(500):
            fn()
        n += 500
    return n / (time.perf_counter() - start)


def main():
    server = Server(module=True)
    try:
        raw = redis.Redis(port=server.port, socket_timeout=0.2)
        limiter = RateLimiter(url=server.url())
        rows = []
        for round_ in range(3):
            r = rate(lambda: raw.execute_command("RATELIMIT.CHECK", "raw", 10**15, 60))
            c = rate(lambda: limiter.check("client", 10**15, 60))
            rows.append((r, c))
        raw_best = max(r for r, _ in rows)
        client_best = max(c for _, c in rows)
        text = (f"redis-ratelimit-client decision vs raw redis-py "
                f"RATELIMIT.CHECK, 1 connection, 1 request per round trip, best of 3 x {SECONDS:.0f} s\n"
                f"raw redis-py:           {raw_best:10.0f} decisions/s\n"
                f"redis-ratelimit-client: {client_best:10.0f} decisions/s\n"
                f"ratio:                  {client_best / raw_best:10.2f} (target >= 0.90)\n")
        print(text, end="")
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "clients.txt").write_text(text)
    finally:
        server.remove()


if __name__ == "__main__":
    main()
