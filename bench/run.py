#!/usr/bin/env python3
"""The module against the server's own commands, a Lua script and the
module's fallback library (fallback/ratelimit.lua through FCALL), in one run.

Starts its own redis-server (127.0.0.1, a free port, no persistence) with the
release module loaded, and drives it with redis-benchmark: 50 clients, a
keyspace of 100,000 keys, pipelines of 1 and 32, and a single hot key. Every
command runs once per round, the rounds interleaved (A B C ... A B C ...),
so a slow moment of the machine hits all of them alike; the median round is
reported. Then it measures the memory each kind of limiter key takes, and
concurrency leases taken and given back (RATELIMIT.ACQUIRE + RATELIMIT.RELEASE
pairs) next to the same pairs of plain sorted-set commands (ZADD + ZREM).

Writes what it prints, with the raw redis-benchmark output, to latest.txt,
and the numbers to latest.json (read by bench/plot.py), in BENCH_OUT:
target/bench/ by default, outside the repository's files; `make bench
BENCH_SAVE=1` sets it to bench/results/, the committed results that
docs/performance.md quotes.

    python3 bench/run.py            # a few minutes
    BENCH_QUICK=1 python3 bench/run.py   # about a minute, one round
    python3 bench/run.py --pairs    # the pairs only, printed, nothing written

Environment: REDIS_SERVER, REDIS_BENCHMARK, REDIS_CLI (binaries; default from
PATH), RATELIMIT_MODULE (default target/release/libredis_ratelimit.so),
BENCH_OUT (default target/bench, relative to the repository).
"""

import csv
import hashlib
import io
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / os.environ.get("BENCH_OUT", "target/bench")
SAVED = RESULTS.resolve() == (ROOT / "bench" / "results").resolve()
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SERVER = os.environ.get("REDIS_SERVER", "redis-server")
BENCHMARK = os.environ.get("REDIS_BENCHMARK", "redis-benchmark")
CLI = os.environ.get("REDIS_CLI", "redis-cli")
MODULE = Path(os.environ.get("RATELIMIT_MODULE", ROOT / "target" / "release" / "libredis_ratelimit.so"))

CLIENTS = 50
KEYSPACE = 100_000
ROUNDS = 1 if QUICK else 3
# Requests per run: about two seconds of work per run on a 2-core machine.
REQUESTS = {32: 500_000 if QUICK else 2_000_000, 1: 50_000 if QUICK else 200_000}
TTL_MS = 3_600_000
LUA = (ROOT / "bench" / "fixed_window.lua").read_text()
LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest()
LIBRARY = (ROOT / "fallback" / "ratelimit.lua").read_text()

