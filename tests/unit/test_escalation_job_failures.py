"""The escalation conditions failedJobNames and corruptJobs over the pure decision: the window
of failed job names and of corrupt jobs (tables and properties against a brute-force count),
how a failed job's hash is judged corrupt, the judges, and the spec rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from requeue.api.escalation import MAX_FAILED_NAMES
from requeue.api.policy import CORRUPT_SAMPLE
from requeue.policy.job_failures import (
    CorruptCheck,
    corrupt_reason,
    merge_corrupt,
    merge_names,
    names_from_json,
    names_to_json,
)
from requeue.policy.latency import FinishedJob
from requeue.policy.observe import BUCKETS_PER_WINDOW, QueueMemory
from support.policy_sim import T0, PolicySim, make_spec

NOW_S = int(T0.timestamp())
WINDOW = timedelta(minutes=5)
WIDTH = 30  # a 5 m window in 10 buckets


def failed(name: str | None, second: int, job_id: str = "1", outcome: str = "failed") -> FinishedJob:
    return FinishedJob(id=job_id, outcome=outcome, entry_ms=second * 1000 + 7, name=name)


# ----------------------------------------------------------------- failed job names


def test_names_count_failures_in_the_window_only_and_ignore_completed_and_nameless_jobs() -> None:
    jobs = [
        failed("email.send", NOW_S - 10),
        failed("email.send", NOW_S - 20),
        failed("pdf.render", NOW_S - 100),
        failed("sms.send", NOW_S - 10, outcome="completed"),
        failed(None, NOW_S - 10),  # hash gone (removeOnFail) or beyond the lookup limit
        failed("", NOW_S - 10),  # a hash without a name: no name to count
    ]
    win = merge_names((), jobs, WINDOW, NOW_S, BUCKETS_PER_WINDOW)
    assert dict(win.counts) == {"email.send": 2, "pdf.render": 1}
    # six minutes on: the bucket of every failure is older than the window
    later = merge_names(win.buckets, [], WINDOW, NOW_S + 360, BUCKETS_PER_WINDOW)
    assert dict(later.counts) == {} and later.buckets == ()


def test_names_beyond_the_limit_drop_the_fewest_failures_first() -> None:
    jobs = [failed(f"job.{i:02}", NOW_S - 5, str(i)) for i in range(MAX_FAILED_NAMES + 5)]
    jobs += [failed("hot", NOW_S - 5, f"h{i}") for i in range(3)]
    win = merge_names((), jobs, WINDOW, NOW_S, BUCKETS_PER_WINDOW)
    assert len(win.counts) == MAX_FAILED_NAMES and len(win.buckets) == MAX_FAILED_NAMES
    assert next(iter(win.counts)) == "hot" and win.counts["hot"] == 3


def test_names_survive_the_memory_round_trip_and_a_malformed_memory_starts_afresh() -> None:
    win = merge_names(
        (), [failed("a", NOW_S - 5), failed("b", NOW_S - 50)], WINDOW, NOW_S, BUCKETS_PER_WINDOW
    )
    mem = QueueMemory(
        failed_names=win.buckets, corrupt=((NOW_S - 30, 4, 1),), corrupt_sample=(("7", "x", 1),)
    )
    assert QueueMemory.from_json(mem.to_json()) == mem
    assert names_from_json(names_to_json(win.buckets)) == win.buckets
    assert QueueMemory.from_json({"c": "1-0", "n": ["not", "a", "dict"]}) == QueueMemory()


names_st = st.sampled_from([f"n{i}" for i in range(8)])
jobs_st = st.lists(st.tuples(names_st, st.integers(0, 900)), max_size=60)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(steps=st.lists(st.tuples(jobs_st, st.integers(1, 120)), min_size=1, max_size=8))
def test_name_counts_equal_a_brute_force_count_over_the_window(
    steps: list[tuple[list[tuple[str, int]], int]],
) -> None:
    """Fed evaluation by evaluation (each job failed up to 15 m before it is read), the counts are
    exactly the failures whose window bucket still overlaps the window (the failure rate's rule)."""
    remembered: Any = ()
    now = NOW_S
    seen: list[tuple[str, int]] = []
    for jobs, advance in steps:
        now += advance
        batch = [(name, now - ago) for name, ago in jobs]
        seen += batch
        win = merge_names(
            remembered, [failed(n, s) for n, s in batch], WINDOW, now, BUCKETS_PER_WINDOW, limit=100
        )
        remembered = win.buckets
        horizon = now - 300
        expected: dict[str, int] = {}
        for name, second in seen:
            if second - second % WIDTH + WIDTH > horizon:
                expected[name] = expected.get(name, 0) + 1
        assert dict(win.counts) == expected
        assert list(win.counts.values()) == sorted(win.counts.values(), reverse=True)
        assert all(len(per) <= BUCKETS_PER_WINDOW + 1 + 30 for _, per in win.buckets)


# ----------------------------------------------------------------- corrupt jobs


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({}, None),
        ({"not_a_hash": True}, "job key is not a hash"),
        ({"not_a_hash": True, "in_failed_set": False}, None),
        ({"fields_present": False}, "job hash missing (its id is still in the failed set)"),
        ({"fields_present": False, "in_failed_set": False}, None),  # removeOnFail: gone with the job
        ({"name": None}, "job has no name"),
        ({"name": ""}, "job has no name"),
        ({"data_length": 0, "data": None}, "job has no data"),
        ({"data": '{"i": 1, "tenant": "acme"'}, "job data is not JSON"),
        ({"data": "\ufffd\ufffdi\ufffd"}, "job data is not JSON"),  # msgpack, as redis-py decodes it
        ({"data": '{"x": NaN}'}, "job data is not JSON"),  # JSON.parse refuses NaN
        ({"data": None, "data_length": 2_000_000}, None),  # too big to read: taken as readable
        ({"in_failed_set": False, "data": "nope"}, "job data is not JSON"),  # retried since: still corrupt
    ],
)
def test_a_failed_job_is_corrupt_exactly_as_the_selection_and_export_judge_it(
    facts: dict[str, Any], reason: str | None
) -> None:
    base: dict[str, Any] = {
        "not_a_hash": False,
        "fields_present": True,
        "name": "email.send",
        "data_length": 12,
        "data": '{"to": "a@b"}',
        "in_failed_set": True,
    }
    assert corrupt_reason(**{**base, **facts}) == reason


