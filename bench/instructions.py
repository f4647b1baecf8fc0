#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: the benchmark that does
not care how busy the machine is.

Starts redis-server under `valgrind --tool=callgrind` with the module loaded
(127.0.0.1, a free port, no persistence), optionally with one replica
attached (a plain redis-server, not under valgrind: only the master is
counted), and for each case:

1. prepares the keys the case needs (not counted);
2. zeroes the counters (`callgrind_control -z`), sends N requests of the
   same shape over one connection, 32 in flight, and dumps the counters;
3. subtracts the server's idle cost over the same time (measured once per
   server, per second) and divides by N.

Every case is steady state: its keys exist and keep their state through the
run (periods of an hour or more, buckets and throttles given a debt of days
before the run), except the cases named "new ..." or "window opens", which
use a fresh key per request on purpose.

The cases named "peer ..." run the Lua limiters people use today
(bench/peers/, each file's header says whose and which version) as their
libraries call them: SCRIPT LOAD, then EVALSHA with the keys and arguments
their code passes. After the tables, a table of ratios sets the script
fallback's cases against them, with the targets the fallback aims at.

    python3 bench/instructions.py                  # both tables, written to bench/results/
    python3 bench/instructions.py --check FILE     # no replica; fail on a case over its budget
    python3 bench/instructions.py --cases PING "CHECK FIXED"   # some cases only

Environment: REDIS_SERVER (default redis-server), RATELIMIT_MODULE (default
target/release/libredis_ratelimit.so), BENCH_REQUESTS (default 5000),
BENCH_KEEP_DUMPS (a folder: keep each case's callgrind dump there, for
callgrind_annotate).
"""

import argparse
import glob
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER = os.environ.get("REDIS_SERVER", "redis-server")
MODULE = Path(os.environ.get("RATELIMIT_MODULE", ROOT / "target" / "release" / "libredis_ratelimit.so")).resolve()
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "5000"))
PIPELINE = 32
KEYS = 1000
BIG = "1000000000000"
LUA = (ROOT / "bench" / "fixed_window.lua").read_text()
LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest()
FALLBACK = ROOT / "fallback" / "ratelimit.lua"
# A debt of about 28 hours: the state outlives any run.
DEBT = "100000"
# One token per second in a bucket of 10^8 (it refills in about 3 years,
# within the longest period), said as 10^8 tokens per 10^8 seconds, the
# bucket as large as the limit: no BURST argument, so the request has
# CHECK's shape plus ALGORITHM. The debt never reaches it.
TOKEN_RATE = ["100000000", "100000000"]
# The same bucket for the script fallback, which needs burst × period_ms
# below 2^53: one token per second, BURST 10^8.
FALLBACK_TOKEN = ["1", "1", "ALGORITHM", "TOKEN", "BURST", "100000000"]
# THROTTLE for the script fallback, which needs (max_burst + 1) x the
# emission interval below 2^53 ns: one a second, a burst of 999,999 (11
# days), which the debt never reaches.
FALLBACK_THROTTLE = ["999999", "1", "1"]
# SLIDING for the script fallback, which needs limit x period_ms below 2^53.
FALLBACK_SLIDING = ["100000000", "86400", "ALGORITHM", "SLIDING"]
PEERS = ROOT / "bench" / "peers"
# redis_rate's Limit for its GCRA, as AllowN passes it (burst, rate, period
# in seconds): one a second in a burst of 10^8, the module's TOKEN case.
REDIS_RATE = ["100000000", "1", "1"]
DAY_MS = 86_400_000


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Connection:
    """A RESP connection that sends many requests and reads their replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(resp(args))
        return self.reply()

    def many(self, requests):
        """Sends every request, at most PIPELINE in flight; returns the
        number of replies read (errors raise)."""
        sent = read = 0
        total = len(requests)
        while read < total:
            batch = b"".join(resp(r) for r in requests[sent:min(total, read + PIPELINE)])
            sent = min(total, read + PIPELINE)
            self.sock.sendall(batch)
            while read < sent:
                self.reply()
                read += 1
        return read


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, deadline_s=120):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            c = Connection(port)
            if c.call("PING") == "PONG":
                return c
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no server on port {port}")


