import pytest

from servers import Cluster, Server, redis_6_2

BACKENDS = ["module", "functions", "script"]


def start(backend: str) -> Server:
    if backend == "module":
        return Server(module=True)
    if backend == "functions":
        return Server(module=False)
    binary = redis_6_2()
    if binary is None:
        pytest.skip("script backend: no Redis 6.2 here (`make test-matrix` installs one into target/servers)")
    return Server(module=False, binary=binary)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(backend name, a server that offers exactly it)."""
    server = start(request.param)
    yield request.param, server
    server.remove()


@pytest.fixture
def server():
    s = Server(module=True)
    yield s
    s.remove()


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(module=True)
    yield c
    c.remove()


@pytest.fixture(scope="session")
def bare_cluster():
    c = Cluster(module=False)
    yield c
    c.remove()
