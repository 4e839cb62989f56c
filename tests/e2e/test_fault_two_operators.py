"""Two ``requeue run`` operators against one API server (a bad rollout: the old Deployment's pod
and the new one both running, no peering): one replay works a queue at a time, no job moves
twice, and the rate holds (issue 14).

Both processes run a daemon for every DLQReplay. The queue's lease, fenced by a token each
process makes for itself (``requeue.replay.lease``), lets exactly one of them drive one
replay at a time; the other reports ``QueueLocked`` and waits. The test proves it from what
Redis recorded, not from wall-clock thresholds: the moves of the two replays (between each
one's ``started_ms`` and ``replayed_ms``) do not overlap, each replay moved at most
``jobsPerSecond × its span + one batch``, and every id moved exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    ReplayInRedis,
    events,
    in_redis,
    operator_command,
    replay,
    replay_uid,
    secret,
    wait_finished,
)
from support.kube import Kube
from support.queuepolicy import apply

pytestmark = pytest.mark.e2e

PER_REPLAY = 1500
OTHERS = 100
RATE = {"jobsPerSecond": 300, "batchSize": 30}
LEASE = "requeue:lease:bull:default"


@contextlib.asynccontextmanager
async def lease_holders(client: aioredis.Redis) -> AsyncIterator[list[tuple[int, int, str]]]:
    """Every value the queue's lease held while the block ran, as ``(ms before, ms after, value)``
    of each GET, sampled every 10 ms (a sample can miss a short-lived holder, never invent one)."""
    seen: list[tuple[int, int, str]] = []

    async def sample() -> None:
        while True:
            before = time.time_ns() // 1_000_000
            # the fixture's client decodes replies; redis-py cannot type that (it says bytes | str)
            value = cast(str | None, await client.get(LEASE))
            if value:
                seen.append((before, time.time_ns() // 1_000_000, value))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def moved_at_most_the_rate(seen: ReplayInRedis, name: str) -> None:
    span_s = (seen.ms("replayed_ms") - seen.ms("started_ms")) / 1000
    bound = RATE["jobsPerSecond"] * span_s + RATE["batchSize"]
    assert seen.replayed <= bound, (
        f"{name} moved {seen.replayed} jobs in {span_s:.2f}s: more than {RATE} allows ({bound:.0f})"
    )


async def test_two_operators_one_driver_per_queue_no_double_moves_and_the_rate_holds(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    began = time.monotonic()
    n = range(PER_REPLAY)
    whatsapp = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"to": f"+49{i}"}, reason="429 Too Many Requests") for i in n],
    )
    email = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("email.send", {"to": f"u{i}@example.org"}, reason="421 try later") for i in n],
    )
    others = await make_failed_jobs(
        redis_url, "default", [JobSpec("pdf.generate", {"doc": i}, reason="disk full") for i in range(OTHERS)]
    )
    await apply(kube, secret("redis", {"url": redis_url}))
    first = operator_factory(operator_command())
    second = operator_factory(operator_command())

    async with lease_holders(redis_client) as holders:
        for name, jobs in (("whatsapp", "whatsapp.*"), ("email", "email.*")):
            await apply(kube, replay(name, "default", selector={"jobNames": [jobs]}, rate=RATE))
        finals = {}
        for name in ("whatsapp", "email"):
            finals[name] = await wait_finished(
                kube,
                name,
                operator=first,
                timeout=90,
                what=f"replay {name} finished",
            )

    uids = {name: await asyncio.to_thread(replay_uid, kube, name) for name in finals}
    seen = {name: await in_redis(redis_client, uid) for name, uid in uids.items()}
    selected = {"whatsapp": whatsapp, "email": email}
    for name, st in finals.items():
        s = seen[name]
        assert st["phase"] == "Succeeded", st
        assert st["matched"] == st["replayed"] == s.replayed == len(s.moved) == PER_REPLAY, st
        assert sorted(s.snapshot) == sorted(s.moved) == sorted(selected[name]), name
        moved_at_most_the_rate(s, name)

    # no double moves: wait holds each selected id once, failed exactly the unselected
    waiting = seen["email"].waiting
    assert len(waiting) == len(set(waiting)) == 2 * PER_REPLAY
    assert set(waiting) == set(whatsapp) | set(email)
    assert seen["email"].failed == set(others)

    # one replay worked the queue at a time: their moves do not overlap
    spans = sorted((s.ms("started_ms"), s.ms("replayed_ms"), name) for name, s in seen.items())
    assert spans[0][1] <= spans[1][0], f"both replays moved jobs at once: {spans}"

    # one process drove each replay: while it moved jobs, one driver token held the lease for it
    # (after its last move the other process may take the lease for a moment to see it is done)
    spans_by_id = {uids[name]: (s.ms("started_ms"), s.ms("replayed_ms")) for name, s in seen.items()}
    drivers: dict[str, set[str]] = {}
    for before, after, value in holders:
        replay_id, _owner, token, where = value.split(" ")
        start, end = spans_by_id[replay_id]
        if start <= before and after <= end:
            drivers.setdefault(replay_id, set()).add(f"{token} {where}")
    assert set(drivers) == set(uids.values()), holders
    assert all(len(d) == 1 for d in drivers.values()), drivers
    pids = {int(w.rpartition(":")[2]) for d in drivers.values() for w in d}
    assert pids <= {first.pid, second.pid}, (pids, first.pid, second.pid)

    # and the other process was there, fenced: it said who drives the replay it waited for
    messages = [
        e.get("message", "")
        for name in finals
        for e in await asyncio.to_thread(events, kube, name)
        if e.get("reason") == "QueueLocked"
    ]
    fenced = {int(m[1]) for text in messages if (m := re.search(r"driven by pid (\d+)", text))}
    assert fenced and fenced <= {first.pid, second.pid}, messages
    assert first.running and second.running
    rates = [round(s.replayed * 1000 / (s.ms("replayed_ms") - s.ms("started_ms"))) for s in seen.values()]
    print(
        f"\nspans (started_ms, replayed_ms): {spans}; drivers: {drivers}; rates: {rates} jobs/s; "
        f"took {time.monotonic() - began:.1f}s"
    )