class Server:
    """redis-server under callgrind, with the module; optionally a replica."""

    def __init__(self, workdir, replica=False):
        self.dir = workdir
        self.port = free_port()
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", workdir, "--hz", "10", "--dynamic-hz", "no",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if MODULE.exists():
            base += ["--loadmodule", str(MODULE)]
        self.out = os.path.join(workdir, "callgrind.out")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}.%p",
             "--dump-instr=no", "--collect-jumps=no", SERVER] + base,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "valgrind.log"), "w"), cwd=workdir)
        self.con = wait_for(self.port)
        self.replica = None
        if replica:
            rport = free_port()
            rdir = os.path.join(workdir, "replica")
            os.makedirs(rdir, exist_ok=True)
            self.replica = subprocess.Popen(
                [SERVER, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", rdir, "--replicaof", "127.0.0.1", str(self.port)]
                + (["--loadmodule", str(MODULE)] if MODULE.exists() else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rcon = wait_for(rport)
            end = time.time() + 120
            while b"master_link_status:up" not in rcon.call("INFO", "replication"):
                if time.time() > end:
                    raise RuntimeError("the replica did not link")
                time.sleep(0.2)
        self.idle_per_s = self._idle_rate()

    def _control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)

    def _total(self):
        """Dumps the counters and returns the instructions since the last zero."""
        before = set(glob.glob(f"{self.out}.{self.proc.pid}*"))
        self._control("-d")
        end = time.time() + 60
        while time.time() < end:
            new = set(glob.glob(f"{self.out}.{self.proc.pid}*")) - before
            for path in new:
                text = Path(path).read_text(errors="replace")
                m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
                if m:
                    keep = os.environ.get("BENCH_KEEP_DUMPS")
                    if keep:
                        os.makedirs(keep, exist_ok=True)
                        os.replace(path, os.path.join(keep, f"{self.label}.callgrind"))
                    else:
                        os.remove(path)
                    return int(m.group(1))
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")

    def measure(self, fn, label="idle"):
        """Instructions spent while `fn` runs, and its duration."""
        self.label = label.replace(" ", "_").replace(",", "").replace("+", "_")
        self._control("-z")
        start = time.time()
        fn()
        elapsed = time.time() - start
        return self._total(), elapsed

    def _idle_rate(self):
        total, elapsed = self.measure(lambda: time.sleep(3))
        return total / elapsed

    def stop(self):
        for p in [self.replica, self.proc]:
            if p is not None:
                p.kill()
                p.wait()


def keys(prefix, n=KEYS):
    return [f"{prefix}{i}" for i in range(n)]


def cycle(prefix, args_fn, n=KEYS):
    return lambda i: args_fn(f"{prefix}{i % n}")


def reserve(tag, i, id_prefix="id"):
    """RESERVE of id i: one request for good, an estimate of 100 held."""
    return ["RATELIMIT.RESERVE", f"{{{tag}}}h:{i % KEYS}", f"{id_prefix}{i}", "86400000", "2",
            f"{{{tag}}}a:{i % KEYS}", f"{{{tag}}}b:{i % KEYS}",
            "LIMIT", BIG, "86400", "LIMIT", BIG, "86400", "HOLD", "100"]


# (name, preparation, request) where preparation is a list of commands and
# request(i) gives the i-th request (a list of commands for pairs).
def cases():
    out = [
        ("PING", [], lambda i: [["PING"]]),
        ("INCR on TTL keys", [["SET", k, "0", "PX", "86400000"] for k in keys("incr:")],
         cycle("incr:", lambda k: [["INCR", k]])),
        ("SET PX", [["SET", k, "0", "PX", "86400000"] for k in keys("set:")],
         cycle("set:", lambda k: [["SET", k, "1", "PX", "86400000"]])),
        ("Lua fixed window", [["SCRIPT", "LOAD", LUA]] + [["SET", k, "0", "PX", "86400000"] for k in keys("lua:")],
         cycle("lua:", lambda k: [["EVALSHA", LUA_SHA, "1", k, BIG, "86400"]])),
        ("PEEK FIXED", [["RATELIMIT.CHECK", k, BIG, "86400"] for k in keys("peek:")],
         cycle("peek:", lambda k: [["RATELIMIT.PEEK", k, BIG, "86400"]])),
        ("CHECK FIXED", [["RATELIMIT.CHECK", k, BIG, "86400"] for k in keys("fixed:")],
         cycle("fixed:", lambda k: [["RATELIMIT.CHECK", k, BIG, "86400"]])),
        ("CHECK FIXED, window opens", [], lambda i: [["RATELIMIT.CHECK", f"open:{i}", BIG, "86400"]]),
        ("CHECK SLIDING", [["RATELIMIT.CHECK", k, BIG, "86400", "ALGORITHM", "SLIDING"] for k in keys("sliding:")],
         cycle("sliding:", lambda k: [["RATELIMIT.CHECK", k, BIG, "86400", "ALGORITHM", "SLIDING"]])),
        ("CHECK TOKEN",
         [["RATELIMIT.CHECK", k, *TOKEN_RATE, "ALGORITHM", "TOKEN", "COST", DEBT] for k in keys("token:")],
         cycle("token:", lambda k: [["RATELIMIT.CHECK", k, *TOKEN_RATE, "ALGORITHM", "TOKEN"]])),
        ("THROTTLE",
         [["RATELIMIT.THROTTLE", k, "999999999", "1", "1", DEBT] for k in keys("throttle:")],
         cycle("throttle:", lambda k: [["RATELIMIT.THROTTLE", k, "999999999", "1", "1"]])),
        ("THROTTLE, new key", [], lambda i: [["RATELIMIT.THROTTLE", f"tnew:{i}", "999999999", "1", "1"]]),
        ("MCHECK 2 limits",
         [["RATELIMIT.CHECK", k, BIG, "86400"] for k in keys("{m}a:") + keys("{m}b:")],
         lambda i: [["RATELIMIT.MCHECK", "2", f"{{m}}a:{i % KEYS}", f"{{m}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "LIMIT", BIG, "86400"]]),
        ("MCHECK 4 limits",
         [["RATELIMIT.CHECK", k, BIG, "86400"] for p in "abcd" for k in keys(f"{{m}}{p}:")],
         lambda i: [["RATELIMIT.MCHECK", "4"] + [f"{{m}}{p}:{i % KEYS}" for p in "abcd"]
                    + ["LIMIT", BIG, "86400"] * 4]),
        ("ZADD+ZREM pair", [],
         cycle("zset:", lambda k: [["ZADD", k, "1800000000000", "x"], ["ZREM", k, "x"]])),
        ("MPEEK 2 limits",
         [["RATELIMIT.CHECK", k, BIG, "86400"] for k in keys("{p}a:") + keys("{p}b:")],
         lambda i: [["RATELIMIT.MPEEK", "2", f"{{p}}a:{i % KEYS}", f"{{p}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "LIMIT", BIG, "86400"]]),
        # A max lowered far below the live leases: the slot that frees first
        # is found by rank, not by walking 100,000 members.
        ("ACQUIRE denied, 100,000 live",
         [["ZADD", "crowd"] + [x for j in range(c, c + 1000) for x in ("4102444800000", f"m{j}")]
          for c in range(0, 100_000, 1000)],
         lambda i: [["RATELIMIT.ACQUIRE", "crowd", "1", "1000"]]),
        ("ACQUIRE+RELEASE pair", [],
         cycle("lease:", lambda k: [["RATELIMIT.ACQUIRE", k, "1000", "60000", "ID", "x"],
                                    ["RATELIMIT.RELEASE", k, "x"]])),
        # Holds live a day (no sweep during the run); each request a new id,
        # so each holds key keeps a few records, as a tenant's would. Every
        # holds key already holds one, with its sweep time and expiry.
        ("RESERVE COST+HOLD",
         [["CONFIG", "SET", "ratelimit.hold-max-ttl-ms", "86400000"]]
         + [reserve("r", i, "prep") for i in range(KEYS)],
         lambda i: [reserve("r", i)]),
        ("SETTLE",
         [["CONFIG", "SET", "ratelimit.hold-max-ttl-ms", "86400000"]]
         + [reserve("s", i) for i in range(REQUESTS)],
         lambda i: [["RATELIMIT.SETTLE", f"{{s}}h:{i % KEYS}", f"id{i}", "1", f"{{s}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "ACTUAL", "60"]]),
    ]
    return out


def peer_script(name):
    """A peer's script (bench/peers/) and the SHA1 that EVALSHA names."""
    text = (PEERS / name).read_text()
    return text, hashlib.sha1(text.encode()).hexdigest()


# The Lua limiters people run today, each as its library calls it, in its
# steady state (keys that exist, limits no request reaches); clock
# arguments are one instant taken when the cases are made.
def peer_cases():
    gcra, gcra_sha = peer_script("redis_rate_allow_n.lua")
    sliding, sliding_sha = peer_script("upstash_sliding_window.lua")
    incr_ttl, incr_ttl_sha = peer_script("rate_limiter_flexible_incr_ttl.lua")
    acquire, acquire_sha = peer_script("redis_semaphore_acquire.lua")
    now_ms = int(time.time() * 1000)
    window = now_ms // DAY_MS
    return [
        # Limiter.AllowN(key, limit, 1), the state given a debt first.
        ("peer redis_rate allowN",
         [["SCRIPT", "LOAD", gcra]] + [["EVALSHA", gcra_sha, "1", k, *REDIS_RATE, DEBT] for k in keys("rate:")],
         cycle("rate:", lambda k: [["EVALSHA", gcra_sha, "1", k, *REDIS_RATE, "1"]])),
        # slidingWindow(tokens, "1 d").limit(identifier): the current and
        # the previous day's counters, both counted in already (a current
        # counter at 0 would be expired again by its first request).
        ("peer Upstash sliding window",
         [["SCRIPT", "LOAD", sliding]]
         + [["SET", f"{k}:{w}", "1", "PX", str(3 * DAY_MS)] for k in keys("up:") for w in (window, window - 1)],
         cycle("up:", lambda k: [["EVALSHA", sliding_sha, "2", f"{k}:{window}", f"{k}:{window - 1}",
                                  BIG, str(now_ms), str(DAY_MS), "1"]])),
        # RateLimiterRedis({points, duration: 86400}).consume(key).
        ("peer rate-limiter-flexible consume",
         [["SCRIPT", "LOAD", incr_ttl]] + [["SET", k, "1", "EX", "86400"] for k in keys("rlflx:")],
         cycle("rlflx:", lambda k: [["EVALSHA", incr_ttl_sha, "1", k, "1", "86400", BIG, "86400"]])),
        # Semaphore(key, 1000, {lockTimeout: 60000}): acquire, then release
        # (ZREM), the id as short as the module's pair's.
        ("peer semaphore acquire+release",
         [["SCRIPT", "LOAD", acquire]],
         cycle("semaphore:", lambda k: [["EVALSHA", acquire_sha, "1", k, "1000", "x", "60000", str(now_ms)],
                                        ["ZREM", k, "x"]])),
    ]


# The script fallback's cases in the module's shapes (bounded as the
# fallback needs: FALLBACK_TOKEN, FALLBACK_THROTTLE, FALLBACK_SLIDING).
def fallback_cases():
    if not FALLBACK.exists():
        return []
    load = ["FUNCTION", "LOAD", "REPLACE", FALLBACK.read_text()]

    def check(k):
        return ["FCALL", "ratelimit_check", "1", k, BIG, "86400"]

    return [
        ("FCALL ratelimit_check FIXED", [load] + [check(k) for k in keys("ffixed:")],
         cycle("ffixed:", lambda k: [check(k)])),
        ("FCALL ratelimit_check TOKEN",
         [load] + [["FCALL", "ratelimit_check", "1", k, *FALLBACK_TOKEN, "COST", DEBT] for k in keys("ftoken:")],
         cycle("ftoken:", lambda k: [["FCALL", "ratelimit_check", "1", k, *FALLBACK_TOKEN]])),
        ("FCALL ratelimit_throttle",
         [load] + [["FCALL", "ratelimit_throttle", "1", k, *FALLBACK_THROTTLE, DEBT] for k in keys("fthrottle:")],
         cycle("fthrottle:", lambda k: [["FCALL", "ratelimit_throttle", "1", k, *FALLBACK_THROTTLE]])),
        ("FCALL ratelimit_check SLIDING",
         [load] + [["FCALL", "ratelimit_check", "1", k, *FALLBACK_SLIDING] for k in keys("fsliding:")],
         cycle("fsliding:", lambda k: [["FCALL", "ratelimit_check", "1", k, *FALLBACK_SLIDING]])),
        ("FCALL ratelimit_mcheck 2 limits",
         [load] + [check(k) for k in keys("{fm}a:") + keys("{fm}b:")],
         lambda i: [["FCALL", "ratelimit_mcheck", "2", f"{{fm}}a:{i % KEYS}", f"{{fm}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "LIMIT", BIG, "86400"]]),
        ("two FCALL ratelimit_check",
         [load] + [check(k) for k in keys("{fc}a:") + keys("{fc}b:")],
         lambda i: [check(f"{{fc}}a:{i % KEYS}"), check(f"{{fc}}b:{i % KEYS}")]),
        ("FCALL ratelimit_acquire+release pair", [load],
         cycle("flease:", lambda k: [["FCALL", "ratelimit_acquire", "1", k, "1000", "60000", "ID", "x"],
                                     ["FCALL", "ratelimit_release", "1", k, "x"]])),
        # The module's RESERVE and SETTLE cases, with the library's longest
        # hold (60 s: no hold expires during a case).
        ("FCALL ratelimit_reserve COST+HOLD",
         [load] + [fallback_reserve("fr", i, "prep") for i in range(KEYS)],
         lambda i: [fallback_reserve("fr", i)]),
        ("FCALL ratelimit_settle",
         [load] + [fallback_reserve("fs", i) for i in range(REQUESTS)],
         lambda i: [["FCALL", "ratelimit_settle", "2", f"{{fs}}h:{i % KEYS}", f"{{fs}}b:{i % KEYS}", f"id{i}",
                     "LIMIT", BIG, "86400", "ACTUAL", "60"]]),
    ]


def fallback_reserve(tag, i, id_prefix="id"):
    """reserve(tag, i) through the library: the holds key first among the keys."""
    return ["FCALL", "ratelimit_reserve", "3", f"{{{tag}}}h:{i % KEYS}", f"{{{tag}}}a:{i % KEYS}",
            f"{{{tag}}}b:{i % KEYS}", f"{id_prefix}{i}", "60000",
            "LIMIT", BIG, "86400", "LIMIT", BIG, "86400", "HOLD", "100"]


# The fallback against what it replaces, as its targets state them:
# (fallback case, peer case, most fallback / peer), or (case, None, most
# instructions per request).
TARGETS = [
    ("FCALL ratelimit_throttle", "peer redis_rate allowN", 0.85),
    ("FCALL ratelimit_check FIXED", "peer Upstash sliding window", 0.9),
    ("FCALL ratelimit_check FIXED", None, 45_000),
    ("FCALL ratelimit_check TOKEN", "peer redis_rate allowN", 0.85),
    ("FCALL ratelimit_mcheck 2 limits", "two FCALL ratelimit_check", 1.1),
    ("FCALL ratelimit_acquire+release pair", "peer semaphore acquire+release", 2.0),
]


def ratio_lines(tables):
    """The TARGETS rows whose cases ran, one column per table."""
    labels = list(tables)
    rows = []
    for case, peer, most in TARGETS:
        cells = []
        for label in labels:
            got = tables[label]
            if case not in got or (peer is not None and peer not in got):
                cells.append("")
            elif peer is None:
                cells.append(f"{got[case]:,} ({'met' if got[case] <= most else 'missed'})")
            else:
                ratio = got[case] / got[peer]
                cells.append(f"{ratio:.2f}× ({'met' if ratio <= most else 'missed'})")
        if any(cells):
            target = f"≤ {most:,} instructions" if peer is None else f"≤ {most:g}×"
            rows.append(f"| {case} | {peer or '(instructions per request)'} | {' | '.join(cells)} | {target} |")
    if not rows:
        return []
    return ["The script fallback against the Lua it replaces: its instructions per request ÷ the peer's.", "",
            f"| fallback | against | {' | '.join(labels)} | target |",
            "| --- | --- | " + "---: | " * len(labels) + "--- |"] + rows


def run(replica, only):
    results = {}
    with tempfile.TemporaryDirectory(prefix="ratelimit-callgrind-") as workdir:
        server = Server(workdir, replica=replica)
        try:
            for name, prepare, request in cases() + fallback_cases() + peer_cases():
                if only and name not in only:
                    continue
                # Pipelined as the requests are: uncounted, but not free under valgrind.
                server.con.many(prepare)
                requests = [c for i in range(REQUESTS) for c in request(i)]
                # One untimed pass over a few requests warms the code paths.
                total, elapsed = server.measure(lambda: server.con.many(requests), name)
                per = (total - server.idle_per_s * elapsed) / REQUESTS
                results[name] = round(per)
                print(f"  {name:38} {results[name]:>8,}", flush=True)
        finally:
            server.stop()
    return results


def server_version():
    out = subprocess.run([SERVER, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v=([0-9.]+)", out)
    return m.group(1) if m else "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", help="a JSON file of budgets: fail when a case costs over 5%% more")
    parser.add_argument("--cases", nargs="*", help="only these cases")
    parser.add_argument("--replica", choices=["both", "no", "yes"], default="both",
                        help="which table: without a replica, with one, or both")
    args = parser.parse_args()
    if not MODULE.exists():
        sys.exit(f"{MODULE} is missing: build it first (cargo build --release)")
    if args.check:
        global REQUESTS
        spec = json.loads(Path(args.check).read_text())
        budgets = spec["budgets"]
        REQUESTS = spec.get("requests", REQUESTS)
        if server_version() != spec.get("server"):
            print(f"note: the budgets were measured on Redis {spec.get('server')}, this is {server_version()}")
        print(f"Instructions per request, no replica, {REQUESTS} requests per case:")
        results = run(False, set(args.cases) if args.cases else set(budgets))
        print(f"\n| case | instructions | budget | +5% | |\n| --- | ---: | ---: | ---: | --- |")
        failed = []
        for name, budget in budgets.items():
            got = results.get(name)
            if got is None:
                continue
            over = got > budget * 1.05
            print(f"| {name} | {got:,} | {budget:,} | {round(budget * 1.05):,} | {'OVER' if over else 'ok'} |")
            if over:
                failed.append(f"{name}: {got:,} instructions per request, budget {budget:,} (+5% = {round(budget * 1.05):,})")
        missing = [name for name in budgets if name not in results]
        if missing and not args.cases:
            failed.append(f"cases with a budget that did not run: {', '.join(missing)}")
        ratios = ratio_lines({"no replica": results})
        if ratios:
            print("\n" + "\n".join(ratios))
        if failed:
            print("\nOver budget:\n  " + "\n  ".join(failed))
            sys.exit(1)
        print("\nEvery case within its budget.")
        return
    tables = {}
    for replica in {"both": (False, True), "no": (False,), "yes": (True,)}[args.replica]:
        label = "one replica attached" if replica else "no replica"
        print(f"Instructions per request, {label} ({REQUESTS} requests per case, {PIPELINE} in flight):")
        tables[label] = run(replica, set(args.cases or []))
    ratios = ratio_lines(tables)
    if args.replica != "both" or args.cases:
        if ratios:
            print("\n" + "\n".join(ratios))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"server": server_version(), "requests": REQUESTS, "pipeline": PIPELINE}
    (RESULTS / "instructions.json").write_text(json.dumps({"meta": meta, "tables": tables}, indent=2) + "\n")
    names = list(tables["no replica"])
    lines = [f"Redis {meta['server']}, callgrind, {REQUESTS} requests per case, {PIPELINE} in flight, idle cost subtracted.", "",
             "| request | no replica | one replica |", "| --- | ---: | ---: |"]
    for n in names:
        lines.append(f"| {n} | {tables['no replica'][n]:,} | {tables['one replica attached'].get(n, 0):,} |")
    if ratios:
        lines += [""] + ratios
    (RESULTS / "instructions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
