"""requeue on a Sentinel-managed Redis: a primary, a replica and three real Sentinels on loopback.

Everything goes through a ``redis+sentinel://`` URL: ``requeue inspect`` and ``requeue replay``
(both modes) as subprocesses, the replay engine through a primary that fails over mid-replay
(its process SIGKILLed, the replica promoted by the Sentinels), the Redis gate. Ids are
compared as sets, as the interop tests do; nothing may show the data nodes' password.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from requeue.api import DLQReplayStatus, GateSpec, ReplayPhase
from requeue.clock import utcnow
from requeue.errors import AuthFailed, RedisUnreachable, RedisUrlInvalid, SentinelMasterUnknown
from requeue.gates import run_check
from requeue.gates.destinations import DestinationPolicy
from requeue.gates.redis import check_redis
from requeue.queues import QueueKeys, connect
from requeue.replay import DEFAULT_TUNING, ReplayEngine, StepResult
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, make_failed_jobs, next_millisecond
from support.cli import cli, write_manifest
from support.dlqreplay import check_exactly_once, in_redis
from support.leaks import leaks
from support.redis_sentinel import SENTINEL_PASSWORD, SentinelSet
from support.redis_server import free_port
from support.replay import ONE_BATCH_PER_STEP
from support.replay import replay_spec as make_spec

Q = "default"


def jobs(n: int, name: str = "whatsapp.send", reason: str = "429 rate limited") -> list[JobSpec]:
    return [JobSpec(name, {"i": i}, reason, {}) for i in range(n)]


def no_leak(text: str, *secrets: str) -> None:
    found = leaks(text, SENTINEL_PASSWORD, *secrets)
    assert not found, f"password pieces shown: {found}\n{text[:3000]}"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    """One Sentinel-managed Redis for the tests that do not fail it over (it takes seconds to start:
    the Sentinels find each other through the primary)."""
    with SentinelSet() as found:
        yield found


@pytest.fixture
def sentinel_url(sentinels: SentinelSet) -> str:
    """The Sentinel URL, the primary FLUSHALLed for this test."""
    client = redis.Redis.from_url(sentinels.data_url())
    try:
        client.flushall()
    finally:
        client.close()
    return sentinels.url()


@pytest_asyncio.fixture
async def fresh() -> AsyncIterator[SentinelSet]:
    """A Sentinel-managed Redis of the test's own (to fail over)."""
    found = await asyncio.to_thread(SentinelSet().start)
    try:
        yield found
    finally:
        await asyncio.to_thread(found.stop)


async def wait_ids(url: str, queue: str = Q) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [str(i) for i in await client.lrange(QueueKeys("bull", queue).wait, 0, -1)]
    finally:
        await client.aclose()


async def failed_ids(url: str, queue: str = Q) -> set[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return {str(i) for i in await client.zrange(QueueKeys("bull", queue).failed, 0, -1)}
    finally:
        await client.aclose()


# ---------------------------------------------------------------- the CLI through the Sentinels


async def test_inspect_and_replay_in_both_modes_through_the_sentinels_move_exactly_the_selected_ids(
    sentinels: SentinelSet, sentinel_url: str, tmp_path: Path
) -> None:
    data_url = sentinels.data_url()
    ids = await make_failed_jobs(data_url, Q, jobs(30) + jobs(20, name="pdf.generate", reason="timeout"))
    wa, pdf = set(ids[:30]), set(ids[30:])

    res = cli("inspect", "--redis-url", sentinel_url, "--queue", Q, "-o", "json", "--sample", "100")
    assert res.code == 0, res.output
    no_leak(res.output)
    report = json.loads(res.stdout)
    assert report["total"] == 50
    by_name = {g["key"]: set(g["sampleIds"]) for g in report["byName"]["groups"]}
    assert by_name == {"whatsapp.send": wa, "pdf.generate": pdf}
    assert report["redis"].startswith("redis+sentinel://") and "***" in report["redis"]

    selective = write_manifest(tmp_path / "wa.yaml", {"selector": {"jobNames": ["whatsapp.*"]}}, name="wa")
    res = cli("replay", "-f", str(selective), "--redis-url", sentinel_url, "-o", "json")
    assert res.code == 0, res.output
    no_leak(res.output)
    assert json.loads(res.stdout)["replayed"] == 30
    assert sorted(await wait_ids(data_url)) == sorted(wa)
    assert await failed_ids(data_url) == pdf

    bulk = write_manifest(tmp_path / "rest.yaml", {"mode": "Bulk"}, name="rest")
    res = cli("replay", "-f", str(bulk), "--redis-url", sentinel_url, "-o", "json")
    assert res.code == 0, res.output
    no_leak(res.output)
    assert sorted(await wait_ids(data_url)) == sorted(ids)
    assert await failed_ids(data_url) == set()


async def test_the_redis_gate_checks_the_primary_the_sentinels_name(sentinel_url: str) -> None:
    spec = GateSpec.model_validate({"name": "redis", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}})
    result = await run_check(spec, StaticSecrets({("r", "url"): sentinel_url}))
    assert result.healthy, result.message
    no_leak(result.message)


