"""The escalation conditions failedJobNames and corruptJobs, and escalation messages retried
after a webhook failure, through :func:`evaluate` against real Redis:

* real Node BullMQ workers fail jobs of several names in two queues: the names are read from
  the failed jobs' hashes the latency read fetches anyway, and the level is entered; jobs
  removed on failure (``removeOnFail: true``) leave no name and are not counted;
* real failed jobs damaged with redis-py the ways production Redis has been seen to hold them
  (data cut short, binary data, no name, the hash gone while the id stays failed) are found,
  for one more round trip, and jobs removed on failure are not taken for corrupt ones;
* a Slack-compatible webhook that answers 500, and one that cannot be reached, then works:
  the message goes out at a later evaluation, once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from requeue.api.base import SecretKeyRef
from requeue.api.policy import QueuePolicySpec, QueueState
from requeue.policy.escalation_send import WebhookSender
from requeue.policy.evaluate import BullQueueOps, EvaluationResult, PolicyRef, evaluate
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.node import FailRule, NodeWorker, run_producer
from support.queuepolicy import SlackSink
from support.redis_server import free_port

POLICY = PolicyRef(namespace="visapi", name="signals", uid="5e20-signals-uid", generation=1)
MAJOR = 6
ONCALL = {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}}


def spec(queues: list[str], *conditions: dict[str, Any], notify: bool = False) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": queues,
            "thresholds": {"window": "10m"},
            "escalation": {
                "levels": [
                    {
                        "name": "L2",
                        "holdFor": "0s",
                        "when": {"all": list(conditions)},
                        "actions": {"notify": [ONCALL] if notify else []},
                    }
                ]
            },
        }
    )


async def once(
    r: aioredis.Redis, s: QueuePolicySpec, prev: EvaluationResult | None = None, **kw: Any
) -> EvaluationResult:
    return await evaluate(
        POLICY,
        s,
        prev.status if prev else None,
        redis=r,
        ops=BullQueueOps(r),
        memory=prev.memory if prev else None,
        now=kw.pop("now", datetime.now(UTC)),
        **kw,
    )


def queue(result: EvaluationResult, name: str) -> QueueState:
    return next(q for q in result.status.queues if q.name == name)


async def test_failures_across_several_job_names_from_real_node_workers_enter_the_level(
    r: aioredis.Redis, redis_url: str
) -> None:
    down = FailRule("ECONNREFUSED provider:443", data={"fail": True})
    orders = [
        *({"name": "order.charge", "data": {"fail": True, "i": i}} for i in range(3)),
        {"name": "order.refund", "data": {"fail": True}},
        {"name": "order.archive", "data": {"fail": False}},  # completes: not a failed name
    ]
    emails = [
        *({"name": "email.send", "data": {"fail": True, "i": i}} for i in range(2)),
        {"name": "order.charge", "data": {"fail": True}},  # the same name in another queue
        *(  # removed on failure: the hash is gone before it is read, its name unknown
            {"name": "email.bounce", "data": {"fail": True, "i": i}, "opts": {"removeOnFail": True}}
            for i in range(4)
        ),
    ]
    async with (
        NodeWorker(redis_url, "orders", major=MAJOR, fail=[down]) as ow,
        NodeWorker(redis_url, "emails", major=MAJOR, fail=[down]) as ew,
    ):
        await ow.wait_for_final(await run_producer(redis_url, "orders", orders, major=MAJOR))
        await ew.wait_for_final(await run_producer(redis_url, "emails", emails, major=MAJOR))

    three = spec(["orders", "emails"], {"failedJobNames": {"atLeast": 3}})
    result = await once(r, three)
    esc = result.status.escalation
    assert esc is not None and (esc.level, esc.name) == (1, "L2"), esc
    assert esc.reasons == ["failures across 3 job names: order.charge 4, email.send 2, order.refund 1"]
    assert [(n.name, n.failed) for n in queue(result, "orders").failed_job_names or []] == [
        ("order.charge", 3),
        ("order.refund", 1),
    ]
    assert [(n.name, n.failed) for n in queue(result, "emails").failed_job_names or []] == [
        ("email.send", 2),
        ("order.charge", 1),
    ]
    # a name counts once two of its jobs failed: order.refund does not
    strict = spec(["orders", "emails"], {"failedJobNames": {"atLeast": 3, "minFailures": 2}})
    await r.delete("requeue:policy:5e20-signals-uid:memory")
    result = await once(r, strict)
    assert result.status.escalation is not None and result.status.escalation.level == 0
    assert result.status.escalation.levels[0].holding is False
    # the next evaluation reads only what is new (nothing): the window still holds the names
    again = await once(r, three, result, now=datetime.now(UTC) + timedelta(minutes=1))
    assert [n.name for n in queue(again, "orders").failed_job_names or []] == ["order.charge", "order.refund"]
    # the window passes: the names age out
    later = await once(r, three, again, now=datetime.now(UTC) + timedelta(minutes=12))
    assert queue(later, "orders").failed_job_names == [] and queue(later, "emails").failed_job_names == []


async def damage(redis: aioredis.Redis, ids: list[str]) -> dict[str, str]:
    """Damage four of the failed jobs in place with redis-py; id -> the reason expected."""
    cut, binary, nameless, gone = ids[:4]
    await redis.hset(f"bull:orders:{cut}", "data", '{"i": 0, "tenant": "acme"')  # a truncated write
    await redis.hset(f"bull:orders:{binary}", "data", b"\x82\xa1i\xcd\x00\xff\xfe\x00binary")  # msgpack
    await redis.hdel(f"bull:orders:{nameless}", "name")
    await redis.delete(f"bull:orders:{gone}")  # evicted, or removed by hand: its id stays failed
    return {
        cut: "job data is not JSON",
        binary: "job data is not JSON",
        nameless: "job has no name",
        gone: "job hash missing (its id is still in the failed set)",
    }


async def test_corrupt_failed_jobs_in_a_real_queue_are_found_and_enter_the_level(
    r: aioredis.Redis, redis_client: aioredis.Redis, redis_url: str
) -> None:
    ids = await make_failed_jobs(
        redis_url,
        "orders",
        [
            *(JobSpec("order.charge", {"i": i}) for i in range(7)),
            JobSpec("order.big", {"blob": "x" * 200_000}),  # valid, above the read limit: not read
        ],
    )
    expected = await damage(redis_client, ids)
    down = FailRule("boom", data={"fail": True})
    async with NodeWorker(redis_url, "emails", major=MAJOR, fail=[down]) as ew:
        removed = [{"name": "email.send", "data": {"fail": True}, "opts": {"removeOnFail": True}}] * 3
        await ew.wait_for_final(await run_producer(redis_url, "emails", removed, major=MAJOR))

    s = spec(["orders", "emails"], {"corruptJobs": {"above": 0}})
    result = await once(r, s)
    esc = result.status.escalation
    assert esc is not None and (esc.level, esc.name) == (1, "L2"), esc
    assert esc.reasons == ["corrupt jobs > 0 in 1 queue(s): orders 4"]
    found = queue(result, "orders").corrupt_jobs
    assert found is not None and (found.found, found.checked) == (4, 8)
    assert {j.id: j.reason for j in found.sample} == expected
    emails = queue(result, "emails").corrupt_jobs
    assert emails is not None and (emails.found, emails.checked) == (0, 3)  # removed, not corrupt
    # what it costs: one round trip more than the same policy without the condition (the data read)
    plain = spec(["orders", "emails"], {"failed": {"above": 100}})
    await r.delete("requeue:policy:5e20-signals-uid:memory")
    baseline = await once(r, plain)
    assert result.round_trips == baseline.round_trips + 1, (result.round_trips, baseline.round_trips)
    # nothing new is read next time; the window still holds what was found
    again = await once(r, s, result, now=datetime.now(UTC) + timedelta(minutes=1))
    held = queue(again, "orders").corrupt_jobs
    assert held is not None and held.found == 4 and again.status.escalation is not None
    assert again.status.escalation.level == 1


class Switch:
    """A SecretSource whose webhook URL the test changes (an unreachable one, then the sink)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def get(self, ref: SecretKeyRef) -> str:
        return self.url


