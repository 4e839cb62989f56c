"""HTTP gate: the provider's health endpoint answers an expected status (and JSON value) in time.

The runbook's ``curl -H "Authorization: Bearer $CGB_API_KEY" "$CGB_API_URL/health"``,
with the header value from a Secret and the certificate checked against an
optional CA bundle from a Secret.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import certifi
import httpcore
import httpx

from requeue.api.base import parse_duration
from requeue.api.conditions import Reason
from requeue.api.gates import HeaderValueSource, HttpGate
from requeue.gates.destinations import DestinationDenied, DestinationPolicy, GuardedBackend, current_policy
from requeue.gates.result import (
    CheckFailed,
    GateResult,
    RecordingSecrets,
    clip,
    describe_network_error,
    read_secret,
)
from requeue.redact import redact_text, redact_url, sensitive_parts
from requeue.secrets import SecretSource

__all__ = [
    "MAX_BODY",
    "HttpAnswer",
    "JsonPathError",
    "check_http",
    "evaluate_json_path",
    "exchange",
    "is_missing",
    "json_equals",
    "judge",
    "status_text",
]

#: Bytes of the response body read at most; the rest is never downloaded.
MAX_BODY = 64 * 1024

_PATH_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]")
_MISSING = object()


class JsonPathError(ValueError):
    """The path is not of the supported form ``$.a.b[0]``."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What the server answered: the status, at most :data:`MAX_BODY` bytes of the body and
    whether there was more, and the latency (seconds) up to the end of the body."""

    status_code: int
    body: bytes
    truncated: bool
    latency: float


async def check_http(
    spec: HttpGate, secrets: SecretSource, *, policy: DestinationPolicy | None = None
) -> GateResult:
    """Send the request and judge the status code and, with ``jsonPath``, one JSON value.

    :param policy: where the request may go (default: the operator's, see
        :mod:`requeue.gates.destinations`); checked after DNS, before every connection.
    """
    started = time.monotonic()
    recording = RecordingSecrets(secrets)
    try:
        answer = await exchange(spec, recording, policy or current_policy(), started=started)
    except CheckFailed as failure:
        return failure.result(started)
    return judge(spec, answer, [*recording.values, *sensitive_parts(spec.url)])


async def exchange(
    spec: HttpGate, secrets: SecretSource, policy: DestinationPolicy, *, started: float
) -> HttpAnswer:
    """Send the request (header values from ``secrets``) where ``policy`` allows; the answer.

    The HTTP gate and the replay's smoke test share it. ``started`` is ``time.monotonic()``
    when the check began.

    :raises CheckFailed: no answer (refused destination, timeout, TLS, bad CA), in words.
    """
    headers = await _headers(spec, secrets)
    verify = await _verify(spec, secrets)
    response, body, truncated = await _send(spec, headers, verify, policy)
    return HttpAnswer(response.status_code, body, truncated, time.monotonic() - started)


def judge(spec: HttpGate, answer: HttpAnswer, hidden: list[str]) -> GateResult:
    """The answer against ``expectStatus`` and, with ``jsonPath``, ``equals``.

    ``hidden``: the secret values the request carried, which a server may echo back.
    """
    status = _status_text(answer.status_code)
    if answer.status_code not in spec.expect_status:
        expected = ", ".join(str(s) for s in spec.expect_status)
        note = _redirect_note(spec, answer.status_code)
        return GateResult.fail(f"{status} (expected {expected}){note}", answer.latency)
    if spec.json_path is None:
        return GateResult.ok(status, answer.latency)
    return _judge_json(spec, spec.json_path, status, answer.body, answer.truncated, answer.latency, hidden)


def status_text(code: int) -> str:
    """``HTTP 503 Service Unavailable`` (the phrase only for a code HTTP knows)."""
    return _status_text(code)


async def _headers(spec: HttpGate, secrets: SecretSource) -> dict[str, str]:
    """The request headers, values from Secrets resolved (and never shown)."""
    return {h.name: h.prefix + await _header_value(h.value, h.value_from, secrets) for h in spec.headers}


async def _verify(spec: HttpGate, secrets: SecretSource) -> ssl.SSLContext:
    """How to verify the server: the CA bundle from ``caSecretRef``, else the system bundle."""
    pem = await read_secret(secrets, spec.ca_secret_ref) if spec.ca_secret_ref is not None else None
    try:
        return ssl_context(pem)
    except (ssl.SSLError, ValueError):
        assert spec.ca_secret_ref is not None
        ref = f"{spec.ca_secret_ref.name}/{spec.ca_secret_ref.key}"
        raise CheckFailed(
            f"the CA in secret {ref} is not a valid PEM certificate bundle",
            misconfigured=Reason.GATE_MISCONFIGURED,
        ) from None


async def _send(
    spec: HttpGate, headers: dict[str, str], verify: ssl.SSLContext, policy: DestinationPolicy
) -> tuple[httpx.Response, bytes, bool]:
    """The response, at most :data:`MAX_BODY` bytes of its body and whether there was more.

    One deadline (``spec.timeout``) for connecting, sending and reading; the
    client is closed before this returns.
    """
    shown = redact_url(spec.url)
    timeout = parse_duration(spec.timeout).total_seconds()
    try:
        async with (
            asyncio.timeout(timeout),
            _client(spec, verify, timeout, policy) as client,
            client.stream(
                spec.method,
                spec.url,
                headers=headers,
                content=spec.body.encode() if spec.body is not None else None,
            ) as response,
        ):
            body, truncated = await _read_capped(response)
    except DestinationDenied as exc:
        raise CheckFailed(
            f"{spec.method} {shown}: {exc.message}", misconfigured=Reason.DESTINATION_DENIED
        ) from None
    except (httpx.TimeoutException, TimeoutError) as exc:
        what = "could not connect" if isinstance(exc, httpx.ConnectTimeout) else "no complete response"
        raise CheckFailed(f"{spec.method} {shown}: {what} within {spec.timeout} (timeout)") from exc
    except httpx.HTTPError as exc:
        raise CheckFailed(f"{spec.method} {shown}: {_http_error_cause(exc, spec)}") from exc
    except ssl.SSLError as exc:  # pragma: no cover - httpx wraps these, kept as a safety net
        raise CheckFailed(f"{spec.method} {shown}: TLS error: {exc.reason}") from exc
    return response, body, truncated


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose every connection goes through :class:`GuardedBackend`."""

    def __init__(self, verify: ssl.SSLContext, policy: DestinationPolicy) -> None:
        super().__init__(verify=verify, trust_env=False)
        # httpx builds its pool without a way to pass a network backend: the same pool, guarded
        self._pool = httpcore.AsyncConnectionPool(ssl_context=verify, network_backend=GuardedBackend(policy))


