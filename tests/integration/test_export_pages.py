"""``requeue export``'s paging of a sorted set when many jobs share one score (a bulk import, a
clock that did not move): every member once, in order, and a number of reads linear in the
set, not in the square of the tie."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from requeue.queues import QueueKeys
from requeue.queues.export import id_pages


class CountingRedis(aioredis.Redis):
    """The real client, counting ``ZRANGEBYSCORE`` calls."""

    reads = 0

    async def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        type(self).reads += 1
        return await super().zrangebyscore(*args, **kwargs)


async def test_a_tie_of_2300_jobs_is_paged_once_each_in_order(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    keys = QueueKeys("bull", "tied-export")
    await redis_client.zadd(keys.failed, {f"j{i:05d}": 5 for i in range(2300)})
    await redis_client.zadd(keys.failed, {**{f"a{i}": 1 for i in range(3)}, **{f"z{i}": 9 for i in range(7)}})
    counting = CountingRedis.from_url(redis_url, decode_responses=True)
    try:
        seen = [m async for page in id_pages(counting, keys, "failed", page=500) for m, _ in page]
    finally:
        await counting.aclose()
        await redis_client.delete(keys.failed)
    assert len(seen) == 2310 and seen == sorted(seen, key=lambda m: (m[0] != "a", m[0] == "z", m))
    assert CountingRedis.reads <= 2310 // 500 + 2  # one read a page; the old paging re-read the tie: 16