# Limits high enough that every request is admitted: each command runs its
# common path (count and store), as INCR does.
BIG = "1000000000000"
# (name, command with __rand_int__ for the key, key prefix, how the keys are
# prepared before the runs). Prepared as `ttl`: SET key 0 PX, the state of a
# counter with an expiry; as `self`: one call of the command itself per key;
# as a list: one call of the command with these arguments added; as
# `counters`: a fixed-window counter made by CHECK on every key of every
# prefix (a tuple: MCHECK's keys, one prefix per limit, each drawn at random
# by redis-benchmark, so that a call never names a key twice).
#
# Every case measures its steady state: the state each request meets was
# made by an earlier request and outlives the run. FIXED, SLIDING and PEEK
# keys live for their window of an hour (the sliding window until the end of
# the next aligned hour). The bucket and the throttle take one unit per
# second: prepared with a debt of 100,000 units (about 28 hours), each key
# stays in the bucket's middle through any run, where each request moves it
# one second later (a key made by a single request would expire a second
# later and most requests would meet a fresh key).
DEBT = "100000"
COMMANDS = [
    ("PING", ["PING"], None, None),
    ("INCR", ["INCR", "incr:__rand_int__"], "incr:", None),
    ("INCR (TTL keys)", ["INCR", "ttl:__rand_int__"], "ttl:", "ttl"),
    ("SET PX", ["SET", "set:__rand_int__", "1", "PX", str(TTL_MS)], "set:", "ttl"),
    ("Lua fixed window", ["EVALSHA", LUA_SHA, "1", "lua:__rand_int__", BIG, "3600"], "lua:", "ttl"),
    ("CHECK FIXED", ["RATELIMIT.CHECK", "fixed:__rand_int__", BIG, "3600"], "fixed:", "self"),
    ("CHECK FIXED COST 0", ["RATELIMIT.CHECK", "fixed:__rand_int__", BIG, "3600", "COST", "0"], "fixed:", "self"),
    ("CHECK SLIDING", ["RATELIMIT.CHECK", "sliding:__rand_int__", BIG, "3600", "ALGORITHM", "SLIDING"], "sliding:", "self"),
    # One token per second, a bucket of 10^8 (full in about three years, within
    # the longest period), said as 10^8 per 10^8 s with the bucket as large as
    # the limit: the debt never reaches it, nothing is denied.
    ("CHECK TOKEN", ["RATELIMIT.CHECK", "token:__rand_int__", "100000000", "100000000", "ALGORITHM", "TOKEN"],
     "token:", ["COST", DEBT]),
    ("PEEK FIXED", ["RATELIMIT.PEEK", "fixed:__rand_int__", BIG, "3600"], "fixed:", "self"),
    ("THROTTLE", ["RATELIMIT.THROTTLE", "throttle:__rand_int__", "999999999", "1", "1"], "throttle:", [DEBT]),
    # The fallback library, for servers without the module: the same
    # commands as functions, on keys of their own prepared the same way.
    ("FCALL ratelimit_check FIXED", ["FCALL", "ratelimit_check", "1", "ffixed:__rand_int__", BIG, "3600"],
     "ffixed:", "self"),
    ("FCALL ratelimit_check TOKEN", ["FCALL", "ratelimit_check", "1", "ftoken:__rand_int__", "1", "1",
                                     "ALGORITHM", "TOKEN", "BURST", "100000000"], "ftoken:", ["COST", DEBT]),
    # Several fixed windows in one call, all admitted and charged: the
    # steady state, every key holding a counter with its expiry.
    ("MCHECK 2 limits", ["RATELIMIT.MCHECK", "2", "ma:__rand_int__", "mb:__rand_int__",
                         "LIMIT", BIG, "3600", "LIMIT", BIG, "3600"], ("ma:", "mb:"), "counters"),
    ("MCHECK 4 limits", ["RATELIMIT.MCHECK", "4", "ma:__rand_int__", "mb:__rand_int__", "mc:__rand_int__",
                         "md:__rand_int__"] + ["LIMIT", BIG, "3600"] * 4, ("ma:", "mb:", "mc:", "md:"), "counters"),
]
BASELINES = ["INCR (TTL keys)", "INCR", "Lua fixed window"]
# MCHECK does the work of several CHECKs: held against one CHECK, per
# request (CHECK's requests/s over its own), not against INCR's latency.
MCHECKS = [("MCHECK 2 limits", 1.6), ("MCHECK 4 limits", 2.8)]
MODULE_COMMANDS = [name for name, *_ in COMMANDS
                   if ("CHECK" in name or "PEEK" in name or "THROTTLE" in name)
                   and not name.startswith(("MCHECK", "FCALL"))]

# Keys whose memory is measured: (name, command creating one key, whether an
# EXPIRE follows). Periods of an hour, so no key expires while it is counted.
MEMORY = [
    ("INCR + EXPIRE", ["INCR", "{key}"], True),
    ("CHECK FIXED", ["RATELIMIT.CHECK", "{key}", "100", "3600"], False),
    ("CHECK SLIDING", ["RATELIMIT.CHECK", "{key}", "100", "3600", "ALGORITHM", "SLIDING"], False),
    ("CHECK TOKEN", ["RATELIMIT.CHECK", "{key}", "100", "3600", "ALGORITHM", "TOKEN"], False),
    ("THROTTLE", ["RATELIMIT.THROTTLE", "{key}", "99", "100", "3600"], False),
]