def test_corrupt_jobs_are_counted_in_the_window_with_the_newest_as_a_sample() -> None:
    checks = [
        CorruptCheck(str(i), (NOW_S - 100 + i) * 1000, "job data is not JSON" if i % 2 else None)
        for i in range(30)
    ]
    win = merge_corrupt((), (), checks, WINDOW, NOW_S, BUCKETS_PER_WINDOW)
    assert (win.found, win.checked) == (15, 30)
    assert [x[0] for x in win.sample] == ["29", "27", "25", "23", "21", "19", "17", "15", "13", "11"]
    later = merge_corrupt(win.buckets, win.sample, [], WINDOW, NOW_S + 400, BUCKETS_PER_WINDOW)
    assert (later.found, later.checked, later.sample) == (0, 0, ())


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(st.lists(st.tuples(st.integers(0, 600), st.booleans()), max_size=30), st.integers(1, 200)),
        min_size=1,
        max_size=8,
    )
)
def test_corrupt_counts_equal_a_brute_force_count_and_the_sample_stays_bounded(
    steps: list[tuple[list[tuple[int, bool]], int]],
) -> None:
    buckets: Any = ()
    sample: Any = ()
    now = NOW_S
    seen: list[tuple[int, bool]] = []
    n = 0
    for batch, advance in steps:
        now += advance
        checks = []
        for ago, bad in batch:
            n += 1
            checks.append(CorruptCheck(str(n), (now - ago) * 1000, "job has no name" if bad else None))
            seen.append((now - ago, bad))
        win = merge_corrupt(buckets, sample, checks, WINDOW, now, BUCKETS_PER_WINDOW)
        buckets, sample = win.buckets, win.sample
        live = [(s, bad) for s, bad in seen if s - s % WIDTH + WIDTH > now - 300]
        assert win.checked == len(live) and win.found == sum(bad for _, bad in live)
        assert len(win.sample) <= min(CORRUPT_SAMPLE, win.found)
        assert [x[2] for x in win.sample] == sorted((x[2] for x in win.sample), reverse=True)


# ----------------------------------------------------------------- the decision


def names_spec(**condition: Any) -> Any:
    return make_spec(
        queues=["orders", "emails"],
        escalation={
            "levels": [
                {"name": "L2", "holdFor": "1m", "when": {"all": [{"failedJobNames": condition}]}},
            ]
        },
    )


