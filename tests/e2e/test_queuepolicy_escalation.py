"""QueuePolicy escalation levels end to end: a scripted outage walks L1 -> L2 -> healthy.

kubectl -> emulator <- `requeue run` (a subprocess); real redis-server; real Node BullMQ
producers and workers that fail jobs while the "database" is down; the database is an HTTP
health endpoint the test flips; the two escalation channels are local Slack-compatible
webhooks. Asserted as an on-call engineer would check: ``.status.escalation``, the
``Escalated`` condition, Events, the messages each channel received, Redis's pause flags
and ``requeue_escalation_level`` on /metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from support.dlqreplay import operator_command, secret
from support.http_endpoint import endpoint
from support.kube import Kube
from support.node import FailRule, NodeWorker, pause_queue, run_producer
from support.queuepolicy import (
    FAST_GATES,
    QPOL,
    SlackSink,
    apply,
    condition,
    evaluations,
    kubectl,
    metric,
    policy,
    policy_events,
    scrape,
    wait_policy,
)
from support.redis_server import free_port

pytestmark = pytest.mark.e2e

ESCALATION_REASONS = ("EscalationRaised", "EscalationLowered", "EscalationCleared")


@pytest.fixture
async def incident() -> AsyncIterator[SlackSink]:
    """A second channel: the incident room's webhook."""
    sink = await SlackSink().start()
    yield sink
    await sink.stop()


async def kube_delete(kube: Kube, name: str) -> None:
    """``kubectl delete qpol`` and wait until it is gone (the finalizer ran)."""
    await kubectl(kube, "delete", "qpol", name, "--timeout=60s")
    assert await asyncio.to_thread(kube.get, QPOL, name) is None


def level(st: dict[str, Any]) -> int:
    return int((st.get("escalation") or {}).get("level", -1))


def escalation_spec() -> dict[str, Any]:
    oncall = {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}, "mention": "<!here>"}
    room = {"name": "incident", "webhookSecretRef": {"name": "hooks", "key": "incident"}}
    return {
        "levels": [
            {
                "name": "L1",
                "holdFor": "2s",
                "when": {"any": [{"gates": {"names": ["database"]}}, {"failed": {"above": 50}}]},
                "actions": {"notify": [oncall]},
            },
            {
                "name": "L2",
                "holdFor": "2s",
                "when": {
                    "all": [
                        {"gates": {"names": ["database"]}},
                        {"failed": {"above": 3, "minQueues": 2}},
                    ]
                },
                "actions": {
                    "notify": [oncall, room],
                    "pauseQueues": True,
                    "stopAutoReplay": True,
                    "snapshot": True,
                    "sampleSize": 3,
                },
            },
        ]
    }