# Pairs: a lease taken and given back, next to the plain sorted-set commands
# that do the same to a key (add a member with a deadline, remove it), on the
# same keyspace. redis-benchmark repeats one command and cannot carry a value
# from one command to the next, so the pairs are driven by `redis-cli --pipe`
# (a C client, like redis-benchmark): PAIR_CLIENTS processes at once, each
# sending its own pre-built stream of pairs on keys drawn at random from the
# keyspace, each pair an ACQUIRE with the client's own ID followed by the
# RELEASE of it (so a grant is always followed by its release, and clients
# never deny each other). Pair throughput is pairs / wall time until the last
# client has all its replies; the server's CPU time per pair (INFO cpu) is
# reported next to it, a check of the same ratio that does not depend on
# the clients keeping up.
PAIR_CLIENTS = 4
PAIRS_PER_CLIENT = 25_000 if QUICK else 100_000
PAIR_DEADLINE = "1800000000000"
PAIRS = [
    ("ZADD+ZREM pair", lambda key, me: [["ZADD", key, PAIR_DEADLINE, me], ["ZREM", key, me]], "zset:"),
    ("ACQUIRE+RELEASE pair", lambda key, me: [["RATELIMIT.ACQUIRE", key, "1000", "60000", "ID", me],
                                              ["RATELIMIT.RELEASE", key, me]], "lease:"),
]

log_lines = []