def _client(
    spec: HttpGate, verify: ssl.SSLContext, timeout: float, policy: DestinationPolicy
) -> httpx.AsyncClient:
    """A client for one request: our verification, the gate's redirect policy and timeout, and
    connections only where the operator's gate policy allows (no proxy from the environment,
    which would connect on our behalf where the policy cannot look)."""
    return httpx.AsyncClient(
        transport=_GuardedTransport(verify, policy),
        trust_env=False,
        follow_redirects=spec.follow_redirects,
        timeout=httpx.Timeout(timeout),
        # identity: the size cap then bounds what we hold, not a compressed bomb
        headers={"User-Agent": "requeue-gate", "Accept-Encoding": "identity"},
    )


def _http_error_cause(exc: httpx.HTTPError, spec: HttpGate) -> str:
    """A failed request in words, with a hint when the certificate needs ``caSecretRef``."""
    cause = describe_network_error(exc) or f"{type(exc).__name__}: {clip(str(exc), 200) or 'request failed'}"
    if "certificate verification failed" in cause and spec.ca_secret_ref is None:
        cause += " (set caSecretRef to the CA that issued the server certificate)"
    return cause


def _redirect_note(spec: HttpGate, status_code: int) -> str:
    """For an unexpected 3xx we did not follow: say so. Not where it pointed: no response header
    value reaches the status (a Location may carry a token)."""
    if not 300 <= status_code < 400 or spec.follow_redirects:
        return ""
    return "; redirects are not followed (set followRedirects: true to follow them)"


