"""The conventions ``requeue.metrics`` promises, checked on the metrics it defines.

The series a running operator exports (names, labels, removal of deleted
objects' series) are checked on its real ``/metrics`` in tests/e2e/test_metrics_scrape.py.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from requeue import metrics
from requeue.api.conditions import Reason
from requeue.api.policy import QueuePolicyStatus
from requeue.policy.series import export_observed, export_unobserved, forget_policy
from requeue.replay.observed import ReplaySeries, forget_replay


class Defined(NamedTuple):
    """One metric as ``requeue.metrics`` defines it (prometheus_client's or a policy_metrics collector)."""

    name: str
    type: str
    labelnames: tuple[str, ...]
    documentation: str


DEFINED = {d[0]: Defined(*d) for d in metrics.described()}
#: The runbook's name for a gauge, kept for dashboards built on the runbook.
LEGACY = "queue_depth_total"


def test_only_counters_end_in_total_but_the_documented_runbook_gauge() -> None:
    for name, metric in DEFINED.items():
        if name == LEGACY:
            assert metric.type == "gauge"
            assert "gauge despite its _total suffix" in metric.documentation
            assert "bullmq_queue_jobs" in metric.documentation  # where to go instead
            continue
        assert metric.type in ("counter", "gauge", "histogram")
        assert not name.endswith("_total"), f"{name}: only a counter's series end in _total"


def test_the_runbook_gauge_has_a_correctly_named_twin_with_the_same_labels() -> None:
    legacy, twin = DEFINED[LEGACY], DEFINED["bullmq_queue_jobs"]
    assert twin.type == "gauge"
    assert set(legacy.labelnames) - {"status"} == set(twin.labelnames) - {"state"}


def test_every_queue_level_series_names_its_namespace_and_policy() -> None:
    """Two namespaces that each watch a queue named ``default`` must not share a series."""
    queue_level = {name: m for name, m in DEFINED.items() if "queue" in m.labelnames}
    # (a counter's name is kept without its _total)
    assert set(queue_level) >= {LEGACY, "bullmq_queue_jobs", "requeue_actions", "requeue_replay_jobs"}
    for name, metric in queue_level.items():
        assert {"namespace", "policy"} <= set(metric.labelnames), name


def test_redis_up_tells_a_replay_from_a_policy_of_the_same_name() -> None:
    assert DEFINED["requeue_redis_up"].labelnames == ("namespace", "kind", "owner")
    assert {metrics.KIND_REPLAY, metrics.KIND_POLICY} == {"DLQReplay", "QueuePolicy"}


def test_no_created_series() -> None:
    """``*_created`` doubles every labelled counter and histogram and Prometheus ignores it."""
    registry = CollectorRegistry()
    counter = Counter("requeue_probe", "a probe", ["x"], registry=registry)
    histogram = Histogram("requeue_probe_seconds", "a probe", registry=registry)
    counter.labels("a").inc()
    histogram.observe(0.1)
    text = generate_latest(registry).decode()
    assert "requeue_probe_total" in text and "requeue_probe_seconds_count" in text
    assert "_created" not in text


def series_of(**labels: str) -> list[str]:
    """Every sample in the process registry that carries all of ``labels``."""
    return [
        f"{s.name}{s.labels}"
        for family in REGISTRY.collect()
        for s in family.samples
        if labels.items() <= s.labels.items()
    ]


def test_a_policy_that_cannot_observe_leaves_no_gauges_and_says_why_for_redis() -> None:
    status = QueuePolicyStatus.model_validate({"queues": [{"name": "default", "failed": 4}]})
    up = {"namespace": "unit-a", "kind": "QueuePolicy", "owner": "orders"}
    export_observed("unit-a", "orders", status, ["default"])
    assert REGISTRY.get_sample_value("requeue_redis_up", up) == 1
    # two state gauges, paused, idle seconds
    assert len(series_of(namespace="unit-a", policy="orders")) == 6 + 6 + 1 + 1

    export_unobserved("unit-a", "orders", Reason.REDIS_UNREACHABLE)
    assert series_of(namespace="unit-a", policy="orders") == []
    assert REGISTRY.get_sample_value("requeue_redis_up", up) == 0

    export_observed("unit-a", "orders", status, ["default"])
    export_unobserved("unit-a", "orders", Reason.SECRET_NOT_FOUND)  # Redis' state unknown: no series
    assert series_of(namespace="unit-a", kind="QueuePolicy") == []


def test_a_queue_without_a_failure_rate_loses_its_ratio_series_and_only_it() -> None:
    """No finished job in the window: no ratio rather than the last one; the other queue keeps its."""
    ratio = "bullmq_queue_failure_ratio"
    both = QueuePolicyStatus.model_validate(
        {"queues": [{"name": "a", "failureRatePercent": 25.0}, {"name": "b", "failureRatePercent": 50.0}]}
    )
    export_observed("unit-d", "orders", both, ["a", "b"])
    a = {"namespace": "unit-d", "policy": "orders", "queue": "a"}
    b = {**a, "queue": "b"}
    assert REGISTRY.get_sample_value(ratio, a) == 0.25
    assert REGISTRY.get_sample_value(ratio, b) == 0.5

    quiet_a = QueuePolicyStatus.model_validate(
        {"queues": [{"name": "a"}, {"name": "b", "failureRatePercent": 50.0}]}
    )
    export_observed("unit-d", "orders", quiet_a, ["a", "b"])
    assert REGISTRY.get_sample_value(ratio, a) is None
    assert REGISTRY.get_sample_value(ratio, b) == 0.5
    export_observed("unit-d", "orders", quiet_a, ["a", "b"])  # absent already: nothing to remove
    assert REGISTRY.get_sample_value(ratio, a) is None
    export_unobserved("unit-d", "orders", Reason.SECRET_NOT_FOUND)


def test_a_deleted_policy_takes_its_counters_and_its_auto_replays_but_nothing_else() -> None:
    metrics.ACTIONS.labels("unit-b", "orders", "alert", "default").inc()
    ReplaySeries.of("unit-b", "orders-default-0123456789", policy="orders").count("default", "replayed", 3)
    ReplaySeries.of("unit-b", "by-hand").count("default", "replayed", 2)
    ReplaySeries.of("unit-c", "x", policy="orders").count("default", "replayed", 1)
    assert series_of(replay="orders-default-0123456789") == []  # counted under the policy instead

    forget_policy("unit-b", "orders")
    assert series_of(namespace="unit-b", policy="orders") == []
    assert series_of(namespace="unit-b", replay="by-hand") != []
    assert series_of(namespace="unit-c", policy="orders") != []

    forget_replay("unit-b", "by-hand")
    assert series_of(namespace="unit-b", replay="by-hand") == []
