"""``requeue.policy_metrics``: the compact queue-level collectors expose what prometheus_client would.

Two checks: the exact text for a few policies (one deleted, one queue removed), and, for a
random sequence of sets, increments, observations and removals, the same exposition as
``prometheus_client``'s own ``Gauge``/``Counter``/``Histogram`` given the same calls (lines
compared as sets within each family: a series re-created after a removal may sit elsewhere in
the family, which Prometheus does not read).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from requeue import metrics
from requeue.policy_metrics import PolicyCounter, PolicyGauge, PolicyHistogram, TwinGauge

BUCKETS = (0.5, 1, 30)


def compact(registry: CollectorRegistry) -> tuple[PolicyGauge, PolicyHistogram, PolicyCounter]:
    jobs = PolicyGauge("t_queue_jobs", "Jobs by state.", ["namespace", "policy", "queue", "state"], registry)
    TwinGauge(
        jobs, "t_depth_total", "The same, legacy.", ["namespace", "policy", "queue", "status"], registry
    )
    latency = PolicyHistogram(
        "t_latency_seconds", "Latency.", ["namespace", "policy", "queue", "job"], BUCKETS, registry
    )
    finished = PolicyCounter(
        "t_finished_total", "Finished.", ["namespace", "policy", "queue", "outcome"], registry
    )
    return jobs, latency, finished


EXPECTED = """\
# HELP t_queue_jobs Jobs by state.
# TYPE t_queue_jobs gauge
t_queue_jobs{namespace="a",policy="orders",queue="q1",state="waiting"} 3.0
t_queue_jobs{namespace="a",policy="orders",queue="q1",state="failed"} 0.0
t_queue_jobs{namespace="b",policy="orders",queue="q1",state="waiting"} 7.5
# HELP t_depth_total The same, legacy.
# TYPE t_depth_total gauge
t_depth_total{namespace="a",policy="orders",queue="q1",status="waiting"} 3.0
t_depth_total{namespace="a",policy="orders",queue="q1",status="failed"} 0.0
t_depth_total{namespace="b",policy="orders",queue="q1",status="waiting"} 7.5
# HELP t_latency_seconds Latency.
# TYPE t_latency_seconds histogram
t_latency_seconds_bucket{job="send",le="0.5",namespace="a",policy="orders",queue="q1"} 1.0
t_latency_seconds_bucket{job="send",le="1.0",namespace="a",policy="orders",queue="q1"} 2.0
t_latency_seconds_bucket{job="send",le="30.0",namespace="a",policy="orders",queue="q1"} 2.0
t_latency_seconds_bucket{job="send",le="+Inf",namespace="a",policy="orders",queue="q1"} 3.0
t_latency_seconds_count{job="send",namespace="a",policy="orders",queue="q1"} 3.0
t_latency_seconds_sum{job="send",namespace="a",policy="orders",queue="q1"} 41.5
# HELP t_finished_total Finished.
# TYPE t_finished_total counter
t_finished_total{namespace="a",outcome="failed",policy="orders",queue="q1"} 2.0
"""


def test_exposition_of_a_few_policies_after_a_deletion_and_a_removed_queue() -> None:
    registry = CollectorRegistry()
    jobs, latency, finished = compact(registry)
    for ns, policy in (("a", "orders"), ("a", "billing"), ("b", "orders")):
        jobs.set((ns, policy, "q1", "waiting"), 3)
    jobs.set(("a", "orders", "q1", "failed"), 0)
    jobs.set(("a", "orders", "q2", "waiting"), 9)
    jobs.set(("b", "orders", "q1", "waiting"), 7.5)  # set again: the last value counts
    for seconds in (0.5, 1, 40):  # 0.5 is in le=0.5: a bound is inclusive
        latency.observe(("a", "orders", "q1", "send"), seconds)
    latency.observe(("a", "billing", "q1", "send"), 2)
    latency.observe(("a", "orders", "q2", "send"), 2)
    finished.inc(("a", "orders", "q1", "failed"), 2)
    finished.inc(("a", "orders", "q2", "completed"))
    finished.inc(("a", "billing", "q1", "completed"))

    for metric in (jobs, latency, finished):
        metric.remove_policy("a", "billing")  # a deleted policy
        metric.remove_policy("a", "orders", "q2")  # a queue taken out of a spec

    assert generate_latest(registry).decode() == EXPECTED


def families(text: str) -> dict[str, tuple[list[str], set[str]]]:
    """Each family's HELP/TYPE lines (in order) and its sample lines (as a set)."""
    found: dict[str, tuple[list[str], set[str]]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            found[current] = ([], set())
        if line.startswith("#"):
            found[current][0].append(line)
        else:
            found[current][1].add(line)
    return found


def operations(rng: random.Random, n: int) -> Iterator[tuple[str, tuple[str, ...], float]]:
    owners = [(ns, p) for ns in ("a", "b") for p in ("orders", "billing", "x-1")]
    for _ in range(n):
        ns, policy = rng.choice(owners)
        queue = rng.choice(["q1", "q2", 'q"3\\'])  # a name to escape
        what = rng.choice(
            ["set", "set", "observe", "observe", "inc", "remove", "remove_queue", "remove_policy"]
        )
        value = rng.choice([0, 1, 2.5, 1e-3, 12345.678, 0.05, 30, 3600, 7200, -1])
        yield what, (ns, policy, queue, rng.choice(["send", "other"])), value


@pytest.mark.parametrize("seed", range(5))
def test_the_same_exposition_as_prometheus_client_for_any_sequence(seed: int) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    labels = ["namespace", "policy", "queue", "job"]
    buckets = metrics.JOB_SECONDS_BUCKETS
    g, h, c = (
        PolicyGauge("r_gauge", "A gauge.", labels, ours),
        PolicyHistogram("r_seconds", "A histogram.", labels, buckets, ours),
        PolicyCounter("r_total", "A counter.", labels, ours),
    )
    TwinGauge(g, "r_twin", "The gauge again.", [*labels[:3], "kind"], ours)
    rg = Gauge("r_gauge", "A gauge.", labels, registry=theirs)
    rh = Histogram("r_seconds", "A histogram.", labels, buckets=buckets, registry=theirs)
    rc = Counter("r_total", "A counter.", labels, registry=theirs)
    rt = Gauge("r_twin", "The gauge again.", [*labels[:3], "kind"], registry=theirs)

    for what, series, value in operations(random.Random(seed), 400):
        if what == "set":
            g.set(series, value)
            rg.labels(*series).set(value)
            rt.labels(*series).set(value)
        elif what == "observe":
            h.observe(series, value)
            rh.labels(*series).observe(value)
        elif what == "inc":
            c.inc(series, abs(value))
            rc.labels(*series).inc(abs(value))
        elif what == "remove":
            for ours_, theirs_ in ((g, rg), (h, rh), (c, rc), (None, rt)):
                if ours_ is not None:
                    ours_.remove(series)
                if series in theirs_._metrics:
                    theirs_.remove(*series)
        else:
            ns, policy, queue = series[:3]
            match = {"namespace": ns, "policy": policy}
            if what == "remove_queue":
                match["queue"] = queue
            for ours_, theirs_ in ((g, rg), (h, rh), (c, rc), (None, rt)):
                if ours_ is not None:
                    ours_.remove_policy(ns, policy, queue if what == "remove_queue" else None)
                theirs_.remove_by_labels(match)

    mine, reference = families(generate_latest(ours).decode()), families(generate_latest(theirs).decode())
    assert list(mine) == list(reference)
    for name, (header, samples) in reference.items():
        assert mine[name][0] == header, name
        assert mine[name][1] == samples, name
    assert any(reference[name][1] for name in reference)  # the sequence left something to compare


def test_a_series_with_the_wrong_number_of_labels_is_refused() -> None:
    g = PolicyGauge("w_gauge", "A gauge.", ["namespace", "policy", "queue"], CollectorRegistry())
    with pytest.raises(ValueError, match="3 label values"):
        g.set(("a", "b"), 1)
    with pytest.raises(ValueError, match="namespace, policy"):
        PolicyGauge("w_other", "A gauge.", ["queue", "namespace", "policy"], CollectorRegistry())
