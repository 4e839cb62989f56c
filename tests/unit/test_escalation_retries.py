"""Escalation messages that fail to send are retried at later evaluations: with backoff, in
order per channel, at most MAX_NOTIFY_ATTEMPTS times, and never sent again once one went out
(tables, and a property over random webhook outages)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from requeue.api.conditions import Reason
from requeue.api.escalation import MAX_NOTIFY_ATTEMPTS, MAX_PENDING_NOTIFICATIONS, EscalationStatus
from requeue.policy.decide import Decision
from requeue.policy.escalation import Delivery, retry_delay, with_results
from support.policy_sim import PolicySim, gate, make_spec

ONCALL = {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}, "mention": "<!here>"}
ROOM = {"name": "room", "webhookSecretRef": {"name": "hooks", "key": "room"}}


def sim() -> PolicySim:
    spec = make_spec(
        queues=["orders"],
        gates=[{"name": "db", "http": {"url": "http://127.0.0.1:1/health"}}],
        escalation={
            "levels": [
                {
                    "name": "L1",
                    "holdFor": "0s",
                    "when": {"any": [{"gates": {}}]},
                    "actions": {"notify": [ONCALL, ROOM]},
                },
                {
                    "name": "L2",
                    "holdFor": "0s",
                    "when": {"all": [{"gates": {}}, {"failed": {"above": 10}}]},
                    "actions": {"notify": [ONCALL]},
                },
            ]
        },
    )
    s = PolicySim(spec)
    s.gates = (gate("db", True),)
    return s


def state(s: PolicySim) -> EscalationStatus:
    assert s.status is not None and s.status.escalation is not None
    return s.status.escalation


def due(d: Decision) -> list[tuple[str, int]]:
    return [(n.channel.name, n.attempts) for n in (d.escalation.notices if d.escalation else [])]


def attempts(s: PolicySim, channel: str) -> list[tuple[str, bool]]:
    return [(text.split("`: ", 1)[1], ok) for name, text, _, ok in s.sent if name == channel]


def test_retry_delays_double_up_to_five_minutes() -> None:
    assert [retry_delay(n).total_seconds() for n in range(1, 8)] == [15, 30, 60, 120, 240, 300, 300]


def test_a_failed_message_is_retried_after_its_backoff_and_sent_once() -> None:
    s = sim()
    s.step()
    s.failing_channels = {"oncall"}
    s.gates = (gate("db", False),)
    d = s.step()
    assert due(d) == [("oncall", 0), ("room", 0)]
    esc = state(s)
    assert esc is not None and esc.level == 1
    [pending] = esc.pending_notifications
    assert (pending.channel, pending.attempts, pending.last_error) == (
        "oncall",
        1,
        "escalation webhook answered 503",
    )
    assert pending.next_attempt_at == s.now + timedelta(seconds=15)
    results = {n.channel: n.result for n in esc.notifications}
    assert results == {
        "oncall": f"failed: escalation webhook answered 503 (attempt 1 of {MAX_NOTIFY_ATTEMPTS}, retried)",
        "room": "sent",
    }
    # before the backoff: not tried
    d = s.step(timedelta(seconds=10))
    assert due(d) == []
    # the webhook is back: the retry goes out, once
    s.failing_channels = set()
    d = s.step(timedelta(seconds=10))
    assert due(d) == [("oncall", 1)]
    esc = state(s)
    assert esc.pending_notifications == []
    assert {n.channel: n.result for n in esc.notifications}["oncall"] == "sent (attempt 2)"
    for _ in range(5):
        d = s.step(timedelta(minutes=10))
        assert due(d) == []
    assert attempts(s, "oncall") == [
        ("escalation raised to L1 (level 1, was none): gate(s) red: db", False),
        ("escalation raised to L1 (level 1, was none): gate(s) red: db", True),
    ]


def test_a_message_is_given_up_after_the_last_attempt() -> None:
    s = sim()
    s.step()
    s.failing_channels = {"room"}
    s.gates = (gate("db", False),)
    s.step()
    for _ in range(MAX_NOTIFY_ATTEMPTS + 3):
        s.step(timedelta(minutes=5))
    assert [ok for _, ok in attempts(s, "room")] == [False] * MAX_NOTIFY_ATTEMPTS
    esc = state(s)
    assert esc is not None and esc.pending_notifications == []
    result = {n.channel: n.result for n in esc.notifications}["room"]
    assert result == f"gave up after {MAX_NOTIFY_ATTEMPTS} attempt(s): escalation webhook answered 503"


def test_a_channel_s_messages_go_out_in_order_behind_a_failed_one() -> None:
    s = sim()
    s.step()
    s.failing_channels = {"oncall"}
    s.gates = (gate("db", False),)
    s.step()  # L1: oncall fails
    s.q("orders").failed = 20
    d = s.step(timedelta(seconds=5))  # L2: a new message for oncall, tried at once behind the first
    assert due(d) == [
        ("oncall", 1),
        ("oncall", 0),
        ("room", 0),  # L1's channel hears of the level it left
    ]
    assert [ok for _, ok in attempts(s, "oncall")] == [False, False]  # the second was not tried
    esc = state(s)
    assert esc is not None and [p.attempts for p in esc.pending_notifications] == [2, 0]
    s.failing_channels = set()
    s.step(timedelta(minutes=1))
    assert [t.split(" (")[0] for t, ok in attempts(s, "oncall") if ok] == [
        "escalation raised to L1",
        "escalation raised to L2",
    ]
    assert state(s).pending_notifications == []


def test_with_results_reports_first_failure_success_after_retry_and_giving_up() -> None:
    s = sim()
    s.step()
    s.failing_channels = {"oncall", "room"}
    s.gates = (gate("db", False),)
    d = s.step()
    assert d.escalation is not None and s.status is not None
    esc = d.status.escalation
    notices = d.escalation.notices
    _, events = with_results(esc, now=s.now, delivered=[Delivery(notices[0], "boom")], sample=None)
    assert [(e.type, e.reason) for e in events] == [("Warning", Reason.NOTIFY_FAILED)]
    assert "retried at later evaluations" in events[0].message
    retry = notices[0].__class__(notices[0].channel, notices[0].text, notices[0].since, attempts=1)
    _, events = with_results(esc, now=s.now, delivered=[Delivery(retry)], sample=None)
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Normal", Reason.NOTIFY_RETRIED, "channel oncall: sent at attempt 2")
    ]
    last = notices[0].__class__(
        notices[0].channel, notices[0].text, notices[0].since, attempts=MAX_NOTIFY_ATTEMPTS - 1
    )
    status, events = with_results(esc, now=s.now, delivered=[Delivery(last, "boom")], sample=None)
    assert [(e.type, e.reason) for e in events] == [("Warning", Reason.NOTIFY_FAILED)]
    assert "gave up after" in events[0].message
    assert status is not None and [p.channel for p in status.pending_notifications] == ["room"]


step_st = st.fixed_dictionaries(
    {
        "red": st.booleans(),
        "failed": st.sampled_from([0, 20]),
        "down": st.sets(st.sampled_from(["oncall", "room"])),
        "advance": st.sampled_from([1, 10, 20, 60, 200, 400]),
    }
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(steps=st.lists(step_st, min_size=1, max_size=40))
def test_no_message_is_sent_twice_none_is_tried_too_often_and_each_channel_keeps_its_order(
    steps: list[dict[str, Any]],
) -> None:
    s = sim()
    for step in steps:
        s.gates = (gate("db", not step["red"]),)
        s.q("orders").failed = step["failed"]
        s.failing_channels = step["down"]
        s.step(timedelta(seconds=step["advance"]))
        esc = s.status.escalation if s.status else None
        assert esc is None or len(esc.pending_notifications) <= MAX_PENDING_NOTIFICATIONS
    # the webhooks come back: within the longest backoff everything left goes out
    s.failing_channels = set()
    for _ in range(3):
        s.step(timedelta(minutes=6))
    esc = s.status.escalation if s.status else None
    assert esc is None or esc.pending_notifications == []
    ids = [(name, text, since) for name, text, since, _ in s.sent]
    sent = Counter(m for m, (_, _, _, ok) in zip(ids, s.sent, strict=True) if ok)
    assert all(n == 1 for n in sent.values()), sent
    tries = Counter(ids)
    assert all(n <= MAX_NOTIFY_ATTEMPTS for n in tries.values()), tries
    for channel in ("oncall", "room"):
        delivered = [since for name, _, since, ok in s.sent if name == channel and ok]
        times = [t for t in delivered if isinstance(t, datetime)]
        assert len(times) == len(delivered) and times == sorted(times)