def _judge_json(
    spec: HttpGate,
    path: str,
    status: str,
    body: bytes,
    truncated: bool,
    latency: float,
    hidden: list[str],
) -> GateResult:
    """The value at ``path`` in the body against ``equals``; a body we cut off is not guessed at.

    ``hidden``: the secret values this check sent, which a server may echo back in the value.
    """
    if truncated:
        return GateResult.fail(
            f"{status} but the body is larger than {MAX_BODY // 1024} KiB; {path} not evaluated", latency
        )
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return GateResult.fail(f"{status} but the body is not JSON ({path} not evaluated)", latency)
    value = evaluate_json_path(document, path)
    wanted = _show(spec.equals, hidden)
    if value is _MISSING:
        return GateResult.fail(f"{status} but {path} is missing (expected {wanted})", latency)
    if not json_equals(value, spec.equals):
        return GateResult.fail(f"{status} but {path} is {_show(value, hidden)} (expected {wanted})", latency)
    return GateResult.ok(f"{status}, {path} is {wanted}", latency)


@functools.lru_cache(maxsize=64)
def ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """A verifying client context: the system bundle (certifi), or only the given PEM CA bundle.

    Cached: loading a CA bundle blocks the event loop for tens of milliseconds.
    """
    if ca_pem is None:
        return ssl.create_default_context(cafile=certifi.where())
    return ssl.create_default_context(cadata=ca_pem)


def evaluate_json_path(document: Any, path: str) -> Any:
    """Follow ``$.a.b[0]`` through parsed JSON; a module-private sentinel when a step is missing.

    Only member names and array indexes are supported (what the CRD pattern allows);
    anything else raises :class:`JsonPathError`.
    """
    if not path.startswith("$"):
        raise JsonPathError(f"{path!r}: a JSONPath starts with $")
    rest = path[1:]
    position = 0
    current = document
    while position < len(rest):
        step = _PATH_STEP.match(rest, position)
        if step is None:
            raise JsonPathError(f"{path!r}: only .name and [index] steps are supported")
        position = step.end()
        name, index = step.groups()
        if name is not None:
            if not isinstance(current, dict) or name not in current:
                return _MISSING
            current = current[name]
        else:
            i = int(index)
            if not isinstance(current, list) or i >= len(current):
                return _MISSING
            current = current[i]
    return current


def is_missing(value: Any) -> bool:
    """Whether :func:`evaluate_json_path` found nothing."""
    return value is _MISSING


def json_equals(actual: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` equals ``1.0``, containers compare deeply."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            json_equals(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(json_equals(actual[k], expected[k]) for k in actual)
    return type(actual) is type(expected) and bool(actual == expected)


async def _header_value(
    value: str | None, value_from: HeaderValueSource | None, secrets: SecretSource
) -> str:
    if value is not None:
        return value
    assert value_from is not None  # the model requires one of the two
    return (await read_secret(secrets, value_from.secret_key_ref)).strip("\r\n")


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    """At most :data:`MAX_BODY` bytes of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return b"".join(chunks)[:MAX_BODY], True
    return b"".join(chunks), False


def _status_text(code: int) -> str:
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _show(value: Any, hidden: list[str]) -> str:
    """A JSON value for a message: secrets redacted first, then cut to 100 characters.

    In that order: a secret cut in half first would no longer match whole (the
    redaction also hides any piece of 8 or more characters, as a second guard).
    """
    return clip(redact_text(json.dumps(value, ensure_ascii=False), hidden), 100)
