"""HTTP gate against a local HTTP(S) API the test controls: status codes, JSON, slowness, TLS, secrets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from requeue.api import GateSpec
from requeue.gates import GateResult, run_check
from requeue.gates.http import MAX_BODY
from requeue.gates.runner import GRACE
from requeue.secrets import StaticSecrets
from support.gates import Certificates, ControlledHttp, make_certificates

TOKEN = "cgb-Token-51d0e7"
SECRETS = StaticSecrets({("cgb", "bearer"): TOKEN})


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest_asyncio.fixture
async def tls_api(certificates: Certificates) -> AsyncIterator[ControlledHttp]:
    server = await ControlledHttp(ssl_context=certificates.server_context()).start()
    try:
        yield server
    finally:
        await server.stop()


async def check(url: str, secrets: StaticSecrets = SECRETS, **http: Any) -> GateResult:
    spec = GateSpec.model_validate({"name": "cgb-api", "http": {"url": url, **http}})
    return await run_check(spec, secrets)


async def test_200_is_healthy(api: ControlledHttp) -> None:
    result = await check(api.url("/status/200"))
    assert result.healthy
    assert result.message == "HTTP 200 OK"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (429, "HTTP 429 Too Many Requests (expected 200)"),
        (500, "HTTP 500 Internal Server Error (expected 200)"),
        (503, "HTTP 503 Service Unavailable (expected 200)"),
    ],
)
async def test_unexpected_status(api: ControlledHttp, code: int, message: str) -> None:
    result = await check(api.url(f"/status/{code}"))
    assert not result.healthy
    assert result.message == message


async def test_expect_status_list(api: ControlledHttp) -> None:
    assert (await check(api.url("/status/204"), expectStatus=[200, 204])).healthy
    result = await check(api.url("/status/404"), expectStatus=[200, 204])
    assert result.message == "HTTP 404 Not Found (expected 200, 204)"


async def test_json_path_equals(api: ControlledHttp) -> None:
    result = await check(api.url("/json"), jsonPath="$.status", equals="ok")
    assert result.healthy
    assert result.message == 'HTTP 200 OK, $.status is "ok"'
    assert (await check(api.url("/json"), jsonPath="$.checks[0].ok", equals=True)).healthy

    api.json_body = {"status": "degraded", "checks": [{"ok": 1}]}
    result = await check(api.url("/json"), jsonPath="$.status", equals="ok")
    assert not result.healthy
    assert result.message == 'HTTP 200 OK but $.status is "degraded" (expected "ok")'
    result = await check(api.url("/json"), jsonPath="$.checks[0].ok", equals=True)
    assert result.message == "HTTP 200 OK but $.checks[0].ok is 1 (expected true)"  # 1 is not true
    result = await check(api.url("/json"), jsonPath="$.checks[3].ok", equals=True)
    assert result.message == "HTTP 200 OK but $.checks[3].ok is missing (expected true)"


async def test_body_that_is_not_json(api: ControlledHttp) -> None:
    result = await check(api.url("/text"), jsonPath="$.status", equals="ok")
    assert not result.healthy
    assert result.message == "HTTP 200 OK but the body is not JSON ($.status not evaluated)"


async def test_response_body_is_capped(api: ControlledHttp) -> None:
    assert (await check(api.url("/big"))).healthy  # status only: the body is not needed
    result = await check(api.url("/big"), jsonPath="$.status", equals="ok")
    assert not result.healthy
    assert f"larger than {MAX_BODY // 1024} KiB" in result.message


async def test_slow_answer_is_a_bounded_timeout(api: ControlledHttp) -> None:
    started = time.monotonic()
    result = await check(api.url("/slow?seconds=10"), timeout="1s")
    assert time.monotonic() - started < 1 + GRACE + 1.0
    assert not result.healthy
    assert result.message.endswith("within 1s (timeout)")
    assert (await check(api.url("/slow?seconds=0.2"), timeout="3s")).healthy


async def test_redirects_are_not_followed_by_default(api: ControlledHttp) -> None:
    result = await check(api.url("/redirect"))
    assert not result.healthy
    assert result.message.startswith("HTTP 302 Found (expected 200); redirects are not followed")
    assert "redirect-token-123" not in result.message  # the Location's query string is redacted
    followed = await check(api.url("/redirect"), followRedirects=True)
    assert followed.healthy, followed.message


async def test_method_body_and_header_from_a_secret(api: ControlledHttp) -> None:
    result = await check(
        api.url("/echo"),
        method="POST",
        body='{"text": "Health check"}',
        headers=[
            {
                "name": "Authorization",
                "valueFrom": {"secretKeyRef": {"name": "cgb", "key": "bearer"}},
                "prefix": "Bearer ",
            },
            {"name": "X-Env", "value": "prod"},
        ],
    )
    assert result.healthy, result.message
    request = api.requests[-1]
    assert request["method"] == "POST"
    assert request["body"] == '{"text": "Health check"}'
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["X-Env"] == "prod"


async def test_secret_echoed_by_the_server_never_reaches_the_message(api: ControlledHttp) -> None:
    header = {
        "name": "Authorization",
        "valueFrom": {"secretKeyRef": {"name": "cgb", "key": "bearer"}},
        "prefix": "Bearer ",
    }
    result = await check(api.url("/echo"), headers=[header], jsonPath="$.auth", equals="something else")
    assert not result.healthy
    assert "$.auth is" in result.message
    assert TOKEN not in result.message
    assert "***" in result.message


async def test_missing_header_secret(api: ControlledHttp) -> None:
    header = {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "cgb", "key": "nope"}}}
    result = await check(api.url("/status/200"), headers=[header])
    assert not result.healthy
    assert "cgb/nope" in result.message
    assert api.requests == []  # nothing was sent without the header


async def test_url_credentials_are_redacted() -> None:
    from support.redis_server import free_port

    result = await check(f"http://user:{TOKEN}@127.0.0.1:{free_port()}/health?key={TOKEN}")
    assert not result.healthy
    assert result.message.endswith("connection refused")
    assert TOKEN not in result.message


async def test_self_signed_certificate_rejected_without_the_ca(tls_api: ControlledHttp) -> None:
    result = await check(tls_api.url("/status/200"))
    assert not result.healthy
    assert "TLS certificate verification failed" in result.message
    assert "set caSecretRef" in result.message


async def test_self_signed_certificate_verified_with_the_ca_from_a_secret(
    tls_api: ControlledHttp, certificates: Certificates
) -> None:
    secrets = StaticSecrets({("cgb-ca", "ca.crt"): certificates.ca_pem})
    result = await check(
        tls_api.url("/json"),
        secrets,
        caSecretRef={"name": "cgb-ca", "key": "ca.crt"},
        jsonPath="$.status",
        equals="ok",
    )
    assert result.healthy, result.message


async def test_the_ca_from_a_secret_replaces_the_system_bundle(
    tls_api: ControlledHttp, tmp_path: Path
) -> None:
    other_ca = make_certificates(tmp_path).ca_pem
    secrets = StaticSecrets({("cgb-ca", "ca.crt"): other_ca})
    result = await check(tls_api.url("/status/200"), secrets, caSecretRef={"name": "cgb-ca", "key": "ca.crt"})
    assert not result.healthy
    assert "TLS certificate verification failed" in result.message


async def test_a_ca_secret_that_is_not_pem(tls_api: ControlledHttp) -> None:
    secrets = StaticSecrets({("cgb-ca", "ca.crt"): "not a certificate"})
    result = await check(tls_api.url("/status/200"), secrets, caSecretRef={"name": "cgb-ca", "key": "ca.crt"})
    assert not result.healthy
    assert result.message == "the CA in secret cgb-ca/ca.crt is not a valid PEM certificate bundle"