async def test_every_sentinel_of_a_gate_url_is_checked_against_the_destination_policy(
    sentinels: SentinelSet, sentinel_url: str
) -> None:
    """A gate's own URL may name Sentinels anywhere: each one is checked, not only the first (the
    second here is ``localhost``, denied by name, while the first is allowed)."""
    hosts = [s.address for s in sentinels.sentinels]
    url = sentinel_url.replace(hosts[1], f"localhost:{sentinels.sentinels[1].port}")
    spec = GateSpec.model_validate({"name": "redis", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}})
    result = await check_redis(
        spec.redis,  # type: ignore[arg-type]
        StaticSecrets({("r", "url"): url}),
        default_url=None,
        policy=DestinationPolicy.build(deny=["localhost"]),
    )
    assert not result.healthy and "DestinationDenied: localhost is denied" in result.message, result.message
    no_leak(result.message)


async def test_the_primary_a_gates_sentinels_name_must_pass_the_destination_policy_too(
    sentinels: SentinelSet, sentinel_url: str
) -> None:
    """The Sentinels, not the gate's author, choose the primary's address: it is checked before
    anything is sent to it (here only the name ``localhost`` is allowed; the Sentinels are reached
    by that name and answer with the primary's address 127.0.0.1)."""
    url = sentinel_url
    for sentinel in sentinels.sentinels:
        url = url.replace(sentinel.address, f"localhost:{sentinel.port}")
    spec = GateSpec.model_validate({"name": "redis", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}})
    secrets = StaticSecrets({("r", "url"): url})
    allowed = await check_redis(
        spec.redis,  # type: ignore[arg-type]
        secrets,
        default_url=None,
        policy=DestinationPolicy.build(allow=["localhost", "127.0.0.1/32"]),
    )
    assert allowed.healthy, allowed.message
    refused = await check_redis(
        spec.redis,  # type: ignore[arg-type]
        secrets,
        default_url=None,
        policy=DestinationPolicy.build(allow=["localhost"]),
    )
    assert not refused.healthy
    assert f"the Sentinels name the primary 127.0.0.1:{sentinels.primary.port}" in refused.message, (
        refused.message
    )
    assert "DestinationDenied" in refused.message, refused.message
    no_leak(refused.message)


# ---------------------------------------------------------------- named failures


async def test_a_master_name_no_sentinel_monitors_is_sentinel_master_unknown(
    sentinels: SentinelSet, sentinel_url: str
) -> None:
    wrong = sentinels.url(master="my-master")
    with pytest.raises(SentinelMasterUnknown) as caught:
        await connect(wrong, timeout_s=2)
    message = caught.value.message
    assert caught.value.reason == "SentinelMasterUnknown"
    assert "'my-master'" in message and "they monitor: 'mymaster'" in message, message
    no_leak(message)

    res = cli("inspect", "--redis-url", wrong, "--queue", Q)
    assert res.code == 3, res.output
    assert "SentinelMasterUnknown" in res.output or "monitors a master named" in res.output, res.output
    no_leak(res.output)


async def test_no_sentinel_answering_is_redis_unreachable_naming_each() -> None:
    ports = [free_port(), free_port()]
    hosts = f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    url = f"redis+sentinel://:{quote(SENTINEL_PASSWORD, safe='')}@{hosts}/mymaster"
    with pytest.raises(RedisUnreachable) as caught:
        await connect(url, timeout_s=1)
    message = caught.value.message
    assert type(caught.value) is RedisUnreachable, message
    assert "no Sentinel answered" in message and all(f"127.0.0.1:{p}" in message for p in ports), message
    no_leak(message)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://default:s3cret/pw@h1:26379,h2:x/mymaster",
        "redis+sentinel://default:s3cret/pw@h1:26379",
        "redis+sentinel://default:s3cret/pw@h1:26379/mymaster/zero",
        "redis+sentinel://default:s3cret/pw@h1:26379/mymaster?bogus_option=1",
    ],
)
async def test_a_malformed_sentinel_url_is_redis_url_invalid(url: str) -> None:
    with pytest.raises(RedisUrlInvalid) as caught:
        await connect(url, timeout_s=1)
    message = caught.value.message
    assert "s3cret" not in message and "redis+sentinel://default:***@h1:26379" in message, message


