"""The pure parts of job latency: the status histogram and its p95, label folding, the window,
the memory it is kept in, and the latencyP95 threshold."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from requeue.api.policy import QueuePolicySpec
from requeue.policy.actions import BreachKind
from requeue.policy.latency import (
    OTHER,
    UNKNOWN,
    FinishedJob,
    bucket_index,
    bucket_upper_seconds,
    fold_name,
    merge_window,
    percentile,
)
from requeue.policy.observe import BUCKETS_PER_WINDOW, EventTally, QueueMemory, QueueObservation
from requeue.policy.thresholds import find_breaches, measure

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
WINDOW = timedelta(minutes=5)


def job(
    latency_s: float, *, finished_ago_s: float = 1, name: str | None = "pdf", processing_s: float = 0.1
) -> FinishedJob:
    finished = NOW_MS - int(finished_ago_s * 1000)
    return FinishedJob(
        id="1",
        outcome="completed",
        entry_ms=finished,
        name=name,
        added_ms=finished - round(latency_s * 1000),
        processed_ms=finished - round(processing_s * 1000),
        finished_ms=finished,
    )


@given(st.floats(min_value=0, max_value=30 * 86_400, allow_nan=False))
def test_a_latency_is_at_most_five_percent_below_its_bucket_edge(seconds: float) -> None:
    upper = bucket_upper_seconds(bucket_index(seconds))
    assert seconds <= upper * (1 + 1e-9)
    assert upper <= max(seconds * 1.05, 0.001) * (1 + 1e-9)


@given(st.lists(st.integers(min_value=0, max_value=3_600_000), min_size=1, max_size=300))
def test_p95_is_the_exact_nearest_rank_value_or_at_most_five_percent_above(values_ms: list[int]) -> None:
    values = [v / 1000 for v in values_ms]
    histogram: dict[int, int] = {}
    for v in values:
        histogram[bucket_index(v)] = histogram.get(bucket_index(v), 0) + 1
    exact = sorted(values)[math.ceil(0.95 * len(values)) - 1]
    p95 = percentile(histogram, 0.95)
    assert p95 is not None
    assert exact - 0.0005 <= p95 <= max(exact * 1.05, 0.001) + 0.0005  # rounded to ms


def test_p95_of_nothing_is_unknown() -> None:
    assert percentile({}, 0.95) is None


def test_names_beyond_the_limit_fold_into_other_and_missing_names_are_unknown() -> None:
    admitted: set[str] = set()
    labels = [fold_name(n, admitted, 2) for n in ["a", "b", "a", "c", None, "b", "d"]]
    assert labels == ["a", "b", "a", OTHER, UNKNOWN, "b", OTHER]
    assert admitted == {"a", "b"}
    assert fold_name("x" * 5000, set(), 1) == "x" * 200
    assert fold_name("a", set(), 0) == OTHER


def test_times_that_make_no_sense_are_not_observed() -> None:
    reprocessed = FinishedJob(
        id="7", outcome="failed", entry_ms=1000, name="a", added_ms=500, processed_ms=2000, finished_ms=None
    )
    assert reprocessed.latency_seconds == 0.5  # entry time stands in for a deleted finishedOn
    assert reprocessed.processing_seconds is None
    assert FinishedJob(id="8", outcome="completed", entry_ms=1000).latency_seconds is None


def test_the_window_keeps_recent_buckets_and_drops_old_and_untimed_jobs() -> None:
    now_s = NOW_MS // 1000
    first = merge_window((), [job(2), job(40, finished_ago_s=200), job(9, name=None)], WINDOW, now_s, 10)
    assert first.jobs == 3
    untimed = FinishedJob(id="9", outcome="completed", entry_ms=NOW_MS)
    later = merge_window(first.buckets, [untimed], WINDOW, now_s + 150, 10)
    assert later.jobs == 2  # the 40 s job left the window; the untimed one never entered it
    assert later.p95() == percentile(later.histogram, 0.95)
    gone = merge_window(later.buckets, [], WINDOW, now_s + 400, 10)
    assert (gone.jobs, gone.buckets, gone.p95()) == (0, (), None)


def test_the_latency_window_survives_the_memory_round_trip() -> None:
    window = merge_window((), [job(2), job(3), job(31)], WINDOW, NOW_MS // 1000, BUCKETS_PER_WINDOW)
    memory = QueueMemory(cursor="1-0", latency=window.buckets)
    back = QueueMemory.from_json(memory.to_json())
    assert back == memory
    assert QueueMemory.from_json({"c": "1-0", "t": [[1, "not a histogram"]]}) == QueueMemory()
    assert "t" not in QueueMemory(cursor="1-0").to_json()


def observed(*jobs: FinishedJob) -> QueueObservation:
    return QueueObservation(name="documents", events=EventTally(finished=jobs), finished_jobs=jobs)


def spec(**thresholds: object) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": ["documents"],
            "thresholds": thresholds,
        }
    )


def test_latency_p95_above_the_threshold_is_a_breach() -> None:
    policy = spec(latencyP95="30s")
    slow = observed(*[job(1) for _ in range(18)], job(45), job(50))
    health = measure(policy.thresholds, WINDOW, QueueMemory(), slow, NOW)
    assert health.latency_jobs == 20
    assert health.latency_p95 is not None and 45 <= health.latency_p95 <= 45 * 1.05
    breaches = find_breaches(policy, slow, health)
    assert list(breaches) == [BreachKind.LATENCY_P95]
    assert breaches[BreachKind.LATENCY_P95].startswith(
        f"job latency p95 {health.latency_p95:g}s > 30s over 5m"
    )

    fast = observed(*[job(1) for _ in range(19)], job(45))  # the 95th of 20 is the 19th: 1 s
    assert find_breaches(policy, fast, measure(policy.thresholds, WINDOW, QueueMemory(), fast, NOW)) == {}


def test_latency_is_not_judged_without_the_threshold_or_without_timed_jobs() -> None:
    slow = observed(job(100))
    assert find_breaches(spec(), slow, measure(spec().thresholds, WINDOW, QueueMemory(), slow, NOW)) == {}
    policy = spec(latencyP95="1s")
    nothing = observed(FinishedJob(id="1", outcome="completed", entry_ms=NOW_MS))
    health = measure(policy.thresholds, WINDOW, QueueMemory(), nothing, NOW)
    assert (health.latency_p95, health.latency_jobs) == (None, 0)
    assert find_breaches(policy, nothing, health) == {}
