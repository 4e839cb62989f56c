"""The operator's gate destination policy against real local servers on 127.0.0.1: denied hosts,
names that resolve to denied addresses and redirects to them are refused before connecting;
the default list refuses cloud metadata without a packet sent. No test sends traffic off loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from requeue.api import GateSpec, HttpGate
from requeue.gates import GateResult, run_check
from requeue.gates.destinations import ALLOW_ENV, DENY_ENV, DestinationPolicy
from requeue.gates.http import check_http
from requeue.secrets import StaticSecrets
from support.gates import ControlledHttp
from support.redis_server import RedisServer

#: (event, address) of every socket connect/getaddrinfo while a test records; None otherwise.
_seen: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _seen is not None and event in ("socket.connect", "socket.getaddrinfo"):
        target = args[1] if event == "socket.connect" else args[0]
        _seen.append((event, str(target[0] if isinstance(target, tuple) else target)))


sys.addaudithook(_audit)


@pytest.fixture
def sockets() -> Iterator[list[tuple[str, str]]]:
    """What the process resolved and connected to during the test (Python's audit events)."""
    global _seen
    _seen = []
    try:
        yield _seen
    finally:
        _seen = None


async def http_gate(url: str, **http: Any) -> GateResult:
    spec = GateSpec.model_validate({"name": "probe", "http": {"url": url, **http}})
    return await run_check(spec, StaticSecrets({}))


async def test_the_default_list_refuses_cloud_metadata_before_any_packet(
    sockets: list[tuple[str, str]],
) -> None:
    for url in (
        "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]/",
    ):
        result = await http_gate(url, headers=[{"name": "Metadata-Flavor", "value": "Google"}])
        assert not result.healthy
        assert "DestinationDenied" in result.message and "default deny list" in result.message, result.message
    assert sockets == []  # refused before resolving or connecting anything


async def test_a_metadata_answer_never_reaches_the_status(sockets: list[tuple[str, str]]) -> None:
    result = await http_gate("http://169.254.169.254/token", jsonPath="$.access_token", equals="x")
    assert result.message == (
        "GET http://169.254.169.254/token: DestinationDenied: 169.254.169.254 is "
        "denied by the operator's gate policy (the default deny list: link-local "
        "and cloud metadata)"
    )
    assert sockets == []


async def test_a_deny_entry_blocks_the_address_and_names_that_resolve_to_it(
    api: ControlledHttp, monkeypatch: pytest.MonkeyPatch, sockets: list[tuple[str, str]]
) -> None:
    assert (await http_gate(api.url("/status/200"))).healthy
    monkeypatch.setenv(DENY_ENV, "10.0.0.0/8, 127.0.0.1/32")
    refused = await http_gate(api.url("/status/200"))
    assert not refused.healthy
    assert f"127.0.0.1 is denied by the operator's gate policy ({DENY_ENV})" in refused.message
    by_name = await http_gate(f"http://localhost:{api.port}/status/200")
    assert not by_name.healthy and "localhost (127.0.0.1) is denied" in by_name.message, by_name.message
    assert len(api.requests) == 1  # only the first, allowed check arrived
    assert [a for e, a in sockets if e == "socket.connect"].count("127.0.0.1") == 1


async def test_an_allow_list_admits_only_its_destinations(
    api: ControlledHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_ENV, ".svc.cluster.local,192.0.2.0/24")
    result = await http_gate(api.url("/status/200"))
    assert not result.healthy
    assert f"127.0.0.1 is not in the operator's allowed gate destinations ({ALLOW_ENV})" in result.message
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.0/8")
    assert (await http_gate(api.url("/status/200"))).healthy
    monkeypatch.setenv(DENY_ENV, "127.0.0.1")  # deny wins
    assert not (await http_gate(api.url("/status/200"))).healthy
    assert len(api.requests) == 1


async def test_a_redirect_to_a_denied_host_is_not_followed(api: ControlledHttp) -> None:
    policy = DestinationPolicy.build(deny=["localhost"])
    hop = api.url(f"/redirect-to?url=http://localhost:{api.port}/status/200")
    result = await check_http(
        HttpGate.model_validate({"url": hop, "followRedirects": True}),
        StaticSecrets({}),
        policy=policy,
    )
    assert not result.healthy
    assert "DestinationDenied: localhost is denied by the operator's gate policy" in result.message
    assert [r["path"] for r in api.requests] == ["/redirect-to"]  # the second hop never arrived
    allowed = await check_http(
        HttpGate.model_validate({"url": hop, "followRedirects": True}),
        StaticSecrets({}),
        policy=DestinationPolicy.build(),
    )
    assert allowed.healthy, allowed.message


async def test_redis_and_postgres_gates_are_checked_too(
    redis_server: RedisServer, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_gate = GateSpec.model_validate(
        {"name": "cache", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}}
    )
    pg_gate = GateSpec.model_validate(
        {"name": "db", "postgres": {"dsnSecretRef": {"name": "db", "key": "dsn"}}}
    )
    secrets = StaticSecrets({("r", "url"): redis_server.url, ("db", "dsn"): pg_dsn})
    assert (await run_check(redis_gate, secrets)).healthy
    assert (await run_check(pg_gate, secrets)).healthy
    monkeypatch.setenv(DENY_ENV, "127.0.0.0/8,::1/128,localhost")
    for gate in (redis_gate, pg_gate):
        result = await run_check(gate, secrets)
        assert not result.healthy and "DestinationDenied" in result.message, result.message
        assert f"({DENY_ENV})" in result.message
