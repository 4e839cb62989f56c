"""Escalation levels (spec.escalation) as table tests over the pure decision: the runbook's
L1 -> L2 -> healthy walk, hold times, pause ownership, dry run, auto replay, snapshots, the spec."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from requeue.api.base import find_condition
from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.escalation import EscalationSpec
from requeue.policy.actions import AutoReplay, Pause, Resume
from requeue.policy.decide import Decision, release, settle
from support.policy_sim import PolicySim, gate, make_spec

DB = {"name": "db", "http": {"url": "http://127.0.0.1:1/health"}}
PROVIDER = {"name": "provider", "http": {"url": "http://127.0.0.1:2/health"}}
ONCALL = {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}, "mention": "<!here>"}
INCIDENT = {"name": "incident", "webhookSecretRef": {"name": "hooks", "key": "incident"}}


def levels(**l2: Any) -> dict[str, Any]:
    return {
        "levels": [
            {
                "name": "L1",
                "holdFor": "2m",
                "when": {
                    "any": [
                        {"failed": {"above": 50, "growing": True}},
                        {"processingStopped": {}},
                        {"gates": {"names": ["db"]}},
                    ]
                },
                "actions": {"notify": [ONCALL]},
            },
            {
                "name": "L2",
                "holdFor": "2m",
                "when": {
                    "all": [{"gates": {"names": ["db", "provider"], "red": "any"}}],
                    "any": [{"failed": {"above": 50, "minQueues": 2}}],
                },
                "actions": {
                    "notify": [ONCALL, INCIDENT],
                    "pauseQueues": True,
                    "stopAutoReplay": True,
                    "snapshot": True,
                    "sampleSize": 3,
                },
                **l2,
            },
        ]
    }


def sim(dry: bool = False, **actions: Any) -> PolicySim:
    spec = make_spec(
        queues=["orders", "emails"],
        gates=[DB, PROVIDER],
        dryRun=dry,
        thresholds={"failedGrowing": {"above": 50}, "window": "5m", "stalledFor": "15m"},
        actions=actions,
        escalation=levels(),
    )
    s = PolicySim(spec)
    s.gates = (gate("db", True), gate("provider", True))
    return s


def gates(s: PolicySim, db: bool, provider: bool = True) -> None:
    s.gates = (gate("db", db), gate("provider", provider))


def escalation_events(d: Decision) -> list[tuple[str, str]]:
    kinds = {Reason.ESCALATION_RAISED, Reason.ESCALATION_LOWERED, Reason.ESCALATION_CLEARED}
    return [(e.type, e.reason.value) for e in d.events if e.reason in kinds]


def notices(d: Decision) -> list[str]:
    return [n.channel.name for n in (d.escalation.notices if d.escalation else [])]


def test_runbook_walk_l1_l2_healthy_one_event_and_one_message_per_channel_and_transition() -> None:
    s = sim()
    s.step()  # healthy
    assert s.status is not None and s.status.escalation is not None and s.status.escalation.level == 0
    # a database gate turns red: L1 holds, but is entered only after holdFor (2m)
    gates(s, db=False)
    d = s.step(timedelta(seconds=30))
    assert escalation_events(d) == [] and notices(d) == []
    d = s.step(timedelta(minutes=1))
    assert escalation_events(d) == []
    d = s.step(timedelta(minutes=1, seconds=30))
    assert escalation_events(d) == [("Warning", "EscalationRaised")]
    assert notices(d) == ["oncall"]
    assert d.escalation is not None and d.escalation.notices[0].text.startswith("<!here> :rotating_light:")
    esc = s.status.escalation
    assert esc is not None and (esc.level, esc.name) == (1, "L1")
    assert esc.reasons == ["gate(s) red: db"]
    cond = find_condition(s.status.conditions, PolicyCondition.ESCALATED)
    assert cond is not None and cond.status == "True" and cond.reason == Reason.ESCALATION_RAISED
    # failures pile up in both queues: L2 after its own holdFor
    s.q("orders").failed = 80
    s.q("emails").failed = 60
    d = s.step(timedelta(minutes=1))  # first seen: holdFor counts from here
    assert escalation_events(d) == []
    d = s.step(timedelta(minutes=1, seconds=59))
    assert escalation_events(d) == []
    d = s.step(timedelta(seconds=1))
    assert escalation_events(d) == [("Warning", "EscalationRaised")]
    assert sorted(notices(d)) == ["incident", "oncall"]  # L1's channel and L2's, one message each
    assert [a.queue for a in d.actions if isinstance(a, Pause)] == ["orders", "emails"]
    assert d.escalation is not None and d.escalation.snapshot is not None
    assert d.escalation.snapshot.sample_size == 3
    esc = s.status.escalation
    assert esc is not None and esc.level == 2 and esc.paused_queues == ["orders", "emails"]
    assert esc.snapshot is not None and [q.failed for q in esc.snapshot.queues] == [80, 60]
    # steady: nothing more is said
    for _ in range(5):
        d = s.step(timedelta(minutes=1))
        assert escalation_events(d) == [] and notices(d) == []
        assert not [a for a in d.actions if isinstance(a, Pause | Resume)]
    # recovery: gate green, failures cleaned up; both levels clear, after holdFor
    gates(s, db=True)
    s.q("orders").failed = s.q("emails").failed = 0
    d = s.step(timedelta(seconds=30))
    assert escalation_events(d) == []
    d = s.step(timedelta(minutes=2))
    assert escalation_events(d) == [("Normal", "EscalationCleared")]
    assert sorted(notices(d)) == ["incident", "oncall"]
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]
    assert s.status.escalation is not None and s.status.escalation.level == 0
    assert s.status.escalation.paused_queues == []
    assert not s.q("orders").paused and not s.q("emails").paused
    cond = find_condition(s.status.conditions, PolicyCondition.ESCALATED)
    assert cond is not None and cond.status == "False" and cond.reason == Reason.NOT_ESCALATED


def test_lowered_from_l2_to_l1_when_only_l2_clears() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    d = s.step(timedelta(minutes=3))
    assert s.status is not None and s.status.escalation is not None and s.status.escalation.level == 2
    assert escalation_events(d) == [("Warning", "EscalationRaised")]  # straight to L2: one transition
    s.q("emails").failed = 0  # one queue left: L2 clear, L1 (db red) still holds
    s.step()
    d = s.step(timedelta(minutes=3))
    assert escalation_events(d) == [("Normal", "EscalationLowered")]
    assert sorted(notices(d)) == ["incident", "oncall"]
    assert s.status.escalation.level == 1
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]


def test_a_condition_toggling_faster_than_hold_for_never_escalates() -> None:
    s = sim()
    for i in range(40):
        gates(s, db=i % 2 == 0)
        d = s.step(timedelta(seconds=50))
        assert escalation_events(d) == [] and notices(d) == []
    assert s.status is not None and s.status.escalation is not None and s.status.escalation.level == 0


def test_never_resumes_a_queue_someone_else_paused() -> None:
    s = sim()
    s.external_pause("emails")
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    d = s.step(timedelta(minutes=3))
    assert [a.queue for a in d.actions if isinstance(a, Pause)] == ["orders"]
    assert s.status is not None and s.status.escalation is not None
    assert s.status.escalation.paused_queues == ["orders"]
    gates(s, db=True)
    s.q("orders").failed = s.q("emails").failed = 0
    s.step()
    d = s.step(timedelta(minutes=3))
    assert [a.queue for a in d.actions if isinstance(a, Resume)] == ["orders"]
    assert s.q("emails").paused and s.q("emails").paused_by == "other"


def test_a_queue_resumed_by_hand_is_no_longer_escalations() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    s.external_resume("emails")
    s.step()  # escalation pauses it again while L2 holds (as pauseWhileGatesFail does)
    assert s.status is not None and s.status.escalation is not None
    assert sorted(s.status.escalation.paused_queues) == ["emails", "orders"]


def test_takes_over_queues_the_gate_rule_paused_and_hands_them_back() -> None:
    s = sim(pauseWhileGatesFail=True)
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    d = s.step()
    assert [a.queue for a in d.actions if isinstance(a, Pause)] == ["orders", "emails"]  # the gate rule
    d = s.step(timedelta(minutes=3))
    assert s.status is not None and s.status.escalation is not None
    assert sorted(s.status.escalation.paused_queues) == ["emails", "orders"]
    assert not any(q.paused_by_policy for q in s.status.queues)
    # gates green but failures still high in both queues... L2 needs a red gate: it clears after holdFor;
    # meanwhile green gates must not resume what escalation holds
    gates(s, db=True)
    d = s.step()
    assert not [a for a in d.actions if isinstance(a, Resume)]
    assert s.q("orders").paused and s.q("emails").paused
    d = s.step(timedelta(minutes=3))  # L2 cleared, L1 (failed growing? no: not growing) cleared too
    assert escalation_events(d) == [("Normal", "EscalationCleared")]
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]


def test_hands_back_to_the_gate_rule_when_a_gate_is_still_red() -> None:
    s = sim(pauseWhileGatesFail=True)
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    assert s.status is not None and s.status.escalation is not None and s.status.escalation.level == 2
    s.q("orders").failed = s.q("emails").failed = 0  # failures gone, the db gate still red: L1 only
    s.step()
    d = s.step(timedelta(minutes=3))
    assert s.status.escalation.level == 1
    assert not [a for a in d.actions if isinstance(a, Resume | Pause)]  # handed back, not resumed
    assert all(q.paused_by_policy for q in s.status.queues)
    gates(s, db=True)
    d = s.step()
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]


def test_dry_run_records_what_it_would_do_and_sends_nothing() -> None:
    s = sim(dry=True)
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    d = s.step(timedelta(minutes=3))
    assert notices(d) == []
    assert [e.message.startswith("[dry run]") for e in d.events if e.reason == Reason.ESCALATION_RAISED] == [
        True
    ]
    assert d.to_execute == ()
    pauses = [r for r in d.status.last_actions if r.action == "Pause"]
    assert len(pauses) == 2 and all(r.dry_run for r in pauses)
    esc = d.status.escalation
    assert esc is not None and esc.level == 2 and esc.dry_run and esc.paused_queues == []
    assert sorted(esc.dry_run_paused_queues) == ["emails", "orders"]
    assert {n.channel: n.result for n in esc.notifications} == {
        "oncall": "[dry run] not sent",
        "incident": "[dry run] not sent",
    }
    d = s.step()  # no second would-be pause
    assert not d.status.last_actions or d.status.last_actions[0].at != s.now
    assert not s.q("orders").paused


def test_turning_dry_run_on_keeps_real_pauses_until_it_is_off_again() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    assert s.q("orders").paused and s.q("emails").paused
    s.spec = s.spec.model_copy(update={"dry_run": True})
    gates(s, db=True)
    s.q("orders").failed = s.q("emails").failed = 0
    s.step()
    d = s.step(timedelta(minutes=3))
    assert d.status.escalation is not None and d.status.escalation.level == 0
    assert d.to_execute == () and s.q("orders").paused  # a dry run undoes nothing
    assert sorted(d.status.escalation.paused_queues) == ["emails", "orders"]
    s.spec = s.spec.model_copy(update={"dry_run": False})
    d = s.step()
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]
    assert not s.q("orders").paused and d.status.escalation is not None
    assert d.status.escalation.paused_queues == []


def test_stop_auto_replay_holds_the_outage_until_escalation_ends() -> None:
    s = sim(autoReplay={"stableFor": "0s", "cooldown": "1m"})
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    assert s.status is not None and s.status.escalation is not None and s.status.escalation.level == 2
    gates(s, db=True)  # the outage is over, but L2 (stopAutoReplay) is in force until its holdFor passes
    d = s.step()
    assert not [a for a in d.actions if isinstance(a, AutoReplay)]
    d = s.step(timedelta(minutes=3))
    assert s.status.escalation.level == 0
    assert sorted(a.queue for a in d.actions if isinstance(a, AutoReplay)) == ["emails", "orders"]


def test_failed_pause_is_not_escalations_and_failed_resume_stays_escalations() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    d = s.step(timedelta(minutes=3), execute=False)
    assert s.status is not None and s.status.escalation is not None
    assert s.status.escalation.paused_queues == []
    d = s.step()  # tried again
    assert [a.queue for a in d.actions if isinstance(a, Pause)] == ["orders", "emails"]
    gates(s, db=True)
    s.q("orders").failed = s.q("emails").failed = 0
    s.step()
    d = s.step(timedelta(minutes=3), execute=False)
    assert sorted(s.status.escalation.paused_queues) == ["emails", "orders"]
    d = s.step()
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]


def test_deleting_the_policy_resumes_what_escalation_paused() -> None:
    s = sim()
    s.external_pause("emails")
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    d = release(s.status, now=s.now)
    assert [(a.queue, a.escalation) for a in d.actions if isinstance(a, Resume)] == [("orders", True)]


def test_removing_spec_escalation_ends_it_and_resumes() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.step(timedelta(minutes=3))
    s.spec = s.spec.model_copy(update={"escalation": None})
    d = s.step()
    assert escalation_events(d) == [("Normal", "EscalationCleared")]
    assert sorted(a.queue for a in d.actions if isinstance(a, Resume)) == ["emails", "orders"]
    assert s.status is not None and s.status.escalation is None


def test_processing_stopped_reasons_and_stuck_active_and_breaching_conditions() -> None:
    from requeue.api.escalation import EscalationCondition
    from requeue.api.policy import ProcessingStopped, QueueBreach, QueueState
    from requeue.policy.escalation import Signals, judge

    stopped = QueueState(
        name="a",
        waiting=5,
        processing_stopped=ProcessingStopped(reason="WorkersDown", since="2025-01-01T00:00:00Z"),
        stalled=3,
        breaches=[QueueBreach(kind="failed", since="2025-01-01T00:00:00Z")],
    )
    other = QueueState(name="b", breaches=[QueueBreach(kind="waiting", since="2025-01-01T00:00:00Z")])
    sig = Signals(queues=[stopped, other], gates=[], results=None)

    def cond(**kw: Any) -> EscalationCondition:
        return EscalationCondition.model_validate(kw)

    assert judge(cond(processingStopped={"reasons": ["WorkersDown"]}), sig) == (
        "processing stopped in 1 queue(s): a (WorkersDown)"
    )
    assert judge(cond(processingStopped={"reasons": ["WorkersStuck"]}), sig) is None
    assert judge(cond(stuckActive={"above": 2}), sig) == "stuck active jobs > 2 in 1 queue(s): a 3"
    assert judge(cond(breaching={"minQueues": 2}), sig) == "breaching in 2 queue(s): a (failed), b (waiting)"
    assert judge(cond(breaching={"kinds": ["failed"], "minQueues": 2}), sig) is None
    assert judge(cond(waiting={"above": 4}), sig) == "waiting > 4 in 1 queue(s): a 5"
    assert judge(cond(gates={}), sig) is None  # gates not checked yet: does not hold


def test_every_gate_red_and_gates_by_kind() -> None:
    from requeue.api.escalation import EscalationCondition
    from requeue.policy.escalation import Signals, judge

    spec = make_spec(gates=[DB, PROVIDER])
    red_one = Signals(queues=[], gates=spec.gates, results=[gate("db", False), gate("provider", True)])
    red_all = Signals(queues=[], gates=spec.gates, results=[gate("db", False), gate("provider", False)])
    every = EscalationCondition.model_validate({"gates": {"red": "all"}})
    by_kind = EscalationCondition.model_validate({"gates": {"kinds": ["http"]}})
    by_postgres = EscalationCondition.model_validate({"gates": {"kinds": ["postgres"]}})
    assert judge(every, red_one) is None
    assert judge(every, red_all) == "every selected gate red: db, provider"
    assert judge(by_kind, red_one) == "gate(s) red: db"
    assert judge(by_postgres, red_all) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"levels": []}, "at least 1 item"),
        ({"levels": [{"name": "L1", "when": {}}]}, "at least one condition in all or any"),
        (
            {"levels": [{"name": "L1", "when": {"any": [{}]}}]},
            "sets exactly one of failed, waiting, stuckActive, processingStopped, breaching, gates, "
            "failedJobNames or corruptJobs",
        ),
        (
            {"levels": [{"name": "L1", "when": {"any": [{"failed": {"above": 1}, "gates": {}}]}}]},
            "sets exactly one of",
        ),
        (
            {"levels": [{"name": "L1", "when": {"any": [{"breaching": {"kinds": ["failedd"]}}]}}]},
            "breaching.kinds.0",
        ),
        (
            {"levels": [{"name": "L1", "when": {"any": [{"gates": {}}]}}] * 2},
            "escalation level names must be unique",
        ),
        (
            {"levels": [{"name": "L1", "holdFor": "soon", "when": {"any": [{"gates": {}}]}}]},
            "holdFor",
        ),
    ],
)
def test_invalid_escalation_specs_are_rejected_with_a_message(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        EscalationSpec.model_validate(body)
    assert message in str(info.value).replace("hold_for", "holdFor")


def test_breach_names_are_the_policys_breach_kinds() -> None:
    from requeue.api.escalation import BreachName
    from requeue.policy.actions import BreachKind

    assert {b.value for b in BreachName} == {b.value for b in BreachKind}


def test_settle_keeps_escalation_marks_consistent_with_results() -> None:
    s = sim()
    gates(s, db=False)
    s.q("orders").failed = s.q("emails").failed = 80
    s.step()
    s.now += timedelta(minutes=3)
    d = s.step(timedelta(0), execute=True)
    assert s.status is not None and s.status.escalation is not None
    index = next(i for i, a in enumerate(d.actions) if isinstance(a, Pause) and a.queue == "emails")
    settled = settle(d, now=s.now, failures={index: "boom"})
    assert settled.escalation is not None and settled.escalation.paused_queues == ["orders"]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"failed": {"above": 50, "growing": True}}, "failed.growing needs thresholds.failedGrowing"),
        ({"processingStopped": {}}, "processingStopped needs thresholds.stalledFor"),
        ({"stuckActive": {"above": 0}}, "stuckActive needs thresholds.stalledActiveSeconds"),
    ],
)
def test_a_condition_on_an_unmeasured_signal_is_rejected_by_model_and_api_server(
    condition: dict[str, Any], message: str
) -> None:
    from requeue.api import QueuePolicy
    from requeue.api.loading import parse
    from requeue.errors import SpecInvalid
    from support.crd_validate import load_crds, validate

    spec = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queues": ["orders"],
        "escalation": {"levels": [{"name": "L1", "when": {"any": [condition]}}]},
    }
    doc = {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": "QueuePolicy",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    }
    with pytest.raises(SpecInvalid) as info:
        parse(QueuePolicy, doc)
    assert message in info.value.message
    errors = validate(load_crds()["QueuePolicy"], doc)
    assert any(message in e for e in errors), errors
    # with the threshold set, both accept it
    spec["thresholds"] = {"failedGrowing": {"above": 1}, "stalledFor": "15m", "stalledActiveSeconds": 60}
    parse(QueuePolicy, doc)
    assert validate(load_crds()["QueuePolicy"], doc) == []
