"""The replay's hand-packed transactions give the same answers with and without the hiredis fast path.

The fast path reads replies hiredis already buffered through redis-py internals; the
public fallback reads each through ``read_response``. A redis-py release that renames
the internals must only cost speed, never a wrong reply.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rx

from requeue.queues.raw import RawTransaction, buffered_reader, pack


async def run_both_kinds(r: aioredis.Redis, fast: bool) -> dict[str, Any]:
    """Reads after WATCH, a committed MULTI, a refused command, and a WATCH abort."""
    await r.delete("raw:list", "raw:watched")
    seen: dict[str, Any] = {}
    async with RawTransaction(r, fast_replies=fast) as tx:
        assert tx.conn is not None
        seen["reader"] = buffered_reader(tx.conn) is not None
        seen["reads"] = await tx.call(
            [
                pack("RPUSH", "raw:list", *map(str, range(300))),
                pack("LRANGE", "raw:list", 0, 2),
                pack("GET", "raw:nothing"),
                pack("HGET", "raw:list", "x"),
            ]
        )
        seen["exec"] = await tx.exec([pack("LPOP", "raw:list"), pack("LLEN", "raw:list")])
    async with RawTransaction(r, fast_replies=fast) as tx:
        with pytest.raises(rx.ResponseError):
            await tx.exec([pack("LPOP", "raw:list"), pack("NOSUCHCOMMAND")])
    async with RawTransaction(r, fast_replies=fast) as tx:
        await tx.call([pack("WATCH", "raw:watched")])
        await r.set("raw:watched", "changed by someone else")
        seen["aborted"] = await tx.exec([pack("LPOP", "raw:list")])
    async with RawTransaction(r, fast_replies=fast) as tx:
        first, result = await tx.guarded_exec(
            [pack("WATCH", "raw:watched"), pack("GET", "raw:watched")], [pack("LLEN", "raw:list")]
        )
        seen["guarded"] = (first, result)
    seen["left"] = await r.llen("raw:list")
    return seen


async def test_fast_and_public_reply_paths_agree(r: aioredis.Redis) -> None:
    fast = await run_both_kinds(r, fast=True)
    public = await run_both_kinds(r, fast=False)
    assert fast.pop("reader") is True, "hiredis is installed: the fast path must be the one tested"
    assert public.pop("reader") is True
    reads = fast["reads"]
    assert reads[:3] == [300, ["0", "1", "2"], None]
    assert isinstance(reads[3], rx.ResponseError) and "WRONGTYPE" in str(reads[3])
    assert fast["exec"] == ["0", 299]
    assert fast["aborted"] is None
    assert fast["guarded"] == (["OK", "changed by someone else"], [299])
    assert fast["left"] == 299
    for key in ("exec", "aborted", "guarded", "left"):
        assert public[key] == fast[key], key
    assert str(public["reads"][3]) == str(reads[3]) and public["reads"][:3] == reads[:3]
