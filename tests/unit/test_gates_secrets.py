"""Secret sources and redaction: values resolve, failures name secret and key, values never leak."""

from __future__ import annotations

import pytest

from requeue.api import SecretKeyRef
from requeue.errors import SecretNotFound
from requeue.gates.result import RecordingSecrets
from requeue.k8s.secrets import KubeSecrets
from requeue.redact import sensitive_parts
from requeue.secrets import StaticSecrets

REF = SecretKeyRef(name="cgb", key="bearer")
VALUE = "tok-3f9a1c"


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
# (reads through the API: tests/integration/test_kube_api_client.py)


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
