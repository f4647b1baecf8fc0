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


def reserve(tag, i):
    """RESERVE of id i: one request for good, an estimate of 100 held."""
    return ["RATELIMIT.RESERVE", f"{{{tag}}}h:{i % KEYS}", f"id{i}", "86400000", "2",
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
        # so each holds key keeps a few records, as a tenant's would.
        ("RESERVE COST+HOLD",
         [["CONFIG", "SET", "ratelimit.hold-max-ttl-ms", "86400000"]]
         + [["RATELIMIT.CHECK", k, BIG, "86400"] for k in keys("{r}a:") + keys("{r}b:")],
         lambda i: [reserve("r", i)]),
        ("SETTLE",
         [["CONFIG", "SET", "ratelimit.hold-max-ttl-ms", "86400000"]]
         + [reserve("s", i) for i in range(REQUESTS)],
         lambda i: [["RATELIMIT.SETTLE", f"{{s}}h:{i % KEYS}", f"id{i}", "1", f"{{s}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "ACTUAL", "60"]]),
    ]
    if FALLBACK.exists():
        out += fallback_cases()
    return out


# The script fallback (fallback/ratelimit.lua) through FCALL, loaded once
# by the first case's preparation and again by each case's, which costs
# nothing counted. Its bounds are narrower than the module's (products
# below 2^53): the throttle allows a burst of a day at one a second (given
# a debt of half a day), the sliding window counts to 10^6 a day.
def fallback_cases():
    load = ["FUNCTION", "LOAD", "REPLACE", FALLBACK.read_text()]
    sliding = ["1000000", "86400", "ALGORITHM", "SLIDING"]
    throttle = ["86400", "1", "1"]
    return [
        ("FCALL ratelimit_check FIXED",
         [load] + [["FCALL", "ratelimit_check", "1", k, BIG, "86400"] for k in keys("ffixed:")],
         cycle("ffixed:", lambda k: [["FCALL", "ratelimit_check", "1", k, BIG, "86400"]])),
        ("FCALL ratelimit_check TOKEN",
         [load] + [["FCALL", "ratelimit_check", "1", k, *FALLBACK_TOKEN, "COST", DEBT] for k in keys("ftoken:")],
         cycle("ftoken:", lambda k: [["FCALL", "ratelimit_check", "1", k, *FALLBACK_TOKEN]])),
        ("FCALL ratelimit_check SLIDING",
         [load] + [["FCALL", "ratelimit_check", "1", k, *sliding] for k in keys("fsliding:")],
         cycle("fsliding:", lambda k: [["FCALL", "ratelimit_check", "1", k, *sliding]])),
        ("FCALL ratelimit_throttle",
         [load] + [["FCALL", "ratelimit_throttle", "1", k, *throttle, "43200"] for k in keys("fthrottle:")],
         cycle("fthrottle:", lambda k: [["FCALL", "ratelimit_throttle", "1", k, *throttle]])),
        ("FCALL ratelimit_mcheck 2 limits",
         [load] + [["FCALL", "ratelimit_check", "1", k, BIG, "86400"] for k in keys("{fm}a:") + keys("{fm}b:")],
         lambda i: [["FCALL", "ratelimit_mcheck", "2", f"{{fm}}a:{i % KEYS}", f"{{fm}}b:{i % KEYS}",
                     "LIMIT", BIG, "86400", "LIMIT", BIG, "86400"]]),
        ("two FCALL ratelimit_check",
         [load] + [["FCALL", "ratelimit_check", "1", k, BIG, "86400"] for k in keys("{f2}a:") + keys("{f2}b:")],
         lambda i: [["FCALL", "ratelimit_check", "1", f"{{f2}}a:{i % KEYS}", BIG, "86400"],
                    ["FCALL", "ratelimit_check", "1", f"{{f2}}b:{i % KEYS}", BIG, "86400"]]),
        ("FCALL ratelimit_acquire+release pair", [load],
         cycle("flease:", lambda k: [["FCALL", "ratelimit_acquire", "1", k, "1000", "60000", "ID", "x"],
                                     ["FCALL", "ratelimit_release", "1", k, "x"]])),
    ]


def run(replica, only):
    results = {}
    with tempfile.TemporaryDirectory(prefix="ratelimit-callgrind-") as workdir:
        server = Server(workdir, replica=replica)
        try:
            for name, prepare, request in cases():
                if only and name not in only:
                    continue
                for command in prepare:
                    server.con.call(*command)
                requests = [c for i in range(REQUESTS) for c in request(i)]
                # One untimed pass over a few requests warms the code paths.
                total, elapsed = server.measure(lambda: server.con.many(requests), name)
                per = (total - server.idle_per_s * elapsed) / REQUESTS
                results[name] = round(per)
                print(f"  {name:32} {results[name]:>8,}", flush=True)
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
    if args.replica != "both" or args.cases:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"server": server_version(), "requests": REQUESTS, "pipeline": PIPELINE}
    (RESULTS / "instructions.json").write_text(json.dumps({"meta": meta, "tables": tables}, indent=2) + "\n")
    names = list(tables["no replica"])
    lines = [f"Redis {meta['server']}, callgrind, {REQUESTS} requests per case, {PIPELINE} in flight, idle cost subtracted.", "",
             "| request | no replica | one replica |", "| --- | ---: | ---: |"]
    for n in names:
        lines.append(f"| {n} | {tables['no replica'][n]:,} | {tables['one replica attached'].get(n, 0):,} |")
    (RESULTS / "instructions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
