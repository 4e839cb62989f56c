"""requeue over ``rediss+sentinel://``: Sentinels and data nodes that speak TLS, replicate and
monitor over TLS, and name their TLS ports (as a TLS-only Helm install does).

requeue reaches the Sentinels with TLS, asks them for the primary, and reaches that primary with
TLS, all verified with the CA from a Secret (``spec.redis.tls.caSecretRef``). Each process also
keeps a plain port for the test's own checks (seeding failed jobs with BullMQ, reading lists).
Proven here: a replay moves each job once; after the primary is SIGKILLed and the Sentinels
promote the replica, a second replay finds the new primary over TLS; a CA that did not sign the
nodes is the named reason ``RedisCertificateUntrusted``, with the password never shown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import redis.asyncio as aioredis

from requeue.queues import QueueKeys
from support import wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import acli, write_manifest
from support.gates import make_certificates
from support.leaks import leaks
from support.redis_sentinel import SENTINEL_PASSWORD, SentinelSet

Q = "default"
Q2 = "after-failover"
#: spec.redis: the URL and the CA from the Secret ``redis`` (the CLI's ``--secret redis/KEY=VALUE``).
REDIS_SPEC = {
    "urlSecretRef": {"name": "redis", "key": "url"},
    "tls": {"caSecretRef": {"name": "redis", "key": "ca"}},
}


@pytest_asyncio.fixture
async def tls_sentinels(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    (tmp_path / "tls").mkdir()
    found = await asyncio.to_thread(SentinelSet(tls=tmp_path / "tls").start)
    try:
        yield found
    finally:
        await asyncio.to_thread(found.stop)


def no_leak(text: str) -> None:
    found = leaks(text, SENTINEL_PASSWORD)
    assert not found, f"password pieces shown: {found}\n{text[:3000]}"


async def replay(
    sentinels: SentinelSet, tmp_path: Path, name: str, ca_pem: str, *, queue: str = Q
) -> tuple[int, str, str]:
    """``requeue replay`` of every failed job through the Sentinels' TLS ports: (code, stdout, all)."""
    manifest = write_manifest(tmp_path / f"{name}.yaml", {"queue": queue, "redis": REDIS_SPEC}, name=name)
    secrets = ("--secret", f"redis/url={sentinels.tls_url()}", "--secret", f"redis/ca={ca_pem}")
    res = await acli("replay", "-f", str(manifest), *secrets, "-o", "json")
    return res.code, res.stdout, res.output


async def lists(url: str, queue: str = Q) -> tuple[set[str], set[str]]:
    """(wait, failed) ids of the queue, read over a data node's plain port."""
    keys = QueueKeys("bull", queue)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        waiting, failed = await client.lrange(keys.wait, 0, -1), await client.zrange(keys.failed, 0, -1)
        return {str(i) for i in waiting}, {str(i) for i in failed}
    finally:
        await client.aclose()


async def test_replays_go_through_tls_sentinels_before_and_after_a_failover(
    tls_sentinels: SentinelSet, tmp_path: Path
) -> None:
    ca_pem = tls_sentinels.ca_pem or ""
    first = await make_failed_jobs(
        tls_sentinels.data_url(), Q, [JobSpec("sync", {"i": i}, "503") for i in range(8)]
    )
    code, out, output = await replay(tls_sentinels, tmp_path, "before", ca_pem)
    assert code == 0, output
    assert json.loads(out)["replayed"] == 8
    assert await lists(tls_sentinels.data_url()) == (set(first), set())
    no_leak(output)

    # the replica has applied the replay before its primary dies (else the promotion loses it)
    await asyncio.to_thread(wait_until, tls_sentinels.replica_caught_up, message="the replica to catch up")
    await asyncio.to_thread(tls_sentinels.kill_primary)
    await asyncio.to_thread(tls_sentinels.wait_for_promotion)
    promoted = tls_sentinels.data_url(tls_sentinels.replica)
    # another queue: the seeding worker would otherwise take (and fail) the jobs replayed above
    second = await make_failed_jobs(promoted, Q2, [JobSpec("sync", {"i": i}, "503") for i in range(5)])
    code, out, output = await replay(tls_sentinels, tmp_path, "after", ca_pem, queue=Q2)
    assert code == 0, output
    assert json.loads(out)["replayed"] == 5
    assert await lists(promoted) == (set(first), set())
    assert await lists(promoted, Q2) == (set(second), set())
    no_leak(output)


async def test_a_ca_that_did_not_sign_the_nodes_is_named_and_moves_nothing(
    tls_sentinels: SentinelSet, tmp_path: Path
) -> None:
    ids = await make_failed_jobs(tls_sentinels.data_url(), Q, [JobSpec("sync", {}, "503")] * 3)
    wrong_ca = make_certificates(tmp_path).ca_pem  # another throw-away CA, which signed nothing here
    code, out, output = await replay(tls_sentinels, tmp_path, "untrusted", wrong_ca)
    assert code == 3, output
    error = json.loads(out)["error"]
    assert error["reason"] == "RedisCertificateUntrusted", error
    assert "Traceback" not in output
    no_leak(output)
    assert await lists(tls_sentinels.data_url()) == (set(), set(ids))
