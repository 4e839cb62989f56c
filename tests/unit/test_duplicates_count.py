"""Counting duplicate waiting jobs from what the bounded read returned (pure:
:func:`requeue.queues.duplicates.count_duplicates`), and the status and Event built from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from requeue.api.jsonpath import parse_json_path
from requeue.api.policy import QueueDuplicates, QueuePolicySpec, QueuePolicyStatus, QueueState
from requeue.policy.decide import decide, duplicates_state
from requeue.policy.observe import Observation, QueueObservation
from requeue.queues.duplicates import MAX_KEY_CHARS, Duplicates, count_duplicates, key_text

ORDER = parse_json_path("$.orderId")


def data(**by_id: object) -> dict[str, str | None]:
    return {jid: json.dumps(value) for jid, value in by_id.items()}


def test_an_id_listed_twice_in_one_list_or_in_two_is_a_duplicate() -> None:
    found = count_duplicates({"wait": ["3", "2", "1", "3"], "prioritized": ["2", "9"]})
    assert (found.scanned, found.ids, found.extra_ids) == (6, 2, 2)
    assert found.sample_ids == ("2", "3")  # equal counts: by id
    assert found.where == {"2": (2, ("wait", "prioritized")), "3": (2, ("wait",))}
    assert found.business_keys == 0 and found.found


def test_no_duplicates_is_nothing_found() -> None:
    found = count_duplicates({"wait": ["1", "2"], "paused": ["3"]}, data(), ORDER)
    assert not found.found and found.scanned == 3 and found.sample_ids == () and found.sample_keys == ()


def test_business_keys_compare_json_values_and_skip_what_holds_no_key() -> None:
    jobs = data(
        a={"orderId": "7"},
        b={"orderId": 7},  # a number is not the string "7"
        c={"orderId": 7},
        d={"orderId": None},
        e={"orderId": None},  # null is no key
        f={"orderId": {"x": 1}},
        g={"orderId": {"x": 1}},  # objects and lists are no key
        h={"other": 1},
        i=[1, 2],
    )
    jobs["j"] = "{not json"
    jobs["k"] = "[" * 100_000  # deeper than the parser goes: no key, no crash
    jobs["l"] = None  # hash gone
    found = count_duplicates({"wait": list(jobs)}, jobs, ORDER)
    assert found.business_keys == 1 and found.sample_keys == (("7", 2, ("b", "c")),)
    assert found.extra_jobs == 1
    assert (key_text("7"), key_text(7), key_text(True), key_text(None), key_text([1])) == (
        '"7"',
        "7",
        "true",
        None,
        None,
    )


def test_an_id_listed_twice_is_one_job_for_its_business_key() -> None:
    jobs = data(a={"orderId": "A-1"}, b={"orderId": "A-2"})
    found = count_duplicates({"wait": ["a", "a", "b"]}, jobs, ORDER)
    assert found.ids == 1 and found.business_keys == 0


def test_samples_are_bounded_most_repeated_first_and_keys_cut() -> None:
    ids = [str(i) for i in range(50)]
    lists = {"wait": ids + ids + ["7"], "paused": []}
    long_key = "x" * (MAX_KEY_CHARS * 2)
    jobs = data(**{i: {"orderId": long_key if int(i) < 5 else f"k{int(i) % 20}"} for i in ids})
    found = count_duplicates(lists, jobs, ORDER, sample=3)
    assert found.ids == 50 and found.extra_ids == 51
    assert found.sample_ids[0] == "7" and len(found.sample_ids) == 3 and len(found.where) == 3
    assert len(found.sample_keys) == 3 and found.business_keys == 21  # k0..k19 each shared, and the long one
    key, jobs_holding, sample_ids = found.sample_keys[0]
    assert key == json.dumps(long_key)[:MAX_KEY_CHARS] and jobs_holding == 5 and len(sample_ids) == 3


def spec() -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "r", "key": "u"}},
            "queues": ["orders"],
            "duplicates": {"businessKey": "$.orderId"},
        }
    )


def test_the_warning_event_comes_once_when_duplicates_appear_and_again_after_they_cleared() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    dup = count_duplicates(
        {"wait": ["1", "1", "2", "3"]}, data(**{"2": {"orderId": 5}, "3": {"orderId": 5}}), ORDER
    )
    clean = count_duplicates({"wait": ["1"]}, data(), ORDER)

    def run(found: Duplicates, before: QueueState | None) -> tuple[QueueState, list[str]]:
        obs = Observation(at=now, queues={"orders": QueueObservation(name="orders", duplicates=found)})
        prev = None if before is None else QueuePolicyStatus(queues=[before])
        decision = decide(spec(), prev, obs, now=now)
        return decision.status.queues[0], [e.message for e in decision.events if e.reason == "DuplicateJobs"]

    first, events = run(dup, None)
    assert first.duplicates == duplicates_state(dup)
    assert len(events) == 1 and "1 job ids listed more than once (e.g. 1)" in events[0]
    assert "1 values of $.orderId held by several waiting jobs (e.g. 5)" in events[0]
    _, again = run(dup, first)
    assert again == []
    cleared, none = run(clean, first)
    assert none == [] and cleared.duplicates == QueueDuplicates(scanned=1, business_keys=0)
    _, back = run(dup, cleared)
    assert len(back) == 1


def test_status_samples_cut_hostile_ids_and_leave_business_keys_unset_without_a_key() -> None:
    long_id = "9" * 5000
    found = count_duplicates({"wait": [long_id, long_id]})
    state = duplicates_state(found, keyed=False)
    assert state is not None and state.business_keys is None and state.ids == 1
    assert len(state.sample_ids[0]) == 200 and state.sample_ids[0].endswith("...")
    assert duplicates_state(None) is None
