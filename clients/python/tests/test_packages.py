"""Install from the built artefacts: clients/build makes the wheel, the
sdist and the npm tarball; each is installed into a fresh venv or project
and used against a real server."""

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from servers import REPO, Server

SMOKE_PY = """
import sys, redis_ratelimit_client as rl
from redis_ratelimit_client._core import library_text
assert rl.__version__ == sys.argv[2], rl.__version__
assert library_text() == open(sys.argv[3]).read()
limiter = rl.RateLimiter(url=sys.argv[1])
d = limiter.check("smoke", 2, 60)
assert (d.allowed, d.remaining) == (True, 1), d
print("ok", limiter.backend)
"""

# A `limits` app names the storage URI and imports nothing of the package:
# the wheel's .pth makes the scheme known.
SMOKE_LIMITS = """
import sys
from limits import parse, storage, strategies
hits = strategies.FixedWindowRateLimiter(storage.storage_from_string(sys.argv[1]))
print(*(hits.hit(parse("3/minute"), "smoke") for _ in range(5)))
"""

SMOKE_JS = """
import { RateLimiter, VERSION, LIBRARY } from 'redis-ratelimit-client';
import { readFileSync } from 'node:fs';
if (VERSION !== process.argv[3]) throw new Error(VERSION);
if (LIBRARY !== readFileSync(process.argv[4], 'utf8')) throw new Error('library');
const limiter = await new RateLimiter({ url: process.argv[2] }).connect();
const d = await limiter.check('smoke-js', '2 60');
if (!d.allowed || d.remaining !== 1) throw new Error(JSON.stringify(d));
console.log('ok', await limiter.backend());
await limiter.close();
"""


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(REPO / "clients" / "build"), str(out)], check=True, capture_output=True, text=True)
    return out


def version():
    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["version"]


def test_the_artefacts_carry_the_modules_version(artefacts):
    v = version()
    names = sorted(p.name for p in artefacts.iterdir())
    assert names == [f"redis-ratelimit-client-{v}.tgz", f"redis_ratelimit_client-{v}-py3-none-any.whl",
                     f"redis_ratelimit_client-{v}.tar.gz"]


@pytest.mark.parametrize("kind", ["whl", "tar.gz"])
def test_the_python_artefacts_install_into_a_fresh_venv(artefacts, tmp_path, kind):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    (artefact,) = artefacts.glob(f"*.{kind}")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{artefact}[limits]"],
                   check=True, capture_output=True, text=True)
    server = Server(module=False)
    try:
        out = subprocess.run([str(python), "-c", SMOKE_PY, server.url(), version(),
                              str(REPO / "fallback" / "ratelimit.lua")], capture_output=True, text=True,
                             cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["ok", "functions"]
        cli = subprocess.run([str(env_dir / "bin" / "redis-ratelimit"), "--url", server.url(), "policy", "set",
                              "api", "0 60"], capture_output=True, text=True)
        assert cli.returncode == 2 and cli.stderr.startswith("refused:")
        uri = server.url().replace("redis://", "redis-ratelimit://", 1)
        limits_app = subprocess.run([str(python), "-c", SMOKE_LIMITS, uri], capture_output=True, text=True,
                                    cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert limits_app.returncode == 0, limits_app.stderr
        assert limits_app.stdout.split() == ["True", "True", "True", "False", "False"]
    finally:
        server.remove()


def test_the_npm_tarball_installs_into_a_fresh_project(artefacts, tmp_path):
    (tgz,) = artefacts.glob("*.tgz")
    (tmp_path / "package.json").write_text('{"name": "smoke", "private": true, "type": "module"}')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", str(tgz)], cwd=tmp_path,
                   check=True, capture_output=True, text=True)
    (tmp_path / "smoke.mjs").write_text(SMOKE_JS)
    server = Server(module=True)
    try:
        out = subprocess.run(["node", "smoke.mjs", server.url(), version(), str(REPO / "fallback" / "ratelimit.lua")],
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["ok", "module"]
    finally:
        server.remove()
