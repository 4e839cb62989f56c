"""Table tests of the pure QueuePolicy decisions (requeue.policy.decide)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from requeue.api.base import find_condition
from requeue.api.conditions import PolicyCondition
from requeue.api.policy import QueuePolicyStatus
from requeue.policy.actions import Alert, AutoReplay, BreachKind, Clean, Pause, Recover, Resume
from requeue.policy.autoreplay import child_replay_name
from requeue.policy.decide import LAST_ACTIONS_LIMIT, decide, queues_to_observe, release, settle
from requeue.policy.observe import Observation, PolicyMemory, QueueMemory
from support.policy_sim import HTTP_GATE, T0, PolicySim, gate, kinds, make_spec

SEC = timedelta(seconds=1)


def cond(sim: PolicySim, type_: str) -> tuple[str, str]:
    assert sim.status is not None
    c = find_condition(sim.status.conditions, PolicyCondition(type_))
    assert c is not None
    return c.status.value, c.reason


# ----------------------------------------------------------------- thresholds


def test_failed_breach_alerts_once_repeats_after_repeat_after_and_recovers_once() -> None:
    sim = PolicySim(make_spec(thresholds={"failed": 100}, alerts={"repeatAfter": "1h"}))
    sim.q().failed = 100
    d = sim.step()
    assert d.actions == () and cond(sim, "Healthy") == ("True", "WithinThresholds")

    sim.q().failed = 150
    d = sim.step()
    assert d.actions == (Alert("default", BreachKind.FAILED, "failed 150 > 100"),)
    assert cond(sim, "Healthy") == ("False", "FailedAboveThreshold")
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "FailedAboveThreshold")]
    assert sim.status is not None and sim.status.queues[0].reasons == ["failed 150 > 100"]
    assert not sim.status.queues[0].healthy

    for _ in range(10):  # 5 minutes of the same breach: silence
        assert sim.step().actions == ()
    assert kinds(sim.step(timedelta(hours=1))) == ["Alert"]
    repeat = sim.history[-1][1].actions[0]
    assert isinstance(repeat, Alert) and repeat.repeat
    assert sim.step().actions == ()

    sim.q().failed = 3
    d = sim.step()
    assert kinds(d) == ["Recover"] and isinstance(d.actions[0], Recover)
    assert cond(sim, "Healthy") == ("True", "WithinThresholds")
    assert sim.step().actions == ()


def test_breach_since_is_kept_and_transition_time_moves_only_on_flip() -> None:
    sim = PolicySim(make_spec(thresholds={"failed": 1}))
    sim.q().failed = 5
    sim.step()
    assert sim.status is not None
    since = sim.status.queues[0].breaches[0].since
    flipped = find_condition(sim.status.conditions, PolicyCondition.HEALTHY)
    sim.q().failed = 9
    sim.step()
    assert sim.status.queues[0].breaches[0].since == since
    assert sim.status.queues[0].reasons == ["failed 9 > 1"]
    again = find_condition(sim.status.conditions, PolicyCondition.HEALTHY)
    assert flipped is not None and again is not None
    assert again.last_transition_time == flipped.last_transition_time


def test_waiting_counts_the_prioritized_backlog_and_mixed_kinds_say_thresholds_breached() -> None:
    sim = PolicySim(make_spec(queues=["a", "b"], thresholds={"waiting": 1000, "failed": 10}))
    sim.q("a").waiting, sim.q("a").prioritized = 600, 500
    d = sim.step()
    assert d.actions == (Alert("a", BreachKind.WAITING, "waiting 1100 > 1000"),)
    assert cond(sim, "Healthy") == ("False", "WaitingAboveThreshold")
    sim.q("b").failed = 11
    d = sim.step()
    assert d.actions == (Alert("b", BreachKind.FAILED, "failed 11 > 10"),)
    assert cond(sim, "Healthy") == ("False", "ThresholdsBreached")
    assert sim.status is not None
    healthy = find_condition(sim.status.conditions, PolicyCondition.HEALTHY)
    assert healthy is not None and "a: waiting 1100 > 1000" in healthy.message
    assert "b: failed 11 > 10" in healthy.message


def test_alert_events_can_be_switched_off_but_alerts_still_go_out() -> None:
    sim = PolicySim(make_spec(thresholds={"failed": 0}, alerts={"events": False}))
    sim.q().failed = 1
    d = sim.step()
    assert kinds(d) == ["Alert"] and d.events == ()


def test_unset_thresholds_are_not_checked() -> None:
    sim = PolicySim(make_spec())
    sim.q().failed, sim.q().waiting = 10**6, 10**6
    assert sim.step().actions == ()
    assert cond(sim, "Healthy") == ("True", "WithinThresholds")


# ----------------------------------------------------------------- failure rate


def _sec(t: datetime) -> int:
    return int(t.timestamp())


def test_failure_rate_is_computed_over_the_window_across_polls() -> None:
    sim = PolicySim(make_spec(thresholds={"failureRatePercent": 5, "window": "5m", "failureRateMinJobs": 10}))
    # poll 1: 95 completed, 2 failed
    sim.q().events = {_sec(T0) + 10: (95, 2)}
    d = sim.step()
    assert d.actions == ()
    assert sim.status is not None and sim.status.queues[0].failure_rate_percent == pytest.approx(2.06, 0.01)
    # poll 2: 5 more failures -> 7 / 102 > 5 %
    sim.q().events = {_sec(T0) + 40: (0, 5)}
    d = sim.step()
    assert [type(a) for a in d.actions] == [Alert]
    assert cond(sim, "Healthy") == ("False", "FailureRateAboveThreshold")
    assert sim.status.queues[0].failure_rate_percent == pytest.approx(6.86, 0.01)
    # six minutes later the first two polls left the window; only healthy traffic remains
    sim.q().events = {_sec(T0) + 400: (50, 0)}
    d = sim.step(timedelta(minutes=6))
    assert [type(a) for a in d.actions] == [Recover]
    assert sim.status.queues[0].failure_rate_percent == 0.0


def test_failure_rate_needs_enough_jobs_and_is_none_without_any() -> None:
    sim = PolicySim(make_spec(thresholds={"failureRatePercent": 5, "failureRateMinJobs": 10}))
    d = sim.step()
    assert sim.status is not None and sim.status.queues[0].failure_rate_percent is None
    sim.q().events = {_sec(sim.now): (0, 3)}  # 100 % but only 3 jobs
    d = sim.step()
    assert d.actions == () and sim.status.queues[0].failure_rate_percent == 100.0


def test_failure_rate_uses_the_event_timestamp_not_the_poll_time() -> None:
    sim = PolicySim(make_spec(thresholds={"failureRatePercent": 50, "window": "1m", "failureRateMinJobs": 1}))
    # entries read late, stamped 10 minutes before the poll: outside the window
    sim.q().events = {_sec(T0) - 600: (0, 100)}
    d = sim.step()
    assert d.actions == ()
    assert sim.status is not None and sim.status.queues[0].failure_rate_percent is None
    assert sim.memory is not None and sim.memory.get("default").buckets == ()


def test_window_keeps_at_most_buckets_per_window_plus_one() -> None:
    sim = PolicySim(make_spec(thresholds={"window": "100s"}))
    for _ in range(50):
        sim.q().events = {_sec(sim.now) + 5: (1, 0)}
        sim.step(timedelta(seconds=7))
        assert sim.memory is not None and len(sim.memory.get("default").buckets) <= 11
    assert sim.status is not None and sim.status.queues[0].failure_rate_percent == 0.0


def test_memory_cursor_advances_and_survives_json() -> None:
    sim = PolicySim(make_spec())
    sim.q().lockless = frozenset({"7"})
    sim.q().events = {_sec(T0): (3, 1)}
    sim.step()
    assert sim.memory is not None
    mem = sim.memory.get("default")
    assert mem.cursor == "1-0"
    assert QueueMemory.from_json(mem.to_json()) == mem
    assert QueueMemory.from_json({"b": [["x"]], "c": 1}) == QueueMemory()


# ----------------------------------------------------------------- stalled


def test_stalled_counts_jobs_without_a_lock_for_the_threshold() -> None:
    sim = PolicySim(make_spec(thresholds={"stalledActiveSeconds": 300}))
    sim.q().lockless = frozenset({"1", "2"})
    d = sim.step()
    assert d.actions == () and sim.status is not None and sim.status.queues[0].stalled == 0
    sim.step(timedelta(seconds=200))
    sim.q().lockless = frozenset({"1"})  # job 2 got picked up again
    d = sim.step(timedelta(seconds=100))
    assert sim.status.queues[0].stalled == 1
    assert d.actions == (Alert("default", BreachKind.STALLED, "1 active job(s) without a lock for >= 300s"),)
    assert cond(sim, "Healthy") == ("False", "StalledJobs")
    sim.q().lockless = frozenset()
    assert kinds(sim.step()) == ["Recover"]


# ----------------------------------------------------------------- gates, pause, resume


def pause_spec(queues: list[str] | None = None, **extra: object) -> PolicySim:
    body: dict[str, object] = {
        "queues": queues or ["critical", "default", "bulk"],
        "gates": [HTTP_GATE],
        "actions": {"pauseWhileGatesFail": True},
    }
    body.update(extra)
    return PolicySim(make_spec(**body))


def test_red_gate_pauses_unpaused_queues_and_green_resumes_only_ours() -> None:
    sim = pause_spec()
    sim.gates = (gate("db", True),)
    sim.step()
    sim.external_pause("bulk")  # an engineer paused bulk for their own reasons
    sim.gates = (gate("db", False, "connection refused"),)
    d = sim.step()
    assert [a for a in d.actions if isinstance(a, Pause)] == [
        Pause("critical", "gate red: db: connection refused"),
        Pause("default", "gate red: db: connection refused"),
    ]
    assert cond(sim, "GatesPassed") == ("False", "GateFailed")
    assert sim.status is not None
    assert {q.name: q.paused_by_policy for q in sim.status.queues} == {
        "critical": True,
        "default": True,
        "bulk": False,
    }
    assert ("Warning", "GatesFailed") in [(e.type, e.reason) for e in d.events]
    assert sim.step().actions == ()  # still red: nothing more to do
    sim.gates = (gate("db", True),)
    d = sim.step()
    assert [a for a in d.actions if isinstance(a, Resume)] == [
        Resume("critical", "all gates green"),
        Resume("default", "all gates green"),
    ]
    assert sim.q("bulk").paused and sim.q("bulk").paused_by == "other"
    assert cond(sim, "GatesPassed") == ("True", "AllGatesPassed")
    assert not any(q.paused_by_policy for q in sim.status.queues)


def test_queue_resumed_by_hand_loses_the_mark_and_is_paused_again_while_red() -> None:
    sim = pause_spec(["default"])
    sim.gates = (gate("db", False),)
    sim.step()
    sim.external_resume("default")
    d = sim.step()
    assert kinds(d) == ["Pause"]  # level-triggered: still red, so paused again


def test_queue_resumed_by_hand_then_paused_by_someone_else_is_not_ours() -> None:
    sim = pause_spec(["default"])
    sim.gates = (gate("db", False),)
    sim.step()
    sim.external_resume("default")
    sim.gates = (gate("db", True),)
    sim.step()  # observed unpaused: the mark is dropped
    sim.external_pause("default")
    sim.gates = (gate("db", False),)
    sim.step()
    sim.gates = (gate("db", True),)
    assert sim.step().actions == ()
    assert sim.q("default").paused_by == "other"


def test_gates_not_checked_change_nothing() -> None:
    sim = pause_spec(["default"])
    d = sim.step()
    assert d.actions == () and cond(sim, "GatesPassed") == ("Unknown", "GatesNotChecked")
    sim.gates = (gate("db", False),)
    sim.step()
    sim.gates = None
    assert sim.step().actions == ()
    assert sim.q().paused


def test_no_gates_means_gates_passed_and_no_pausing() -> None:
    sim = PolicySim(make_spec(actions={"pauseWhileGatesFail": True}))
    assert sim.step().actions == ()
    assert cond(sim, "GatesPassed") == ("True", "NoGates")


def test_gate_results_for_unknown_names_are_ignored_and_missing_ones_are_unknown() -> None:
    sim = pause_spec(["default"], gates=[HTTP_GATE, {"name": "cgb", "http": {"url": "http://x/"}}])
    sim.gates = (gate("db", True), gate("other", False))
    assert sim.step().actions == ()
    assert cond(sim, "GatesPassed") == ("Unknown", "GatesNotChecked")


def test_switching_pause_off_resumes_what_we_paused() -> None:
    sim = pause_spec(["default"])
    sim.gates = (gate("db", False),)
    sim.step()
    sim.spec = sim.spec.model_copy(
        update={"actions": sim.spec.actions.model_copy(update={"pause_while_gates_fail": False})}
    )
    d = sim.step()
    assert d.actions == (Resume("default", "pauseWhileGatesFail is off"),)


def test_queue_removed_from_the_policy_is_resumed_then_forgotten() -> None:
    sim = pause_spec(["default", "bulk"])
    sim.gates = (gate("db", False),)
    sim.step()
    sim.spec = sim.spec.model_copy(update={"queues": ["default"]})
    assert sim.status is not None
    assert queues_to_observe(sim.spec, sim.status) == ["default", "bulk"]
    d = sim.step()
    assert d.actions == (Resume("bulk", "queue no longer in the policy"),)
    assert [q.name for q in sim.status.queues] == ["default"]
    assert queues_to_observe(sim.spec, sim.status) == ["default"]


def test_failed_pause_is_not_remembered_as_ours() -> None:
    sim = pause_spec(["default"])
    sim.gates = (gate("db", False),)
    sim.step(execute=False)  # the Pause failed; settle() un-marks it
    assert sim.status is not None and not sim.status.queues[0].paused_by_policy
    assert sim.status.last_actions[0].result == "failed: connection reset"
    sim.external_pause("default")  # someone else pauses it before the next evaluation
    assert sim.step().actions == ()
    sim.gates = (gate("db", True),)
    assert sim.step().actions == ()  # not ours: never resumed


# ----------------------------------------------------------------- dry run


def test_dry_run_records_pause_and_resume_once_and_executes_neither() -> None:
    sim = pause_spec(["default"], dryRun=True, thresholds={"failed": 0})
    sim.q().failed = 1
    sim.gates = (gate("db", False),)
    d = sim.step()
    assert kinds(d) == ["Alert", "Pause"]
    assert [type(a) for a in d.to_execute] == [Alert]  # reporting still happens
    assert not sim.q().paused
    assert sim.status is not None
    assert [(a.action, a.dry_run) for a in sim.status.last_actions] == [("Pause", True), ("Alert", False)]
    assert sim.status.queues[0].dry_run_paused and not sim.status.queues[0].paused_by_policy
    assert sim.step().actions == ()  # recorded once per would-be transition
    sim.gates = (gate("db", True),)
    d = sim.step()
    assert kinds(d) == ["Resume"] and d.to_execute == ()
    assert sim.status.last_actions[0].dry_run
    assert sim.step().actions == ()


def test_dry_run_keeps_a_real_pause_of_an_earlier_run() -> None:
    sim = pause_spec(["default"])
    sim.gates = (gate("db", False),)
    sim.step()
    sim.spec = sim.spec.model_copy(update={"dry_run": True})
    sim.gates = (gate("db", True),)
    d = sim.step()
    assert d.to_execute == () and sim.q().paused
    assert sim.status is not None and sim.status.queues[0].paused_by_policy
    rel = release(sim.status, now=sim.now)
    assert rel.to_execute == (Resume("default", "policy deleted"),)


# ----------------------------------------------------------------- auto replay


def replay_sim(**auto: object) -> PolicySim:
    settings: dict[str, object] = {
        "stableFor": "2m",
        "cooldown": "10m",
        "selector": {"jobNames": ["whatsapp.send"]},
    }
    settings.update(auto)
    sim = PolicySim(
        make_spec(
            queues=["default", "bulk"],
            gates=[HTTP_GATE],
            actions={"pauseWhileGatesFail": True, "autoReplay": settings},
        )
    )
    sim.gates = (gate("db", True),)
    sim.step()
    return sim


def test_auto_replay_after_stable_for_once_per_outage_with_the_outage_window() -> None:
    sim = replay_sim(maxReplaysPerJob=3, rate={"jobsPerSecond": 50})
    sim.gates = (gate("db", False),)
    sim.step()
    started = sim.now
    sim.q("default").failed = 40  # bulk has no failures: no child for it
    sim.step(timedelta(minutes=10))
    sim.gates = (gate("db", True),)
    sim.step()
    recovered = sim.now
    assert sim.status is not None and sim.status.gates_green_since == recovered
    assert not [a for a in sim.step(timedelta(seconds=60)).actions if isinstance(a, AutoReplay)]
    d = sim.step(timedelta(seconds=60))  # 2 minutes green
    replays = [a for a in d.actions if isinstance(a, AutoReplay)]
    assert len(replays) == 1
    r = replays[0]
    assert r.queue == "default" and r.name == child_replay_name("visapi", "default", started)
    assert r.selector.failed_after == started and r.selector.failed_before == recovered
    assert r.selector.job_names == ["whatsapp.send"]
    assert r.max_replays_per_job == 3 and r.rate.jobs_per_second == 50
    assert sim.status.last_auto_replay_at == sim.now and sim.status.last_replayed_outage == started
    assert sim.status.last_actions[0].action == "AutoReplay"
    for _ in range(20):
        assert not [a for a in sim.step(timedelta(minutes=5)).actions if isinstance(a, AutoReplay)]


def test_auto_replay_waits_for_the_cooldown_and_flapping_gates_extend_the_outage() -> None:
    sim = replay_sim(stableFor="1m", cooldown="1h")
    sim.q("default").failed = 5
    sim.gates = (gate("db", False),)
    sim.step()
    first_start = sim.now
    sim.gates = (gate("db", True),)
    sim.step()
    d = sim.step(timedelta(minutes=1))
    assert len([a for a in d.actions if isinstance(a, AutoReplay)]) == 1
    first_replay = sim.now
    # a second outage 5 minutes later, then stable again: cooldown holds the replay back
    sim.gates = (gate("db", False),)
    sim.step(timedelta(minutes=5))
    second_start = sim.now
    sim.gates = (gate("db", True),)
    sim.step()
    for _ in range(10):
        assert not [a for a in sim.step(timedelta(minutes=5)).actions if isinstance(a, AutoReplay)]
    # before the held-back replay ran, a third outage: it extends the second one
    sim.gates = (gate("db", False),)
    sim.step()
    assert sim.status is not None and sim.status.outage_started_at == second_start
    sim.gates = (gate("db", True),)
    sim.step()
    recovered = sim.now
    d = sim.step(timedelta(minutes=5))
    replays = [a for a in d.actions if isinstance(a, AutoReplay)]
    assert len(replays) == 1 and sim.now - first_replay >= timedelta(hours=1)
    assert replays[0].selector.failed_after == second_start
    assert replays[0].selector.failed_before == recovered
    assert first_start < second_start


def test_auto_replay_intersects_the_users_window_and_skips_empty_intersections() -> None:
    sim = replay_sim(stableFor="1m", selector={"failedAfter": "2030-01-01T00:00:00Z"})
    sim.q("default").failed = 5
    sim.gates = (gate("db", False),)
    sim.step()
    sim.gates = (gate("db", True),)
    sim.step()
    d = sim.step(timedelta(minutes=5))
    assert not [a for a in d.actions if isinstance(a, AutoReplay)]
    assert sim.status is not None and sim.status.last_replayed_outage is not None  # handled, nothing to do
    assert sim.status.last_auto_replay_at is None


def test_auto_replay_in_dry_run_is_recorded_not_executed() -> None:
    sim = replay_sim(stableFor="1m")
    sim.spec = sim.spec.model_copy(update={"dry_run": True})
    sim.q("default").failed = 5
    sim.gates = (gate("db", False),)
    sim.step()
    sim.gates = (gate("db", True),)
    sim.step()
    d = sim.step(timedelta(minutes=1))
    assert kinds(d) == ["AutoReplay"] and d.to_execute == ()
    assert sim.status is not None and sim.status.last_actions[0].dry_run


def test_child_replay_names_are_valid_deterministic_and_distinct() -> None:
    a = child_replay_name("visapi-queues", "whatsapp.Send_v2", T0)
    assert a == child_replay_name("visapi-queues", "whatsapp.Send_v2", T0)
    assert a != child_replay_name("visapi-queues", "whatsapp.Send_v2", T0 + SEC)
    assert a != child_replay_name("visapi-queues", "whatsapp-send-v2", T0)
    long = child_replay_name("p" * 200, "q" * 200, T0)
    for name in (a, long, child_replay_name("x", "__", T0)):
        assert len(name) <= 63
        assert name[0].isalnum() and name[-1].isalnum()
        assert all((c.isalnum() and c == c.lower()) or c == "-" for c in name)


# ----------------------------------------------------------------- clean, lastActions, errors


def test_clean_every_interval_for_states_with_jobs() -> None:
    sim = PolicySim(
        make_spec(
            queues=["a", "b"],
            actions={"clean": {"completed": {"grace": "1h", "limit": 500}, "failed": {"grace": "7d"}}},
        )
    )
    sim.q("a").completed, sim.q("a").failed, sim.q("b").failed = 10, 3, 0
    for _ in range(2):
        d = sim.step()
        assert d.actions == (
            Clean("a", "completed", timedelta(hours=1), 500),
            Clean("a", "failed", timedelta(days=7), 1000),
        )
    assert sim.status is not None and sim.status.last_actions == []  # routine: not recorded


def test_last_actions_are_bounded_and_newest_first() -> None:
    names = [f"q{i}" for i in range(30)]
    sim = PolicySim(make_spec(queues=names, thresholds={"failed": 0}))
    for name in names:
        sim.q(name).failed = 1
    sim.step()
    sim.q("q29").failed = 0
    sim.step()
    assert sim.status is not None
    assert len(sim.status.last_actions) == LAST_ACTIONS_LIMIT
    assert sim.status.last_actions[0].action == "Recover"
    assert sim.status.last_actions[1].queue == "q29" and sim.status.last_actions[1].action == "Alert"


def test_redis_unreachable_keeps_the_last_status_and_acts_on_nothing() -> None:
    sim = pause_spec(["default"], thresholds={"failed": 0})
    sim.q().failed = 1
    sim.gates = (gate("db", False),)
    sim.step()
    before = sim.status
    assert before is not None
    err = Observation(at=sim.now, gates=sim.gates, error="cannot reach redis://default:***@h:6379")
    d = sim.step(observation=err)
    assert d.actions == ()
    assert cond(sim, "Ready") == ("False", "RedisUnreachable")
    assert cond(sim, "Healthy") == ("Unknown", "RedisUnreachable")
    assert sim.status is not None and sim.status.queues == before.queues
    assert [e.reason for e in d.events] == ["RedisUnreachable"]
    assert sim.step(observation=err).events == ()  # announced once
    d = sim.step()
    assert cond(sim, "Ready") == ("True", "Evaluated") and d.actions == ()


def test_release_resumes_only_queues_the_policy_paused() -> None:
    sim = pause_spec(["critical", "default"])
    sim.external_pause("critical")
    sim.gates = (gate("db", False),)
    sim.step()
    d = release(sim.status, now=sim.now)
    assert d.to_execute == (Resume("default", "policy deleted"),)
    assert d.status.last_actions[0].action == "Resume"
    assert release(None, now=sim.now).actions == ()


def test_decide_is_pure_same_inputs_same_decision() -> None:
    spec = make_spec(thresholds={"failed": 0})
    sim = PolicySim(spec)
    sim.q().failed = 2
    obs = sim.observe()
    args = (spec, QueuePolicyStatus(), obs, PolicyMemory())
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert decide(*args, now=now) == decide(*args, now=now)


def test_settle_records_results_keeps_failed_resumes_and_retries_failed_replays() -> None:
    sim = replay_sim(stableFor="1m")
    sim.q("default").failed = 5
    sim.gates = (gate("db", False),)
    sim.step()
    sim.gates = (gate("db", True),)
    d = sim.step(execute=False)  # the Resume fails: still ours, retried next time
    assert sim.status is not None and sim.status.queues[0].paused_by_policy
    assert kinds(sim.step()) == ["Resume", "Resume"]
    d = sim.step(timedelta(minutes=1))
    index = next(i for i, a in enumerate(d.actions) if isinstance(a, AutoReplay))
    status = settle(d, now=sim.now, failures={index: "forbidden"})
    assert status.last_replayed_outage is None and status.last_auto_replay_at is None
    assert status.last_actions[0].result == "failed: forbidden"
    ok = settle(d, now=sim.now, results={index: d.actions[index].name})  # type: ignore[union-attr]
    assert ok.last_replayed_outage is not None and ok.last_actions[0].result.startswith("visapi-default-")


def test_settle_records_a_clean_that_removed_jobs() -> None:
    sim = PolicySim(make_spec(actions={"clean": {"failed": {"grace": "1d", "limit": 10}}}))
    sim.q().failed = 3
    d = sim.step()
    status = settle(d, now=sim.now, results={0: "removed 3"})
    entry = status.last_actions[0]
    assert (entry.action, entry.queue, entry.result) == ("Clean", "default", "removed 3")
    assert entry.reason == "failed jobs older than 1d, at most 10"