async def test_outage_walks_l1_l2_and_back_one_event_and_one_message_per_transition_and_channel(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    slack: SlackSink,
    incident: SlackSink,
) -> None:
    database = {"up": True}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": database["up"]}, status=200 if database["up"] else 503)

    port = free_port()
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("hooks", {"oncall": slack.url, "incident": incident.url}))
    # a queue someone else paused: escalation must leave it paused
    await run_producer(redis_url, "reports", [{"name": "report.build", "data": {}}], major=6)
    await pause_queue(redis_url, "reports", major=6)
    await run_producer(redis_url, "orders", [{"name": "order.charge", "data": {"warmup": 1}}], major=6)
    await run_producer(redis_url, "emails", [{"name": "email.send", "data": {"warmup": 1}}], major=6)
    operator = operator_factory(operator_command(metrics_port=port))
    down = FailRule("ECONNREFUSED database:5432", data={"outage": True})
    async with (
        endpoint(health) as url,
        NodeWorker(redis_url, "orders", major=6, fail=[down]) as orders,
        NodeWorker(redis_url, "emails", major=6, fail=[down]) as emails,
    ):
        await apply(
            kube,
            policy(
                "visapi",
                ["orders", "emails", "reports"],
                interval="1s",
                gates=[{"name": "database", "http": {"url": url, "timeout": "1s"}}],
                gatePolicy=FAST_GATES,
                escalation=escalation_spec(),
            ),
        )
        st = await wait_policy(
            kube,
            "visapi",
            lambda s: condition(s, "GatesPassed").get("status") == "True" and level(s) == 0,
            operator=operator,
            what="healthy, level 0",
        )
        assert condition(st, "Escalated")["reason"] == "NotEscalated"
        assert (
            metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="visapi") == 0
        )

        # the database goes down: L1 after its 2 s hold
        database["up"] = False
        st = await wait_policy(kube, "visapi", lambda s: level(s) == 1, operator=operator, what="level 1")
        esc = st["escalation"]
        assert esc["name"] == "L1" and esc["since"] and esc["reasons"] == ["gate(s) red: database"], esc
        assert condition(st, "Escalated")["status"] == "True"
        assert (
            metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="visapi") == 1
        )
        assert len(slack.messages) == 1 and slack.messages[0].startswith("<!here> :rotating_light:")
        assert "escalation raised to L1" in slack.messages[0] and incident.messages == []

        # jobs fail in both queues (the workers cannot reach the database): L2
        failing = [{"name": "order.charge", "data": {"outage": True, "i": i}} for i in range(5)]
        order_ids = await run_producer(redis_url, "orders", failing, major=6)
        email_ids = await run_producer(
            redis_url,
            "emails",
            [{"name": "email.send", "data": {"outage": True, "i": i}} for i in range(5)],
            major=6,
        )
        await orders.wait_for_final(order_ids)
        await emails.wait_for_final(email_ids)
        st = await wait_policy(kube, "visapi", lambda s: level(s) == 2, operator=operator, what="level 2")
        esc = st["escalation"]
        assert esc["name"] == "L2" and sorted(esc["pausedQueues"]) == ["emails", "orders"], esc
        assert any("failed > 3 in 2 queue(s)" in r for r in esc["reasons"]), esc
        assert await redis_client.hexists("bull:orders:meta", "paused")
        assert await redis_client.hexists("bull:emails:meta", "paused")
        snapshot = esc["snapshot"]
        assert snapshot["level"] == "L2"
        counts = {q["name"]: q["failed"] for q in snapshot["queues"]}
        assert counts["orders"] == 5 and counts["emails"] == 5, snapshot
        sample = {s["queue"]: s["ids"] for s in snapshot["failedSample"]}
        assert len(sample["orders"]) == 3 and set(sample["orders"]) <= set(order_ids), sample
        assert set(sample["emails"]) <= set(email_ids) and sample["reports"] == []
        assert (
            metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="visapi") == 2
        )
        rows = (await kubectl(kube, "get", "qpol", "visapi")).splitlines()
        assert rows[0].split() == ["NAME", "QUEUES", "HEALTHY", "ESCALATION", "AGE"], rows
        assert rows[1].split()[3] == "L2", rows
        assert len(slack.messages) == 2 and "escalation raised to L2" in slack.messages[1]
        assert len(incident.messages) == 1 and "escalation raised to L2" in incident.messages[0]
        assert {n["channel"]: n["result"] for n in esc["notifications"]} == {
            "oncall": "sent",
            "incident": "sent",
        }

        # recovery: the database is back; both levels clear after their hold, the queues resume
        database["up"] = True
        st = await wait_policy(
            kube, "visapi", lambda s: level(s) == 0, operator=operator, what="healthy again"
        )
        assert st["escalation"]["pausedQueues"] == []
        assert condition(st, "Escalated")["status"] == "False"
        assert not await redis_client.hexists("bull:orders:meta", "paused")
        assert not await redis_client.hexists("bull:emails:meta", "paused")
        assert await redis_client.hget("bull:reports:meta", "paused") == "1"  # someone else's pause stays
        assert (
            metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="visapi") == 0
        )
        # the workers run again: a job added now completes
        [after] = await run_producer(redis_url, "orders", [{"name": "order.charge", "data": {}}], major=6)
        outcome = await orders.wait_for_final([after])
        assert outcome[after].outcome == "completed"

        # steady state (the database still up): more evaluations say nothing more
        await evaluations(kube, "visapi", 3, operator=operator)
        events = [e for e in await policy_events(kube, "visapi") if e["reason"] in ESCALATION_REASONS]
        said = [(e["reason"], e.get("count", 1)) for e in events]
        assert said == [("EscalationRaised", 1), ("EscalationRaised", 1), ("EscalationCleared", 1)], said
        assert "to L1" in events[0]["message"] and "to L2" in events[1]["message"]
        assert len(slack.messages) == 3 and "escalation cleared (was L2)" in slack.messages[2]
        assert len(incident.messages) == 2 and "escalation cleared (was L2)" in incident.messages[1]
        resumed = [e["message"] for e in await policy_events(kube, "visapi") if e["reason"] == "QueueResumed"]
        assert sorted(resumed) == ["resumed emails: escalation ended", "resumed orders: escalation ended"], (
            resumed
        )


async def test_deleting_a_policy_mid_escalation_resumes_what_escalation_paused_and_drops_its_series(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    database = {"up": False}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": database["up"]}, status=200 if database["up"] else 503)

    port = free_port()
    await apply(kube, secret("redis", {"url": redis_url}))
    await run_producer(redis_url, "orders", [{"name": "order.charge", "data": {}}], major=6)
    await run_producer(redis_url, "reports", [{"name": "report.build", "data": {}}], major=6)
    await pause_queue(redis_url, "reports", major=6)  # someone else's pause
    operator = operator_factory(operator_command(metrics_port=port))
    async with endpoint(health) as url:
        await apply(
            kube,
            policy(
                "halt",
                ["orders", "reports"],
                interval="1s",
                gates=[{"name": "database", "http": {"url": url, "timeout": "1s"}}],
                gatePolicy=FAST_GATES,
                escalation={
                    "levels": [
                        {
                            "name": "halt",
                            "holdFor": "1s",
                            "when": {"all": [{"gates": {"red": "all"}}]},
                            "actions": {"pauseQueues": True},
                        }
                    ]
                },
            ),
        )
        st = await wait_policy(kube, "halt", lambda s: level(s) == 1, operator=operator, what="level 1")
        assert st["escalation"]["pausedQueues"] == ["orders"], st["escalation"]
        assert await redis_client.hexists("bull:orders:meta", "paused")
        assert metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="halt") == 1

        await kube_delete(kube, "halt")
        assert not await redis_client.hexists("bull:orders:meta", "paused")
        assert await redis_client.hget("bull:reports:meta", "paused") == "1"
        assert (
            metric(await scrape(port), "requeue_escalation_level", namespace="default", policy="halt") is None
        )


