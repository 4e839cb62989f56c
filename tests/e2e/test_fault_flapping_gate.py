"""A gate that flips healthy/unhealthy every second: a QueuePolicy with ``pauseWhileGatesFail``
pauses and resumes its queue at most once per ``spec.interval`` (issue 14).

The gate is an HTTP endpoint answering 200 in even seconds and 503 in odd ones. The
truth is BullMQ's own record: every pause and resume XADDs a ``paused``/``resumed`` entry
to the queue's events stream, whose ids are Redis's millisecond clock. Two policies watch
two queues through the same gate: one with thresholds of 1 (it follows every flip an
evaluation sees), one with thresholds of 2 (hysteresis: a gate that never holds still
never turns green, so its queue is paused once and stays paused, but for an evaluation
that happens to see the same answer twice).
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from support import async_wait_until
from support.bullmq_jobs import create_queues
from support.dlqreplay import operator_command, secret
from support.http_endpoint import endpoint
from support.kube import Kube
from support.queuepolicy import apply, evaluations, policy

pytestmark = pytest.mark.e2e

#: The policies' ``spec.interval`` (more than the gate's 1 s flip, the issue's setting).
INTERVAL_S = 3
#: Pause/resume transitions of the thresholds-1 queue to observe before judging.
TRANSITIONS = 4


async def flapping(request: web.Request) -> web.Response:
    """Healthy in even seconds, down in odd ones: it flips every second, whoever asks."""
    up = int(time.time()) % 2 == 0
    return web.json_response({"status": "ok" if up else "down"}, status=200 if up else 503)


async def transitions(client: aioredis.Redis, queue: str) -> list[tuple[int, str]]:
    """``(ms, "paused" | "resumed")`` from BullMQ's events stream of ``queue``, oldest first."""
    # the fixture's client decodes replies; redis-py cannot type that (it says bytes | str)
    entries = cast(list[tuple[str, dict[str, str]]], await client.xrange(f"bull:{queue}:events"))
    out: list[tuple[int, str]] = []
    for entry_id, fields in entries:
        if fields.get("event") in ("paused", "resumed"):
            out.append((int(entry_id.split("-")[0]), fields["event"]))
    return out


def at_most_once_per_interval(seen: list[tuple[int, str]], interval_ms: int) -> None:
    """No two pauses (nor two resumes) within one interval; they alternate, a pause first; and no
    evaluation both paused and resumed (any two transitions an interval apart)."""
    kinds = [kind for _, kind in seen]
    assert kinds == ["paused", "resumed"] * (len(kinds) // 2) + ["paused"] * (len(kinds) % 2), seen
    for kind in ("paused", "resumed"):
        times = [ms for ms, k in seen if k == kind]
        gaps = [b - a for a, b in pairwise(times)]
        assert all(gap >= interval_ms for gap in gaps), (kind, gaps, seen)
    gaps = [b[0] - a[0] for a, b in pairwise(seen)]
    assert all(gap >= interval_ms for gap in gaps), (gaps, seen)


async def test_a_gate_flipping_every_second_pauses_and_resumes_at_most_once_per_interval(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    began = time.monotonic()
    await create_queues(redis_url, "follows", "hysteresis")
    await apply(kube, secret("redis", {"url": redis_url}))
    async with endpoint(flapping) as url:
        gate = [{"name": "provider", "http": {"url": url, "timeout": "1s"}}]
        operator = operator_factory(operator_command())
        for name, threshold in (("follows", 1), ("hysteresis", 2)):
            await apply(
                kube,
                policy(
                    name,
                    [name],
                    interval=f"{INTERVAL_S}s",
                    gates=gate,
                    gatePolicy={
                        "interval": "500ms",
                        "failureThreshold": threshold,
                        "successThreshold": threshold,
                    },
                    actions={"pauseWhileGatesFail": True},
                ),
            )

        async def enough() -> list[tuple[int, str]] | None:
            seen = await transitions(redis_client, "follows")
            return seen if len(seen) >= TRANSITIONS else None

        await async_wait_until(
            enough,
            timeout=20 * INTERVAL_S,
            interval=0.2,
            message=lambda: (
                f"{TRANSITIONS} pauses/resumes of queue follows; operator log:\n{operator.logs()[-5000:]}"
            ),
        )
        st = await evaluations(kube, "hysteresis", 1, operator=operator, timeout=4 * INTERVAL_S)

    interval_ms = INTERVAL_S * 1000
    follows = await transitions(redis_client, "follows")
    hysteresis = await transitions(redis_client, "hysteresis")
    at_most_once_per_interval(follows, interval_ms)
    at_most_once_per_interval(hysteresis, interval_ms)
    # the gate was seen flapping (not a vacuous pass): thresholds 1 followed it
    assert len(follows) >= TRANSITIONS, follows
    # hysteresis: never more transitions than the queue that follows every flip
    assert len(hysteresis) <= len(follows) + 1, (hysteresis, follows)
    assert st.get("lastEvaluatedAt"), st
    assert operator.running
    gaps = [b[0] - a[0] for a, b in pairwise(follows)]
    print(
        f"\nfollows: {len(follows)} transitions, gaps {gaps} ms; hysteresis: {len(hysteresis)} "
        f"transitions {[k for _, k in hysteresis]}; took {time.monotonic() - began:.1f}s"
    )
