"""Replays and policies (not only gates) over ``rediss://``, verified with a CA from a Secret, and
with a client certificate from Secrets; a wrong CA is the named reason ``RedisCertificateUntrusted``,
with the password never shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from requeue.api.common import RedisConnection
from requeue.api.gates import GateStatus, GateType
from requeue.api.policy import QueuePolicySpec
from requeue.errors import RedisCertificateUntrusted
from requeue.policy.evaluate import BullQueueOps, PolicyRef, evaluate
from requeue.queues import BullQueue, QueueKeys
from requeue.redis_target import open_redis
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import acli, write_manifest
from support.gates import make_certificates
from support.tls_redis import make_client_certificate, tls_redis_server

PASSWORD = "tls-Secret-93be"
Q = "default"
K = QueueKeys("bull", Q)
POLICY = PolicyRef(namespace="visapi", name="tls-policy", uid="tls-uid", generation=1)
#: spec.redis.tls with the CA from the Secret ``redis``/``ca`` (the CLI's ``--secret redis/ca=PEM``).
TLS_WITH_CA = {"caSecretRef": {"name": "redis", "key": "ca"}}
#: spec.redis with that CA.
REDIS_WITH_CA = {
    "urlSecretRef": {"name": "redis", "key": "url"},
    "tls": TLS_WITH_CA,
}


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(rediss:// URL with the password, the CA's PEM) of a TLS-only redis-server."""
    (tmp_path / "server").mkdir()
    with tls_redis_server(tmp_path / "server", password=PASSWORD) as (port, ca_pem):
        yield f"rediss://default:{PASSWORD}@127.0.0.1:{port}/0", ca_pem


def seeding(url: str, tmp_path: Path) -> str:
    """``url`` for the test's own BullMQ producers and workers: trusting the CA by file."""
    return f"{url}?ssl_ca_certs={tmp_path / 'server' / 'ca.crt'}"


def plain_client(url: str, ca_pem: str) -> redis.Redis:
    """A test-side client (checking) that trusts the server's CA."""
    return redis.Redis.from_url(url, ssl_ca_data=ca_pem, decode_responses=True)


async def test_replay_and_dry_run_over_tls_with_the_ca_from_a_secret(
    tls_redis: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, ca_pem = tls_redis
    jobs = [JobSpec("whatsapp.send", {"i": i}, reason="429") for i in range(6)]
    ids = await make_failed_jobs(seeding(url, tmp_path), Q, jobs)
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"redis": REDIS_WITH_CA, "rate": {"jobsPerSecond": 1000, "batchSize": 4}}
    )
    secrets = ("--secret", f"redis/url={url}", "--secret", f"redis/ca={ca_pem}")
    dry = await acli("replay", "-f", str(manifest), *secrets, "--dry-run", "-o", "json")
    assert dry.code == 0, dry.output
    assert json.loads(dry.stdout)["matched"] == 6
    res = await acli("replay", "-f", str(manifest), *secrets, "-o", "json")
    assert res.code == 0, res.output
    client = plain_client(url, ca_pem)
    try:
        assert client.zcard(K.failed) == 0 and sorted(client.lrange(K.wait, 0, -1)) == sorted(ids)
    finally:
        client.close()
    assert PASSWORD not in dry.output + res.output


