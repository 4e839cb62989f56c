"""Fixtures over real services: redis-server, Postgres, a TCP proxy, kmock + kubectl, the operator.

Helpers live in ``tests/support`` (import them as ``support.<module>``). No
fixture skips: a missing service is a failed test with the reason spelled out.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # keeps `support` importable even if tests/ becomes a package
    sys.path.insert(0, str(TESTS_DIR))

from support.kube import Kube, start_kube  # noqa: E402
from support.leaks import SESSION_PASSWORD, assert_no_session_leak  # noqa: E402
from support.operator_proc import DEFAULT_COMMAND, OperatorProcess  # noqa: E402
from support.queuepolicy import SlackSink  # noqa: E402
from support.redis_cluster import RedisCluster  # noqa: E402
from support.redis_server import RedisServer, find_redis_server  # noqa: E402
from support.tcp_proxy import TcpProxy  # noqa: E402

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


# ---------------------------------------------------------------- Redis


def pytest_report_header(config: pytest.Config) -> str:
    """Name the redis-server binary and version the session runs on (``make test-redis62`` picks 6.2)."""
    binary = find_redis_server()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return f"redis-server: {binary} ({version.strip()})"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """This session's own redis-server (never the shared one on 6379), behind a password made of
    hostile characters (:data:`support.leaks.SESSION_PASSWORD`) that fixtures look for in output."""
    server = RedisServer(password=SESSION_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, FLUSHALLed for this test (restarted if a test killed it)."""
    if not redis_server.running:
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A ``redis.asyncio`` client (``decode_responses=True``) on ``redis_url``."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra redis-servers (e.g. to kill one without hurting the session's); all stopped.

    ``redis_factory(password=..., args=[...])`` passes those to :class:`RedisServer`
    (``--requirepass``; e.g. ``["--appendonly", "yes"]`` so data survives ``restart()``).
    """
    servers: list[RedisServer] = []

    def start(*, password: str | None = None, args: Sequence[str] = ()) -> RedisServer:
        server = RedisServer(password=password, args=args).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# ---------------------------------------------------------------- Postgres


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The machine's Postgres (trust auth, database ``test``); fails loudly when unreachable."""
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        pytest.fail(
            f"Postgres is not reachable at {PG_DSN}: {exc}. Start it (trust auth for "
            "postgres on 127.0.0.1, database 'test'); these tests need the real one.",
            pytrace=False,
        )
    return PG_DSN


# ---------------------------------------------------------------- TCP proxy


@pytest_asyncio.fixture
async def proxy_factory() -> AsyncIterator[Callable[[str, int], Awaitable[TcpProxy]]]:
    """``await proxy_factory(host, port)`` -> a started TcpProxy on this test's loop; all stopped.

    For a proxy serving a subprocess while the test blocks, run TcpProxy on a
    ``support.BackgroundLoop`` instead.
    """
    proxies: list[TcpProxy] = []

    async def start(host: str, port: int) -> TcpProxy:
        proxy = await TcpProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            await proxy.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    """One Redis Cluster (3 primaries, 3 replicas) for the session, about 2 s to start; tests use
    queues (or hash tags) of their own. The failover test (tests/interop/test_cluster.py) leaves
    the slot of ``{bull}`` with a new primary and no replica; nothing else needs one."""
    c = RedisCluster().start()
    try:
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------- Kubernetes


@pytest.fixture
def kube() -> Iterator[Kube]:
    """A fresh kmock API server with crds/*.yaml registered, a kubeconfig, and ``kube.kubectl``."""
    k = start_kube()
    try:
        yield k
        assert_no_session_leak(shown_by_the_api(k), "Events or the status of a requeue object")
    finally:
        k.close()


def shown_by_the_api(kube: Kube) -> str:
    """Every Event and every DLQReplay and QueuePolicy (status included) as JSON: what
    ``kubectl describe`` and ``kubectl get -o yaml`` show on-call; Secrets are not in it."""
    return kube.kubectl("get", "events,dlqreplays,queuepolicies", "-A", "-o", "json", timeout=30).stdout


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def operator_factory(kube: Kube, tmp_path: Path) -> Iterator[OperatorFactory]:
    """``operator_factory(command=..., env=...)`` -> a started OperatorProcess on ``kube``.

    Every process is stopped (SIGTERM, then SIGKILL) at teardown; its log is
    printed then, so a failing test shows what the operator said.
    """
    procs: list[OperatorProcess] = []

    def start(
        command: Sequence[str] = DEFAULT_COMMAND, *, env: dict[str, str] | None = None, start: bool = True
    ) -> OperatorProcess:
        log = tmp_path / f"operator-{len(procs) + 1}.log"
        proc = OperatorProcess(kube.kubeconfig, log, command=command, env=env)
        procs.append(proc)
        return proc.start() if start else proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop(timeout=10)
            print(f"--- {proc.log_path} ---\n{proc.logs()[-8000:]}")
    for proc in procs:  # after every process stopped, so a leak never leaves one running
        assert_no_session_leak(proc.logs(), f"the operator's log {proc.log_path}")


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackSink]:
    """A local Slack webhook that records every message posted to it (the operator's or a policy's)."""
    sink = await SlackSink().start()
    try:
        yield sink
    finally:
        await sink.stop()
