"""The events-stream reader against a real redis-server with real BullMQ jobs completing and failing."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from bullmq import Queue

from requeue.policy.failure_rate import EventReader, read_events
from support.bullmq_jobs import run_worker

WINDOW_MS = 5 * 60 * 1000


async def add_jobs(redis_url: str, queue: str, fails: list[bool], prefix: str = "bull") -> None:
    q = Queue(queue, {"connection": redis_url, "prefix": prefix})
    try:
        await q.addBulk(
            [{"name": "whatsapp.send", "data": {"i": i, "fail": f}, "opts": {}} for i, f in enumerate(fails)]
        )
    finally:
        await q.close()


def fail_flag(job: Any) -> str | None:
    return "provider answered 429" if job.data.get("fail") else None


def now_ms() -> int:
    return int(time.time() * 1000)


async def finish_jobs(redis_url: str, queue: str, fails: list[bool], prefix: str = "bull") -> None:
    async with run_worker(redis_url, queue, fail_when=fail_flag, prefix=prefix) as run:
        await add_jobs(redis_url, queue, fails, prefix)
        await run.wait_for(len(fails))


async def test_counts_completed_and_failed_and_continues_from_the_cursor(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)  # bytes replies: the reader copes with both
    try:
        await finish_jobs(redis_url, "orders", [i % 4 == 0 for i in range(40)])  # 10 fail, 30 complete
        tallies = await read_events(
            client, "bull", ["orders", "idle"], {}, now_ms=now_ms(), window_ms=WINDOW_MS
        )
        orders = tallies["orders"]
        assert (orders.completed, orders.failed) == (30, 10)
        assert orders.cursor and not orders.behind
        assert tallies["idle"].cursor == "" and tallies["idle"].per_second == {}
        # everything in the tally is stamped within the test's own time span
        assert all(s <= now_ms() // 1000 for s in orders.per_second)

        again = await read_events(
            client, "bull", ["orders"], {"orders": orders.cursor}, now_ms=now_ms(), window_ms=WINDOW_MS
        )
        assert (again["orders"].completed, again["orders"].failed) == (0, 0)
        assert again["orders"].cursor == orders.cursor

        await finish_jobs(redis_url, "orders", [True, True, False])
        more = await read_events(
            client, "bull", ["orders"], {"orders": orders.cursor}, now_ms=now_ms(), window_ms=WINDOW_MS
        )
        assert (more["orders"].completed, more["orders"].failed) == (1, 2)
    finally:
        await client.aclose()


async def test_retried_attempts_count_once_as_a_final_failure(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        q = Queue("retry", {"connection": redis_url, "prefix": "bull"})
        try:
            await q.add("pdf.generate", {"fail": True}, {"attempts": 3})
        finally:
            await q.close()
        async with run_worker(redis_url, "retry", fail_when=fail_flag) as run:
            while len(run.processed) < 3 or not await client.zcard("bull:retry:failed"):
                await run.wait_for(len(run.failed) + 1)
        tally = (await read_events(client, "bull", ["retry"], {}, now_ms=now_ms(), window_ms=WINDOW_MS))[
            "retry"
        ]
        assert (tally.completed, tally.failed) == (0, 1)
    finally:
        await client.aclose()


async def test_page_budget_bounds_a_read_and_the_next_read_catches_up(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await finish_jobs(redis_url, "busy", [False] * 25, prefix="myapp")
        reader = EventReader(
            "myapp", ["busy"], {}, now_ms=now_ms(), window_ms=WINDOW_MS, page_size=4, max_pages=3
        )
        pipe = client.pipeline(transaction=False)
        reader.queue_first(pipe)
        reader.take_first(await pipe.execute())
        await reader.finish(client)
        first = reader.tallies()["busy"]
        assert reader.round_trips == 2 and first.behind
        # 3 pages of 4 stream entries; added/active/waiting entries are skipped but paged through
        seen = first.completed
        cursor = first.cursor
        for _ in range(100):
            tally = (
                await read_events(
                    client,
                    "myapp",
                    ["busy"],
                    {"busy": cursor},
                    now_ms=now_ms(),
                    window_ms=WINDOW_MS,
                    page_size=4,
                    max_pages=3,
                )
            )["busy"]
            seen += tally.completed
            cursor = tally.cursor
            if not tally.behind:
                break
        assert seen == 25
    finally:
        await client.aclose()


async def test_first_read_looks_back_one_window_only(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await finish_jobs(redis_url, "old", [True] * 5)
        later = now_ms() + 10 * 60 * 1000  # as if the policy first looked 10 minutes from now
        tally = (await read_events(client, "bull", ["old"], {}, now_ms=later, window_ms=WINDOW_MS))["old"]
        assert (tally.completed, tally.failed) == (0, 0)
    finally:
        await client.aclose()