async def test_policy_evaluates_and_pauses_over_tls(tls_redis: tuple[str, str], tmp_path: Path) -> None:
    url, ca_pem = tls_redis
    await make_failed_jobs(seeding(url, tmp_path), Q, [JobSpec("x", reason="boom")] * 3)
    spec = QueuePolicySpec.model_validate(
        {
            "redis": REDIS_WITH_CA,
            "queues": [Q],
            "interval": "10s",
            "thresholds": {"failed": 2},
            "gates": [{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
            "actions": {"pauseWhileGatesFail": True},
        }
    )
    secrets = StaticSecrets({("redis", "url"): url, ("redis", "ca"): ca_pem})
    client, _target = await open_redis(secrets, spec.redis)
    try:
        red = [GateStatus(name="db", type=GateType.HTTP, healthy=False, message="down")]
        result = await evaluate(POLICY, spec, None, redis=client, ops=BullQueueOps(client), gates=red)
        assert await BullQueue(client, Q).is_paused()
    finally:
        await client.aclose()
    ready = next(c for c in result.status.conditions if c.type == "Ready")
    healthy = next(c for c in result.status.conditions if c.type == "Healthy")
    assert (ready.status, healthy.reason) == ("True", "FailedAboveThreshold"), result.status.conditions


async def test_a_wrong_ca_is_a_named_reason_without_the_password(
    tls_redis: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, _ca_pem = tls_redis
    await make_failed_jobs(seeding(url, tmp_path), Q, [JobSpec("x", reason="boom")])
    wrong_ca = make_certificates(tmp_path).ca_pem  # another throw-away CA, which never signed the server
    conn = RedisConnection.model_validate(REDIS_WITH_CA)
    with pytest.raises(RedisCertificateUntrusted) as raised:
        await open_redis(StaticSecrets({("redis", "url"): url, ("redis", "ca"): wrong_ca}), conn)
    assert raised.value.reason == "RedisCertificateUntrusted"
    assert "caSecretRef" in raised.value.message and PASSWORD not in raised.value.message

    manifest = write_manifest(tmp_path / "replay.yaml", {"redis": REDIS_WITH_CA})
    res = await acli(
        "replay",
        "-f",
        str(manifest),
        "--secret",
        f"redis/url={url}",
        "--secret",
        f"redis/ca={wrong_ca}",
        "-o",
        "json",
    )
    assert res.code == 3, res.output
    error = json.loads(res.stdout)["error"]
    assert error["reason"] == "RedisCertificateUntrusted", error
    assert PASSWORD not in res.output and "Traceback" not in res.output


async def test_replay_with_a_client_certificate_from_secrets(tmp_path: Path) -> None:
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with tls_redis_server(server_dir, password=PASSWORD, client_certificates=True) as (port, ca_pem):
        cert_pem, key_pem = make_client_certificate(server_dir)
        url = f"rediss://default:{PASSWORD}@127.0.0.1:{port}/0"
        files = f"&ssl_certfile={server_dir / 'client.crt'}&ssl_keyfile={server_dir / 'client.key'}"
        jobs = [JobSpec("whatsapp.send", {"i": i}, reason="429") for i in range(4)]
        ids = await make_failed_jobs(seeding(url, tmp_path) + files, Q, jobs)
        client_cert = {
            "certSecretRef": {"name": "tls", "key": "crt"},
            "keySecretRef": {"name": "tls", "key": "key"},
        }
        with_cert = {**REDIS_WITH_CA, "tls": {**TLS_WITH_CA, **client_cert}}
        secrets = ("--secret", f"redis/url={url}", "--secret", f"redis/ca={ca_pem}")

        bare = write_manifest(tmp_path / "bare.yaml", {"redis": REDIS_WITH_CA})
        without = await acli("replay", "-f", str(bare), *secrets, "-o", "json")
        assert without.code == 3, without.output  # the server refuses a client without a certificate

        manifest = write_manifest(tmp_path / "replay.yaml", {"redis": with_cert})
        res = await acli(
            "replay",
            "-f",
            str(manifest),
            *secrets,
            "--secret",
            f"tls/crt={cert_pem}",
            "--secret",
            f"tls/key={key_pem}",
            "-o",
            "json",
        )
        assert res.code == 0, res.output
        assert json.loads(res.stdout)["replayed"] == len(ids)
        assert "PRIVATE KEY" not in res.output and PASSWORD not in res.output


async def test_cli_inspect_names_its_own_way_to_give_the_ca(
    tls_redis: tuple[str, str], tmp_path: Path
) -> None:
    """The CLI has no spec.redis.tls: the message names ``?ssl_ca_certs=`` too, and that works."""
    url, _ca_pem = tls_redis
    await make_failed_jobs(seeding(url, tmp_path), Q, [JobSpec("x", reason="boom")])
    untrusted = await acli("inspect", "--redis-url", url, "--queue", Q)
    assert untrusted.code == 3, untrusted.output
    assert "does not verify" in untrusted.output and "?ssl_ca_certs=" in untrusted.output
    assert PASSWORD not in untrusted.output
    trusted = await acli("inspect", "--redis-url", seeding(url, tmp_path), "--queue", Q, "-o", "json")
    assert trusted.code == 0, trusted.output
    assert PASSWORD not in trusted.output