async def test_hostile_password_characters_raw_in_the_url(sentinels: SentinelSet, sentinel_url: str) -> None:
    """The password as pasted, unencoded (``/ ? # @ : "`` and a backslash; a ``%`` with hex digits
    after it is a percent-escape in every Redis URL, so this one's is encoded)."""
    raw = SENTINEL_PASSWORD.replace("%", "%25")
    hosts = ",".join(s.address for s in sentinels.sentinels)
    client = await connect(f"redis+sentinel://default:{raw}@{hosts}/mymaster/0", timeout_s=2)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


# ---------------------------------------------------------------- the Sentinels' own password


async def test_sentinels_with_the_data_nodes_password_need_nothing_more() -> None:
    """Bitnami's default (``auth.sentinel: true``): the Sentinels share the data nodes' password."""
    with SentinelSet(sentinel_password=SENTINEL_PASSWORD) as found:
        client = await connect(found.url(), timeout_s=2)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


async def test_sentinels_with_a_password_of_their_own_take_it_from_sentinel_password() -> None:
    own = 'S7-own/pass?#@:"\\-Ä'
    with SentinelSet(sentinel_password=own) as found:
        with pytest.raises(AuthFailed) as caught:
            await connect(found.url(), timeout_s=2)
        no_leak(caught.value.message, own)
        assert "sentinel_password" in caught.value.message, caught.value.message
        client = await connect(found.url(query=f"sentinel_password={quote(own, safe='')}"), timeout_s=2)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


# ---------------------------------------------------------------- failover mid-replay


@pytest.mark.parametrize("mode", ["Exact", "Bulk"])
async def test_a_failover_mid_replay_resumes_on_the_promoted_replica_and_moves_each_job_once(
    fresh: SentinelSet, mode: str
) -> None:
    ids = await make_failed_jobs(fresh.data_url(), Q, jobs(300))
    await next_millisecond()  # Bulk's window: jobs that failed before the replay's first millisecond
    client = await connect(fresh.url(), timeout_s=2)
    spec = make_spec(mode=mode, rate={"jobsPerSecond": 100_000, "batchSize": 10})
    engine = ReplayEngine(
        client,
        replay_id="fo",
        owner="ns/fo",
        redis_failure_bound=1_000,  # the step loop below bounds the outage, not the engine
        backoff=0.05,
        tuning=ONE_BATCH_PER_STEP,
        clock=lambda: utcnow() + timedelta(milliseconds=DEFAULT_TUNING.clock_skew_ms),  # Bulk's margin
    )
    failures: list[int] = []
    killed = asyncio.Event()

    async def watch(result: StepResult) -> None:
        failures.append(engine.redis_failures)
        if result.status.replayed >= 60 and not killed.is_set():
            killed.set()
            await asyncio.sleep(0)  # the next step is under way when the primary dies

    async def kill_when_mid_way() -> None:
        await killed.wait()
        fresh.kill_primary()

    try:
        killer = asyncio.create_task(kill_when_mid_way())
        st: DLQReplayStatus = await asyncio.wait_for(engine.run(spec, on_step=watch), 120)
        await killer
    finally:
        await client.aclose()
    await asyncio.to_thread(fresh.wait_for_promotion)
    assert not fresh.primary.running
    assert max(failures) > 0, "the replay finished without meeting the failover"
    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed) == (300, 300)
    promoted = aioredis.Redis.from_url(fresh.replica.url, decode_responses=True)
    try:
        seen = await in_redis(promoted, "fo", queue=Q)
    finally:
        await promoted.aclose()
    if mode == "Exact":
        check_exactly_once(seen, ids, selected=ids, what="after the failover")
    else:  # Bulk moves a time window (BullMQ's moveJobsToWait) and selects no snapshot
        assert sorted(seen.moved) == sorted(seen.waiting) == sorted(ids), "moved twice or lost"
        assert seen.failed == set() and seen.replayed == 300