async def test_failures_across_job_names_raise_a_level_and_its_message_is_retried_until_the_webhook_takes_it(
    kube: Kube, operator_factory: Any, redis_url: str, slack: SlackSink
) -> None:
    """Real Node workers fail jobs of three names in two queues: the level with ``failedJobNames``
    is entered; its channel's webhook answers 500, so the message waits in
    ``pendingNotifications`` and goes out, once, when the webhook works again."""
    port = free_port()
    slack.status = 500
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("hooks", {"oncall": slack.url}))
    await run_producer(redis_url, "orders", [{"name": "order.charge", "data": {"warmup": 1}}], major=6)
    await run_producer(redis_url, "emails", [{"name": "email.send", "data": {"warmup": 1}}], major=6)
    operator = operator_factory(operator_command(metrics_port=port))
    oncall = {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}}
    down = FailRule("ECONNREFUSED provider:443", data={"fail": True})
    async with (
        NodeWorker(redis_url, "orders", major=6, fail=[down]) as orders,
        NodeWorker(redis_url, "emails", major=6, fail=[down]) as emails,
    ):
        await apply(
            kube,
            policy(
                "names",
                ["orders", "emails"],
                interval="1s",
                escalation={
                    "levels": [
                        {
                            "name": "L2",
                            "holdFor": "1s",
                            "when": {"all": [{"failedJobNames": {"atLeast": 3}}]},
                            "actions": {"notify": [oncall]},
                        },
                        {
                            "name": "L3",
                            "holdFor": "1s",
                            "when": {"any": [{"corruptJobs": {"above": 0}}]},
                            "actions": {"notify": [oncall]},
                        },
                    ]
                },
            ),
        )
        st = await wait_policy(
            kube,
            "names",
            lambda s: level(s) == 0 and len(s.get("queues", [])) == 2,
            operator=operator,
            what="level 0",
        )
        for q in st["queues"]:
            assert q["failedJobNames"] == [] and q["corruptJobs"]["found"] == 0, q

        order_ids = await run_producer(
            redis_url,
            "orders",
            [
                {"name": "order.charge", "data": {"fail": True, "i": 1}},
                {"name": "order.refund", "data": {"fail": True, "i": 2}},
            ],
            major=6,
        )
        email_ids = await run_producer(
            redis_url, "emails", [{"name": "email.send", "data": {"fail": True}}], major=6
        )
        await orders.wait_for_final(order_ids)
        await emails.wait_for_final(email_ids)

        st = await wait_policy(kube, "names", lambda s: level(s) == 1, operator=operator, what="level L2")
        esc = st["escalation"]
        assert esc["name"] == "L2" and len(esc["reasons"]) == 1, esc
        assert esc["reasons"][0].startswith("failures across 3 job names: "), esc
        assert {"email.send", "order.charge", "order.refund"} <= set(
            esc["reasons"][0].replace(",", "").split()
        )
        [pending] = esc["pendingNotifications"]
        assert pending["channel"] == "oncall" and pending["attempts"] >= 1, pending
        assert "answered 500" in pending["lastError"] and slack.url not in str(st)
        assert "escalation raised to L2" in pending["text"]
        warned = [e["message"] for e in await policy_events(kube, "names") if e["reason"] == "NotifyFailed"]
        assert len(warned) == 1 and "retried at later evaluations" in warned[0], warned
        assert metric(await scrape(port), "requeue_escalation_messages_pending", policy="names") == 1

        # the webhook works again: the next attempt (15 s after the first) sends it, once
        tried = len(slack.messages)
        slack.status = 200
        st = await wait_policy(
            kube,
            "names",
            lambda s: (s.get("escalation") or {}).get("pendingNotifications") == [],
            operator=operator,
            timeout=60,
            what="the message sent",
        )
        [note] = st["escalation"]["notifications"]
        assert note["channel"] == "oncall" and note["result"].startswith("sent (attempt "), note
        await evaluations(kube, "names", 3, operator=operator)
        assert len(slack.messages) == tried + 1 and "escalation raised to L2" in slack.messages[-1]
        assert level(await wait_policy(kube, "names", lambda s: True)) == 1
        retried = [e for e in await policy_events(kube, "names") if e["reason"] == "NotifyRetried"]
        assert len(retried) == 1, retried
        text = await scrape(port)
        assert metric(text, "requeue_escalation_messages_pending", policy="names") == 0
        assert metric(text, "requeue_escalation_messages_total", policy="names", outcome="sent") == 1
