"""Redis gate against redis-server processes of the test's own: healthy, killed, slow, full, locked."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from requeue.api import GatePolicy, GateSpec
from requeue.api.common import RedisConnection
from requeue.gates import GateResult, GateRunner, run_check
from requeue.gates.runner import GRACE
from requeue.queues import TlsOptions
from requeue.redis_target import resolve_redis
from requeue.secrets import StaticSecrets
from support.gates import ControlledHttp, make_certificates
from support.redis_server import RedisServer, free_port
from support.tcp_proxy import TcpProxy
from support.tls_redis import tls_redis_server

PASSWORD = "redis-Secret-7c1e"
RedisFactory = Callable[[], RedisServer]
ProxyFactory = Callable[[str, int], Awaitable[TcpProxy]]


def gate(**redis_spec: Any) -> GateSpec:
    return GateSpec.model_validate({"name": "redis", "redis": redis_spec})


async def check(url: str, **redis_spec: Any) -> GateResult:
    """The gate with the URL from a Secret (``urlSecretRef``)."""
    spec = gate(urlSecretRef={"name": "r", "key": "url"}, **redis_spec)
    return await run_check(spec, StaticSecrets({("r", "url"): url}))


def config_set(server: RedisServer, name: str, value: str, password: str | None = None) -> None:
    client = redis.Redis(host=server.host, port=server.port, password=password)
    try:
        client.config_set(name, value)
    finally:
        client.close()


async def test_healthy_through_the_resources_own_redis(redis_url: str) -> None:
    result = await run_check(gate(), StaticSecrets({}), default_redis_url=redis_url)
    assert result.healthy, result.message
    assert result.message.startswith("PING ")


async def test_without_any_url_the_gate_says_so() -> None:
    result = await run_check(gate(), StaticSecrets({}))
    assert not result.healthy
    assert "set urlSecretRef" in result.message


async def test_memory_against_maxmemory(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    result = await check(server.url, maxMemoryPercent=90)
    assert result.healthy
    assert "maxmemory not set, memory not checked" in result.message

    info = redis.Redis(host=server.host, port=server.port).info("memory")
    used = int(info["used_memory"])
    config_set(server, "maxmemory", str(used * 10))
    result = await check(server.url, maxMemoryPercent=90)
    assert result.healthy, result.message
    assert "memory " in result.message

    config_set(server, "maxmemory", str(int(used * 1.05)))
    result = await check(server.url, maxMemoryPercent=50)
    assert not result.healthy
    assert "above maxMemoryPercent 50" in result.message


async def test_killed_then_restarted_counts_up_to_the_success_threshold(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    runner = GateRunner(
        [gate()],
        GatePolicy(success_threshold=2, failure_threshold=1),
        StaticSecrets({}),
        default_redis_url=server.url,
        namespace="ns",
        owner="replay-1",
    )
    now = datetime(2025, 7, 16, 12, 0, tzinfo=UTC)
    step = timedelta(seconds=10)

    statuses = await runner.check([], now)
    assert statuses[0].consecutive_successes == 1 and not runner.all_passed(statuses)
    statuses = await runner.check(statuses, now + step)
    assert runner.all_passed(statuses) and statuses[0].healthy

    server.kill()
    statuses = await runner.check(statuses, now + 2 * step)
    assert runner.any_red(statuses)
    assert not statuses[0].healthy
    assert statuses[0].message.endswith("connection refused"), statuses[0].message

    server.restart()
    statuses = await runner.check(statuses, now + 3 * step)
    assert statuses[0].consecutive_successes == 1 and statuses[0].consecutive_failures == 0
    assert not runner.all_passed(statuses) and not statuses[0].healthy  # one pass is not enough
    assert not runner.any_red(statuses)
    statuses = await runner.check(statuses, now + 4 * step)
    assert runner.all_passed(statuses) and statuses[0].healthy


async def test_latency_over_max_latency_trips(
    redis_factory: RedisFactory, proxy_factory: ProxyFactory
) -> None:
    server = redis_factory()
    proxy = await proxy_factory(server.host, server.port)
    url = f"redis://{proxy.host}:{proxy.port}/0"
    assert (await check(url, maxLatency="50ms")).healthy

    await proxy.delay(60)  # each way: a PING round trip takes >= 120 ms
    result = await check(url, maxLatency="50ms")
    assert not result.healthy
    assert "(maxLatency 50ms)" in result.message and result.message.startswith("PING took ")

    await proxy.passthrough()
    assert (await check(url, maxLatency="50ms")).healthy


async def test_redis_that_stops_answering_is_a_bounded_timeout(
    redis_factory: RedisFactory, proxy_factory: ProxyFactory
) -> None:
    server = redis_factory()
    proxy = await proxy_factory(server.host, server.port)
    await proxy.delay(5000)
    started = time.monotonic()
    result = await check(f"redis://default:{PASSWORD}@{proxy.host}:{proxy.port}/0", timeout="1s")
    assert time.monotonic() - started < 1 + GRACE + 1.0
    assert not result.healthy
    assert "no answer within 1s (timeout)" in result.message
    assert PASSWORD not in result.message


async def test_dropped_connections(redis_factory: RedisFactory, proxy_factory: ProxyFactory) -> None:
    server = redis_factory()
    proxy = await proxy_factory(server.host, server.port)
    await proxy.drop()
    result = await check(f"redis://{proxy.host}:{proxy.port}/0")
    assert not result.healthy
    assert result.message.startswith(f"redis://{proxy.host}:{proxy.port}/0: ")


async def test_wrong_password_and_no_password(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    config_set(server, "requirepass", PASSWORD)

    good = await check(f"redis://default:{PASSWORD}@{server.host}:{server.port}/0")
    assert good.healthy, good.message

    wrong = "not-the-password-42"
    result = await check(f"redis://default:{wrong}@{server.host}:{server.port}/0")
    assert not result.healthy
    assert "wrong user name or password (WRONGPASS)" in result.message
    assert f"redis://default:***@{server.host}:{server.port}/0" in result.message
    assert wrong not in result.message and PASSWORD not in result.message

    result = await check(f"redis://{server.host}:{server.port}/0")
    assert not result.healthy
    assert "authentication required (NOAUTH)" in result.message


async def test_tls_to_a_plaintext_server(redis_url: str) -> None:
    result = await check(redis_url.replace("redis://", "rediss://"), timeout="1s")
    assert not result.healthy
    assert "(timeout); no TLS handshake: does the server speak TLS on that port?" in result.message


async def test_tls_certificate_not_trusted(tmp_path: Path) -> None:
    """A TLS server whose certificate no system CA signed (any TLS listener shows it before RESP)."""
    server = await ControlledHttp(ssl_context=make_certificates(tmp_path).server_context()).start()
    try:
        result = await check(f"rediss://default:{PASSWORD}@127.0.0.1:{server.port}/0")
    finally:
        await server.stop()
    assert not result.healthy
    assert "TLS certificate verification failed" in result.message, result.message
    assert PASSWORD not in result.message


async def test_refused_and_dns() -> None:
    refused = await check(f"redis://default:{PASSWORD}@127.0.0.1:{free_port()}/0")
    assert not refused.healthy and refused.message.endswith(": connection refused")
    assert PASSWORD not in refused.message

    dns = await check(f"redis://default:{PASSWORD}@no-such-host.invalid:6379/0")
    assert not dns.healthy and dns.message.endswith(": cannot resolve host name (DNS)")
    assert PASSWORD not in dns.message


async def test_not_a_redis_url() -> None:
    result = await check(f"http://user:{PASSWORD}@example.com/")
    assert not result.healthy
    assert "not a valid Redis URL" in result.message
    assert PASSWORD not in result.message


async def test_a_url_option_redis_py_cannot_take_is_named_not_a_traceback() -> None:
    result = await check(f"redis://default:{PASSWORD}@127.0.0.1:{free_port()}/0?ssl_cert_reqs=none")
    assert not result.healthy
    assert "the option 'ssl_cert_reqs' is for TLS, and this URL is redis://" in result.message, result.message
    assert PASSWORD not in result.message


async def test_resources_own_tls_redis_is_verified_with_its_ca(tmp_path: Path) -> None:
    """A gate without urlSecretRef checks the resource's rediss:// Redis with spec.redis.tls's CA."""
    with tls_redis_server(tmp_path, password=PASSWORD) as (port, ca_pem):
        url = f"rediss://default:{PASSWORD}@127.0.0.1:{port}/0"
        conn = RedisConnection.model_validate(
            {"urlSecretRef": {"name": "r", "key": "url"}, "tls": {"caSecretRef": {"name": "r", "key": "ca"}}}
        )
        target = await resolve_redis(StaticSecrets({("r", "url"): url, ("r", "ca"): ca_pem}), conn)
        assert target.url == url and target.tls == TlsOptions(ca_pem=ca_pem)
        policy = GatePolicy(success_threshold=1, failure_threshold=1)
        now = datetime(2025, 7, 16, 12, 0, tzinfo=UTC)

        runner = GateRunner(
            [gate()],
            policy,
            StaticSecrets({}),
            default_redis_url=target.url,
            default_redis_tls=target.tls,
            namespace="ns",
            owner="tls",
        )
        statuses = await runner.check([], now)
        assert runner.all_passed(statuses), statuses[0].message
        assert statuses[0].message.startswith("PING ")

        without_ca = GateRunner(
            [gate()], policy, StaticSecrets({}), default_redis_url=url, namespace="ns", owner="tls"
        )
        statuses = await without_ca.check([], now)
        assert runner.any_red(statuses)
        assert "TLS certificate verification failed" in statuses[0].message, statuses[0].message
        assert PASSWORD not in statuses[0].message

        insecure = await run_check(
            gate(),
            StaticSecrets({}),
            default_redis_url=url,
            default_redis_tls=TlsOptions(insecure_skip_verify=True),
        )
        assert insecure.healthy, insecure.message

        # the CA is for the resource's own Redis only: a gate with its own urlSecretRef does not get it
        own = await run_check(
            gate(urlSecretRef={"name": "r", "key": "url"}),
            StaticSecrets({("r", "url"): url}),
            default_redis_url=url,
            default_redis_tls=target.tls,
        )
        assert not own.healthy and "TLS certificate verification failed" in own.message, own.message
