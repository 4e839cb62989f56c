"""Secret sources and redaction: values resolve, failures name secret and key, values never leak."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from typing import Any

import pytest
from kubernetes.client import V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException

from requeue.api import SecretKeyRef
from requeue.errors import SecretNotFound, TransientError
from requeue.gates.result import RecordingSecrets
from requeue.k8s.secrets import KubeSecrets
from requeue.redact import sensitive_parts
from requeue.secrets import StaticSecrets

REF = SecretKeyRef(name="cgb", key="bearer")
VALUE = "tok-3f9a1c"


class CoreV1Stub:
    """Stands in for ``kubernetes.client.CoreV1Api`` (no API server here; e2e tests use kmock)."""

    def __init__(self, answer: V1Secret | Exception, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.threads: list[str] = []

    def read_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> V1Secret:
        self.calls.append((name, namespace, kwargs))
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def secret(**data: str) -> V1Secret:
    return V1Secret(
        metadata=V1ObjectMeta(name="cgb", namespace="payments"),
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    )


# ---------------------------------------------------------------- StaticSecrets (CLI)


async def test_static_secrets_from_flags_and_env() -> None:
    secrets = StaticSecrets.from_flags([f"cgb/bearer={VALUE}", "db/dsn=postgresql://x=y@h/db"])
    assert await secrets.get(REF) == VALUE
    assert await secrets.get(SecretKeyRef(name="db", key="dsn")) == "postgresql://x=y@h/db"
    env = StaticSecrets({}, environ={"REQUEUE_SECRET_CGB_CA_CA_CRT": "pem"})
    assert await env.get(SecretKeyRef(name="cgb-ca", key="ca.crt")) == "pem"


async def test_static_secrets_missing_names_the_flag_and_variable() -> None:
    with pytest.raises(SecretNotFound) as caught:
        await StaticSecrets({}, environ={}).get(REF)
    assert "--secret cgb/bearer=VALUE" in caught.value.message
    assert "REQUEUE_SECRET_CGB_BEARER" in caught.value.message


def test_static_secrets_malformed_flag_does_not_echo_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        StaticSecrets.from_flags([f"cgb-bearer={VALUE}"])
    assert VALUE not in str(caught.value)


# ---------------------------------------------------------------- KubeSecrets (operator)


async def test_kube_secret_value_is_decoded_from_its_namespace() -> None:
    api = CoreV1Stub(secret(bearer=VALUE, other="x"))
    assert await KubeSecrets("payments", api=api).get(REF) == VALUE
    assert api.calls == [("cgb", "payments", {"_request_timeout": 10.0})]


async def test_kube_secret_read_runs_in_a_thread() -> None:
    api = CoreV1Stub(secret(bearer=VALUE), delay=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert await KubeSecrets("payments", api=api).get(REF) == VALUE
    finally:
        ticker.cancel()
    assert api.threads[0] != threading.main_thread().name
    assert ticks > 5  # the loop kept running while the API call blocked


async def test_kube_secret_not_found() -> None:
    api = CoreV1Stub(ApiException(status=404, reason="Not Found"))
    with pytest.raises(SecretNotFound) as caught:
        await KubeSecrets("payments", api=api).get(REF)
    assert caught.value.message == "secret payments/cgb not found"


async def test_kube_secret_missing_key_lists_keys_not_values() -> None:
    with pytest.raises(SecretNotFound) as caught:
        await KubeSecrets("payments", api=CoreV1Stub(secret(token=VALUE))).get(REF)
    assert caught.value.message == "secret payments/cgb has no key 'bearer' (keys: token)"
    assert VALUE not in caught.value.message


async def test_kube_secret_forbidden_explains_rbac() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"message": "secrets \\"cgb\\" is forbidden: User \\"system:serviceaccount:x\\""}'
    with pytest.raises(SecretNotFound) as caught:
        await KubeSecrets("payments", api=CoreV1Stub(exc)).get(REF)
    assert "forbidden (HTTP 403)" in caught.value.message
    assert 'RBAC "get" on "secrets" in namespace payments' in caught.value.message


async def test_kube_api_trouble_is_transient_and_says_little() -> None:
    with pytest.raises(TransientError) as caught:
        await KubeSecrets("payments", api=CoreV1Stub(ApiException(status=503, reason="Unavailable"))).get(REF)
    assert caught.value.message == "secret payments/cgb: Kubernetes API answered HTTP 503 Unavailable"
    with pytest.raises(TransientError) as caught:
        await KubeSecrets("payments", api=CoreV1Stub(ConnectionRefusedError())).get(REF)
    assert "Kubernetes API unreachable" in caught.value.message


async def test_kube_secret_not_base64() -> None:
    bad = V1Secret(data={"bearer": "!!not base64!!"})
    with pytest.raises(SecretNotFound) as caught:
        await KubeSecrets("payments", api=CoreV1Stub(bad)).get(REF)
    assert "not base64-encoded UTF-8" in caught.value.message


def test_kube_secrets_needs_a_namespace() -> None:
    with pytest.raises(ValueError):
        KubeSecrets("")


# ---------------------------------------------------------------- what counts as secret


def test_sensitive_parts_of_urls_dsns_and_tokens() -> None:
    assert sensitive_parts("rediss://default:p%40ss@redis:6379/0") == ["p@ss", "p%40ss"]
    assert sensitive_parts("redis://redis:6379/0") == []  # shown redacted, nothing to hide
    assert sensitive_parts("https://api/x?key=abc123") == ["abc123"]  # the option's name is no secret
    assert sensitive_parts("https://api/x?abc123&k=") == ["abc123"]  # a bare word may be a token
    assert sensitive_parts("host=db user=app password='s3 cret' dbname=app") == ["s3 cret"]
    assert sensitive_parts("host=db password=s3cret") == ["s3cret"]
    assert sensitive_parts(f" {VALUE}\n") == [VALUE]
    assert sensitive_parts("") == []


async def test_recording_secrets_remembers_what_it_handed_out() -> None:
    recording = RecordingSecrets(StaticSecrets({("cgb", "bearer"): VALUE + "\n"}))
    assert await recording.get(REF) == VALUE + "\n"
    assert recording.values == [VALUE]