def messages_metric(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "requeue_escalation_messages_total",
        {"namespace": "visapi", "policy": "signals", "channel": "oncall", "outcome": outcome},
    )
    return value or 0.0


async def test_a_message_the_webhook_refused_or_could_not_take_is_sent_once_at_a_later_evaluation(
    r: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    await make_failed_jobs(redis_url, "orders", [JobSpec("order.charge", {"i": i}) for i in range(3)])
    s = spec(["orders"], {"failed": {"above": 1}}, notify=True)
    secrets = Switch(f"http://127.0.0.1:{free_port()}/services/T000/B000/closed")
    sender = WebhookSender(secrets, timeout=2)
    t0 = datetime.now(UTC)
    before = {o: messages_metric(o) for o in ("sent", "failed")}

    # unreachable: the level changes, the message waits
    first = await once(r, s, now=t0, channels=sender)
    esc = first.status.escalation
    assert esc is not None and esc.level == 1
    [pending] = esc.pending_notifications
    assert pending.attempts == 1 and "escalation webhook (secret hooks/oncall) failed" in pending.last_error
    assert pending.next_attempt_at == t0 + timedelta(seconds=15)
    warnings = [e.message for e in first.events if e.reason == "NotifyFailed"]
    assert len(warnings) == 1 and "retried at later evaluations" in warnings[0]
    pending_gauge = {"namespace": "visapi", "policy": "signals"}
    assert REGISTRY.get_sample_value("requeue_escalation_messages_pending", pending_gauge) == 1

    # reachable now, but answering 500: attempt 2 fails too
    secrets.url = slack.url
    slack.status = 500
    second = await once(r, s, first, now=t0 + timedelta(seconds=20), channels=sender)
    esc = second.status.escalation
    assert esc is not None and [p.attempts for p in esc.pending_notifications] == [2]
    assert "answered 500" in esc.pending_notifications[0].last_error
    assert [e for e in second.events if e.reason == "NotifyFailed"] == []  # said once, in status since
    assert len(slack.messages) == 1

    # before its backoff (30 s after attempt 2) nothing is tried
    third = await once(r, s, second, now=t0 + timedelta(seconds=40), channels=sender)
    assert len(slack.messages) == 1

    # the webhook works again: sent, once, and never again
    slack.status = 200
    fourth = await once(r, s, third, now=t0 + timedelta(seconds=60), channels=sender)
    esc = fourth.status.escalation
    assert esc is not None and esc.pending_notifications == []
    assert [(n.channel, n.result) for n in esc.notifications] == [("oncall", "sent (attempt 3)")]
    assert [e.message for e in fourth.events if e.reason == "NotifyRetried"] == [
        "channel oncall: sent at attempt 3"
    ]
    assert len(slack.messages) == 2 and slack.messages[0] == slack.messages[1]
    assert "escalation raised to L2" in slack.messages[1]
    fifth = await once(r, s, fourth, now=t0 + timedelta(minutes=10), channels=sender)
    assert fifth.status.escalation is not None and fifth.status.escalation.level == 1
    assert len(slack.messages) == 2
    assert REGISTRY.get_sample_value("requeue_escalation_messages_pending", pending_gauge) == 0
    assert messages_metric("failed") - before["failed"] == 2
    assert messages_metric("sent") - before["sent"] == 1
