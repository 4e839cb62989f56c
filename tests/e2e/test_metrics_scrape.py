"""The operator's real ``/metrics``, scraped over HTTP: names, labels, and no series outliving its object.

Two QueuePolicies of the same name, in two namespaces, each watch a queue named
``default`` on a Redis of its own: their series must stay apart (the issue's
``queue_depth_total{queue,status}`` overwrote one with the other). A policy that
loses its Redis shows ``requeue_redis_up`` 0 and no queue gauges rather than
frozen ones; deleting a DLQReplay or a QueuePolicy removes every series it
labelled, counters included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from support import async_wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import operator_command, replay, secret, wait_gone_async, wait_status_async
from support.kube import Kube
from support.queuepolicy import FAST_GATES, apply, kubectl, policy, redis_gate, scrape
from support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.e2e

#: Prefixes of the series requeue itself exports (the rest is prometheus_client's process_*/python_*).
OURS = ("requeue_", "bullmq_", "queue_depth_total")


def samples(text: str) -> list[Sample]:
    """Every sample of requeue's own series, parsed the way Prometheus reads the exposition."""
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(OURS)
    ]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` with exactly these labels (None: no such series)."""
    values = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(values) <= 1
    return values[0] if values else None


def labelled(found: list[Sample], **labels: str) -> list[str]:
    """Every sample that carries all of ``labels`` (any name): what must vanish with an object."""
    return [f"{s.name}{s.labels}" for s in found if labels.items() <= s.labels.items()]


async def until(port: int, check: Callable[[list[Sample]], bool], what: str) -> list[Sample]:
    """Scrape until ``check`` holds on the samples; return them."""
    last: list[Sample] = []

    async def probe() -> list[Sample] | None:
        nonlocal last
        try:
            last = samples(await scrape(port))
        except httpx.TransportError:  # the operator is not serving yet
            return None
        return last if check(last) else None

    return await async_wait_until(
        probe, timeout=30, message=lambda: f"{what}; last scrape:\n" + "\n".join(map(str, last))
    )


def defined_series() -> dict[str, set[str]]:
    """Each series name ``requeue.metrics`` defines, with its label names."""
    from requeue import metrics

    names: dict[str, set[str]] = {}
    for name, kind, labelnames, _ in metrics.described():
        labels = set(labelnames)
        if kind == "counter":
            names[f"{name}_total"] = labels
        elif kind == "histogram":
            names[f"{name}_bucket"] = labels | {"le"}
            names[f"{name}_sum"] = names[f"{name}_count"] = labels
        else:
            names[name] = labels
    return names


def jobs(n: int) -> list[JobSpec]:
    return [JobSpec("whatsapp.send", {"n": i}, reason="429 Too Many Requests") for i in range(n)]


async def test_two_namespaces_stay_apart_and_deleted_objects_leave_no_series(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_factory: Any,
) -> None:
    other: RedisServer = redis_factory()
    await make_failed_jobs(redis_url, "default", jobs(3))
    await make_failed_jobs(other.url, "default", jobs(5))
    await kubectl(kube, "create", "namespace", "payments")
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("redis", {"url": other.url}, namespace="payments"))
    port = free_port()
    operator = operator_factory(operator_command(metrics_port=port))
    # the same policy name and the same queue name in both namespaces; default's is gated by a Redis gate
    await apply(kube, secret("gate-redis", {"url": redis_url}))
    gated: dict[str, Any] = {"gates": [redis_gate()], "gatePolicy": FAST_GATES}
    for namespace in ("default", "payments"):
        await apply(
            kube,
            policy(
                "orders",
                ["default"],
                namespace=namespace,
                interval="1s",
                thresholds={"failed": 1},
                **(gated if namespace == "default" else {}),
            ),
        )

    queue = {"queue": "default"}
    here = {"namespace": "default", "policy": "orders"}
    there = {"namespace": "payments", "policy": "orders"}

    def both_observed(found: list[Sample]) -> bool:
        return all(
            value(found, "bullmq_queue_jobs", **ns, **queue, state="failed") is not None
            for ns in (here, there)
        )

    found = await until(port, both_observed, "both policies' gauges")
    assert value(found, "bullmq_queue_jobs", **here, **queue, state="failed") == 3
    assert value(found, "bullmq_queue_jobs", **there, **queue, state="failed") == 5
    # the runbook's gauge keeps its name and its status label, and no longer overwrites
    assert value(found, "queue_depth_total", **here, **queue, status="failed") == 3
    assert value(found, "queue_depth_total", **there, **queue, status="failed") == 5
    for namespace in ("default", "payments"):
        up = {"namespace": namespace, "kind": "QueuePolicy", "owner": "orders"}
        assert value(found, "requeue_redis_up", **up) == 1
    # a gate's health carries its kind (type: redis, postgres or http), what dashboards group by
    gate = {"namespace": "default", "owner": "orders", "gate": "cache"}
    found = await until(
        port, lambda f: value(f, "requeue_gate_healthy", **gate, type="redis") == 1, "the redis gate green"
    )
    assert [s.labels for s in found if s.name == "requeue_gate_healthy"] == [{**gate, "type": "redis"}]
    found = await until(
        port,
        lambda f: all(
            value(f, "requeue_actions_total", **ns, action="alert", **queue) == 1 for ns in (here, there)
        ),
        "one alert counted per policy",
    )

    # every series is one requeue.metrics defines, with exactly its labels; no *_created
    defined = defined_series()
    for s in found:
        assert s.name in defined, f"{s.name} is not defined in requeue.metrics"
        assert set(s.labels) == defined[s.name], f"{s.name}{s.labels}"
    text = await scrape(port)
    assert not [line for line in text.splitlines() if "_created" in line.split(" ")[0]]

    # payments loses its Redis: RequeueRedisUnreachable can fire, its queue gauges go stale
    other.kill()
    found = await until(
        port,
        lambda f: value(f, "requeue_redis_up", namespace="payments", kind="QueuePolicy", owner="orders") == 0,
        "requeue_redis_up 0 for payments/orders",
    )
    assert [s for s in labelled(found, **there) if s.startswith(("bullmq_queue_", "queue_depth"))] == []
    # the per-job counters and histograms count what was seen: they stay (a counter that vanished
    # and came back would read as a reset), and go with the policy
    assert (
        value(found, "bullmq_jobs_finished_total", **there, **queue, job="whatsapp.send", outcome="failed")
        == 5
    )
    assert value(found, "bullmq_queue_jobs", **here, **queue, state="failed") == 3  # the other one lives

    # a replay made by hand counts under its own name, until it is deleted
    await apply(kube, replay("r1", "default"))
    await wait_status_async(kube, "r1", lambda s: s.get("phase") == "Succeeded", operator=operator)
    found = await until(
        port,
        lambda f: (
            value(
                f,
                "requeue_replay_jobs_total",
                namespace="default",
                policy="",
                replay="r1",
                queue="default",
                outcome="replayed",
            )
            == 3
        ),
        "3 jobs replayed by r1",
    )
    await kubectl(kube, "delete", "dlqr", "r1", "--wait=false")
    await wait_gone_async(kube, "r1", operator=operator)
    found = await until(port, lambda f: labelled(f, replay="r1") == [], "r1's series removed")
    assert labelled(found, owner="r1") == []
    assert value(found, "requeue_replays", namespace="default", phase="Succeeded") == 0

    # deleting a policy removes every series it labelled, counters included
    assert labelled(found, **here)
    await kubectl(kube, "delete", "qpol", "orders", "--wait=false")
    found = await until(
        port,
        lambda f: labelled(f, **here) == [] and labelled(f, namespace="default", owner="orders") == [],
        "default/orders' series removed",
    )
    assert value(found, "requeue_redis_up", namespace="payments", kind="QueuePolicy", owner="orders") == 0
    assert value(found, "requeue_actions_total", **there, action="alert", **queue) == 1