def test_failures_across_several_job_names_enter_the_level_across_the_policy_queues() -> None:
    sim = PolicySim(names_spec(atLeast=3, minFailures=2))
    sim.step()
    now_s = int(sim.now.timestamp())
    sim.q("orders").finished = [failed("order.charge", now_s, "o1"), failed("order.charge", now_s, "o2")]
    sim.q("emails").finished = [
        failed("email.send", now_s, "e1"),
        failed("email.send", now_s, "e2"),
        failed("sms.send", now_s, "e3"),  # one failure: below minFailures
        failed("order.charge", now_s, "e4"),  # the same name in another queue counts once
    ]
    sim.step()
    assert sim.status is not None and sim.status.escalation is not None
    assert sim.status.escalation.levels[0].holding is False  # two names with >= 2 failures
    emails = next(q for q in sim.status.queues if q.name == "emails")
    assert [(n.name, n.failed) for n in emails.failed_job_names or []] == [
        ("email.send", 2),
        ("order.charge", 1),
        ("sms.send", 1),
    ]
    sim.q("emails").finished = [failed("sms.send", int(sim.now.timestamp()), "e5")]
    sim.step()
    assert sim.status.escalation.levels[0].holding is True
    sim.step(timedelta(minutes=1))
    esc = sim.status.escalation
    assert (esc.level, esc.name) == (1, "L2")
    assert esc.reasons == ["failures across 3 job names: order.charge 3, email.send 2, sms.send 2"]
    # the window passes with no new failure: the names age out and the level clears after holdFor
    sim.step(timedelta(minutes=6))
    sim.step(timedelta(minutes=1))
    assert sim.status.escalation.level == 0
    assert all(q.failed_job_names == [] for q in sim.status.queues)


def test_corrupt_jobs_found_enter_the_level_and_are_listed_per_queue() -> None:
    spec = make_spec(
        queues=["orders", "emails"],
        escalation={
            "levels": [{"name": "L3", "holdFor": "0s", "when": {"any": [{"corruptJobs": {"above": 0}}]}}]
        },
    )
    sim = PolicySim(spec)
    for name in ("orders", "emails"):
        sim.q(name).corrupt_checks = []
    sim.step()
    assert sim.status is not None and sim.status.escalation is not None and sim.status.escalation.level == 0
    orders = next(q for q in sim.status.queues if q.name == "orders")
    assert orders.corrupt_jobs is not None and (orders.corrupt_jobs.found, orders.corrupt_jobs.checked) == (
        0,
        0,
    )
    ms = int(sim.now.timestamp()) * 1000
    sim.q("orders").corrupt_checks = [
        CorruptCheck("17", ms, "job data is not JSON"),
        CorruptCheck("18", ms, None),
    ]
    sim.step()
    sim.step()
    esc = sim.status.escalation
    assert esc is not None and (esc.level, esc.name) == (1, "L3")
    assert esc.reasons == ["corrupt jobs > 0 in 1 queue(s): orders 1"]
    orders = next(q for q in sim.status.queues if q.name == "orders")
    assert orders.corrupt_jobs is not None and orders.corrupt_jobs.found == 1
    assert [(j.id, j.reason) for j in orders.corrupt_jobs.sample] == [("17", "job data is not JSON")]


def test_policies_without_these_conditions_track_neither() -> None:
    sim = PolicySim(make_spec(queues=["orders"]))
    sim.q("orders").finished = [failed("order.charge", int(T0.timestamp()))]
    sim.step()
    assert sim.status is not None
    [orders] = sim.status.queues
    assert orders.failed_job_names is None and orders.corrupt_jobs is None
    assert sim.memory is not None and sim.memory.get("orders").failed_names == ()


@pytest.mark.parametrize("condition", [{"failedJobNames": {"atLeast": 2}}, {"corruptJobs": {"above": 0}}])
def test_conditions_that_read_job_hashes_need_lookups(condition: dict[str, Any]) -> None:
    body = {"levels": [{"name": "L1", "when": {"any": [condition]}}]}
    with pytest.raises(ValidationError, match=r"metrics\.maxJobLookups must not be 0"):
        make_spec(escalation=body, metrics={"maxJobLookups": 0})
    make_spec(escalation=body, metrics={"maxJobLookups": 1})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"atLeast": 0}, "greater than or equal to 1"),
        ({"atLeast": MAX_FAILED_NAMES + 1}, f"less than or equal to {MAX_FAILED_NAMES}"),
        ({"atLeast": 2, "minFailures": 0}, "greater than or equal to 1"),
        ({}, "atLeast"),
    ],
)
def test_failed_job_names_bounds(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_spec(escalation={"levels": [{"name": "L1", "when": {"any": [{"failedJobNames": body}]}}]})