def say(line=""):
    print(line, flush=True)
    log_lines.append(line)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp(args):
    """One command in the Redis protocol."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Server:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="ratelimit-bench-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir.name, "--logfile", "server.log", "--loadmodule", str(MODULE)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        log = Path(self.dir.name, "server.log")
        sys.exit("redis-server did not start:\n" + (log.read_text() if log.exists() else ""))

    def cli(self, *args):
        out = subprocess.run([CLI, "-p", str(self.port), *map(str, args)], check=True,
                             capture_output=True, text=True).stdout
        return out.strip()

    def pipe(self, commands):
        """Sends many commands at once (redis-cli --pipe)."""
        data = b"".join(resp(c) for c in commands)
        subprocess.run([CLI, "-p", str(self.port), "--pipe"], input=data, check=True, capture_output=True)

    def info(self, field, section="memory"):
        for line in self.cli("INFO", section).splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
        raise KeyError(field)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def keys(prefix):
    return (f"{prefix}{i:012d}" for i in range(KEYSPACE))


def prepare(server, command, prefix, how):
    """Puts every key of the keyspace, and the hot key, in the state of `how`."""
    names = [*keys(prefix), f"{prefix}hot"]
    if how == "ttl":
        server.pipe(["SET", key, "0", "PX", str(TTL_MS)] for key in names)
    elif how == "self" or isinstance(how, list):
        extra = how if isinstance(how, list) else []
        server.pipe([key if a == f"{prefix}__rand_int__" else a for a in command] + extra for key in names)
    elif how == "counters":
        server.pipe(["RATELIMIT.CHECK", key, BIG, "3600"] for key in names)


def benchmark(server, command, pipeline, hot):
    """One redis-benchmark run: (requests/s, p50 ms, p99 ms, raw csv)."""
    args = [BENCHMARK, "-p", str(server.port), "-c", str(CLIENTS), "-n", str(REQUESTS[pipeline]),
            "-P", str(pipeline), "--csv"]
    if hot:
        command = [a.replace("__rand_int__", "hot") for a in command]
    else:
        args += ["-r", str(KEYSPACE)]
    out = subprocess.run(args + command, check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if not rows:
        sys.exit(f"no result from redis-benchmark for {command}:\n{out}")
    row = rows[-1]
    return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]), out.strip()


def run_suite(server, label, pipeline, hot):
    """Every command once per round, rounds interleaved; medians per command."""
    samples = {name: [] for name, *_ in COMMANDS}
    raw = []
    for round_no in range(1, ROUNDS + 1):
        for name, command, _, _ in COMMANDS:
            rps, p50, p99, out = benchmark(server, command, pipeline, hot)
            samples[name].append((rps, p50, p99))
            raw.append(f"# {label} round {round_no}: {name}\n{out}")
    results = {}
    for name, runs in samples.items():
        rps = [r[0] for r in runs]
        results[name] = {
            "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": statistics.median(r[1] for r in runs), "p99_ms": statistics.median(r[2] for r in runs),
        }
    return results, raw


def print_table(label, results):
    say(f"### {label}")
    say()
    header = "| command | requests/s, median (min–max) | p50 ms | p99 ms | × INCR (TTL keys) | × INCR | × Lua |"
    say(header)
    say("| --- | --- | --- | --- | --- | --- | --- |")
    base = {b: results[b]["rps_median"] for b in BASELINES}
    for name, r in results.items():
        ratios = " | ".join(f"{r['rps_median'] / base[b]:.2f}" for b in BASELINES)
        say(f"| {name} | {r['rps_median']:,.0f} ({r['rps_min']:,.0f}–{r['rps_max']:,.0f}) | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {ratios} |")
    say()
    costs = ", ".join(f"{name} {mcheck_cost(results, name):.2f} × CHECK per request" for name, _ in MCHECKS)
    say(f"Cost per request against CHECK FIXED: {costs}.")
    say()


def mcheck_cost(results, name):
    """What an MCHECK request costs in CHECK FIXED requests: CHECK's throughput over MCHECK's."""
    return results["CHECK FIXED"]["rps_median"] / results[name]["rps_median"]


def measure_memory(server):
    say("### Memory per limiter key")
    say()
    say(f"{KEYSPACE:,} keys of each kind, named like `key:000000012345`; one call each.")
    say()
    say("| key | bytes per key (used_memory) | MEMORY USAGE | encoding | value |")
    say("| --- | --- | --- | --- | --- |")
    results = {}
    for name, command, expire in MEMORY:
        server.cli("FLUSHALL")
        before = int(server.info("used_memory"))
        commands = []
        for key in keys("key:"):
            commands.append([key if a == "{key}" else a for a in command])
            if expire:
                commands.append(["EXPIRE", key, "3600"])
        server.pipe(commands)
        after = int(server.info("used_memory"))
        sample = "key:000000012345"
        usage = int(server.cli("MEMORY", "USAGE", sample))
        encoding = server.cli("OBJECT", "ENCODING", sample)
        value = server.cli("GET", sample)
        per_key = (after - before) / KEYSPACE
        results[name] = {"used_memory_per_key": per_key, "memory_usage": usage, "encoding": encoding, "value": value}
        say(f"| {name} | {per_key:.1f} | {usage} | {encoding} | `{value}` |")
    server.cli("FLUSHALL")
    say()
    return results


def pair_streams(pair, prefix):
    """One stream of pipelined pairs per client, keys drawn with a fixed seed."""
    rng = random.Random(42)
    streams = []
    for client in range(PAIR_CLIENTS):
        me = f"c{client}"
        commands = (c for _ in range(PAIRS_PER_CLIENT)
                    for c in pair(f"{prefix}{rng.randrange(KEYSPACE):012d}", me))
        streams.append(b"".join(resp(c) for c in commands))
    return streams


def server_cpu_s(server):
    return float(server.info("used_cpu_user", "cpu")) + float(server.info("used_cpu_sys", "cpu"))


def feed(process, data):
    process.stdin.write(data)
    process.stdin.close()


def run_pairs_once(server, stream_set):
    """All clients at once: (pairs/s, server CPU µs per pair)."""
    cpu = server_cpu_s(server)
    started = time.perf_counter()
    clients = [subprocess.Popen([CLI, "-p", str(server.port), "--pipe"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in stream_set]
    # Each client's stream is written by its own thread: one blocked pipe
    # must not hold back the others.
    writers = [threading.Thread(target=feed, args=(c, d)) for c, d in zip(clients, stream_set)]
    for w in writers:
        w.start()
    outputs = [c.stdout.read().decode() for c in clients]
    for w, c in zip(writers, clients):
        w.join()
        c.wait()
    elapsed = time.perf_counter() - started
    cpu = server_cpu_s(server) - cpu
    pairs = PAIR_CLIENTS * PAIRS_PER_CLIENT
    for out in outputs:
        if "errors: 0, replies: %d" % (2 * PAIRS_PER_CLIENT) not in out:
            sys.exit(f"redis-cli --pipe reported errors:\n{out}")
    return pairs / elapsed, cpu * 1e6 / pairs


def run_pairs(server):
    """Every pair once per round, rounds interleaved; medians per pair."""
    streams = {name: pair_streams(pair, prefix) for name, pair, prefix in PAIRS}
    samples = {name: [] for name, *_ in PAIRS}
    for _ in range(ROUNDS):
        for name, _, _ in PAIRS:
            samples[name].append(run_pairs_once(server, streams[name]))
    say(f"### Pairs: {PAIR_CLIENTS} clients (`redis-cli --pipe`), keyspace {KEYSPACE:,} keys, "
        f"{PAIR_CLIENTS * PAIRS_PER_CLIENT:,} pairs per run")
    say()
    say("| pair | pairs/s, median (min–max) | server CPU µs per pair | × ZADD+ZREM (pairs/s) | × ZADD+ZREM (CPU) |")
    say("| --- | --- | --- | --- | --- |")
    results = {}
    for name, runs in samples.items():
        rates = [r[0] for r in runs]
        results[name] = {"pairs_per_s_median": statistics.median(rates), "pairs_per_s_min": min(rates),
                         "pairs_per_s_max": max(rates), "cpu_us_per_pair": statistics.median(r[1] for r in runs)}
    base = results["ZADD+ZREM pair"]
    for name, r in results.items():
        say(f"| {name} | {r['pairs_per_s_median']:,.0f} ({r['pairs_per_s_min']:,.0f}–{r['pairs_per_s_max']:,.0f}) | "
            f"{r['cpu_us_per_pair']:.2f} | {r['pairs_per_s_median'] / base['pairs_per_s_median']:.2f} | "
            f"{base['cpu_us_per_pair'] / r['cpu_us_per_pair']:.2f} |")
    say()
    return results


def check_targets(results, memory, pairs):
    say("### Targets")
    say()
    p32, p1 = results["keyspace, -P 32"], results["keyspace, -P 1"]

    def ratio(table, name, base):
        return table[name]["rps_median"] / table[base]["rps_median"]

    rows = [("CHECK FIXED ≥ 0.90 × INCR (TTL keys), -P 32", ratio(p32, "CHECK FIXED", "INCR (TTL keys)"), 0.90),
            ("CHECK FIXED ≥ 2.5 × Lua, -P 32", ratio(p32, "CHECK FIXED", "Lua fixed window"), 2.5)]
    for name in ["CHECK SLIDING", "CHECK TOKEN", "THROTTLE"]:
        rows.append((f"{name} ≥ 0.80 × INCR (TTL keys), -P 32", ratio(p32, name, "INCR (TTL keys)"), 0.80))
    # The fallback's fixed window does more than the plain script (argument
    # checks, the module's reply, its expiry rules) and should cost no more.
    for label, table in [("-P 32", p32), ("-P 1", p1)]:
        rows.append((f"FCALL ratelimit_check FIXED ≥ 1.00 × Lua, {label}",
                     ratio(table, "FCALL ratelimit_check FIXED", "Lua fixed window"), 1.0))
    for label, value, target in rows:
        say(f"- {label}: {value:.2f} {'met' if value >= target else 'MISSED'}")
    for name, target in MCHECKS:
        cost = mcheck_cost(p32, name)
        say(f"- {name} ≤ {target} × CHECK FIXED per request, -P 32: {cost:.2f} {'met' if cost <= target else 'MISSED'}")
    base_p99 = p1["INCR (TTL keys)"]["p99_ms"]
    for name in MODULE_COMMANDS:
        p99 = p1[name]["p99_ms"]
        say(f"- {name} p99 at -P 1 within 10% of INCR (TTL keys)'s {base_p99:.3f} ms: {p99:.3f} ms "
            f"{'met' if p99 <= base_p99 * 1.10 else 'MISSED'}")
    incr = memory["INCR + EXPIRE"]["memory_usage"]
    fixed = memory["CHECK FIXED"]["memory_usage"]
    say(f"- CHECK FIXED MEMORY USAGE ≤ INCR + EXPIRE's {incr} B: {fixed} B {'met' if fixed <= incr else 'MISSED'}")
    for name in ["CHECK SLIDING", "CHECK TOKEN"]:
        usage = memory[name]["memory_usage"]
        say(f"- {name} MEMORY USAGE ≤ 80 B: {usage} B {'met' if usage <= 80 else 'MISSED'}")
    lease = pairs["ACQUIRE+RELEASE pair"]["pairs_per_s_median"] / pairs["ZADD+ZREM pair"]["pairs_per_s_median"]
    say(f"- ACQUIRE+RELEASE pairs ≥ 0.70 × ZADD+ZREM pairs: {lease:.2f} {'met' if lease >= 0.70 else 'MISSED'}")
    say()


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def main():
    if not MODULE.exists():
        sys.exit(f"{MODULE} is missing: run `make bench` (it builds the release module first)")
    if sys.argv[1:] == ["--pairs"]:
        server = Server()
        try:
            say(f"- server: redis {server.info('redis_version', 'server')}, machine: {machine()}, "
                f"{ROUNDS} interleaved round(s)")
            say()
            pairs = run_pairs(server)
        finally:
            server.stop()
        ratio = pairs["ACQUIRE+RELEASE pair"]["pairs_per_s_median"] / pairs["ZADD+ZREM pair"]["pairs_per_s_median"]
        say(f"ACQUIRE+RELEASE pairs / ZADD+ZREM pairs: {ratio:.2f} (target ≥ 0.70)")
        return
    server = Server()
    try:
        server.cli("SCRIPT", "LOAD", LUA)
        server.cli("FUNCTION", "LOAD", "REPLACE", LIBRARY)
        version = server.info("redis_version", "server")
        say(f"## redis-ratelimit benchmark, {time.strftime('%Y-%m-%d')}")
        say()
        say(f"- server: redis {version} (`{SERVER}`), module `{MODULE.name}`")
        say(f"- machine: {machine()}")
        say(f"- load: redis-benchmark -c {CLIENTS}, keyspace {KEYSPACE:,} keys (-r), "
            f"{ROUNDS} interleaved round(s), median reported; {'quick run' if QUICK else 'full run'}")
        say(f"- command: `make bench{' BENCH_QUICK=1' if QUICK else ''}{' BENCH_SAVE=1' if SAVED else ''}`")
        say()
        prepared = set()
        for name, command, prefix, how in COMMANDS:
            # The first command on a keyspace prepares it (CHECK FIXED, not its look).
            for one in prefix if isinstance(prefix, tuple) else (prefix,):
                if one not in prepared:
                    prepare(server, command, one, how)
                    prepared.add(one)
        results, raw = {}, []
        for label, pipeline, hot in [("keyspace, -P 32", 32, False), ("keyspace, -P 1", 1, False),
                                     ("hot key, -P 32", 32, True)]:
            results[label], out = run_suite(server, label, pipeline, hot)
            raw += out
            print_table(label, results[label])
        memory = measure_memory(server)
        pairs = run_pairs(server)
        check_targets(results, memory, pairs)
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.txt").write_text("\n".join(log_lines) + "\n\n## Raw redis-benchmark output\n\n" + "\n".join(raw) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps({"throughput": results, "memory": memory, "pairs": pairs,
                                                     "server": version, "machine": machine(), "quick": QUICK},
                                                    indent=2) + "\n")
    say(f"Written: {RESULTS / 'latest.txt'}, {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
