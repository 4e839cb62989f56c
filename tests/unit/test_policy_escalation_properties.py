"""Hypothesis properties of escalation levels over random histories.

The level machine alone (:func:`step_levels`): a level is entered only after its
conditions held continuously for ``holdFor`` and left only after they were clear that
long, so a condition toggling faster than ``holdFor`` changes nothing. The whole
decision (:func:`decide` in the simulated world of ``support.policy_sim``): at most one
escalation Event and one message per channel per change, a change exactly when the level
changes, never a resume of a queue someone else paused, and everything escalation paused
resumed once the world is healthy again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from requeue.api.conditions import Reason
from requeue.api.escalation import EscalationLevelState
from requeue.policy.actions import Pause, Resume
from requeue.policy.decide import decide, queues_to_observe
from requeue.policy.escalation import LevelTiming, step_levels
from support.policy_sim import T0, PolicySim, gate, make_spec

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOLD = timedelta(minutes=5)
QUEUES = ["orders", "emails", "bulk"]
CHANNELS = {
    "L1": {"oncall"},
    "L2": {"oncall", "incident"},
    "L3": {"incident", "exec"},
}
ESCALATION_REASONS = {Reason.ESCALATION_RAISED, Reason.ESCALATION_LOWERED, Reason.ESCALATION_CLEARED}


def channel(name: str) -> dict[str, Any]:
    return {"name": name, "webhookSecretRef": {"name": "hooks", "key": name}}


def spec(dry: bool, hold_minutes: int = 5, **actions: Any) -> Any:
    hold = f"{hold_minutes}m"
    return make_spec(
        queues=QUEUES,
        gates=[
            {"name": "db", "http": {"url": "http://127.0.0.1:1/"}},
            {"name": "provider", "http": {"url": "http://127.0.0.1:2/"}},
        ],
        dryRun=dry,
        thresholds={"failed": 100, "failedGrowing": {"above": 50}},
        alerts={"repeatAfter": "1000d"},
        actions=actions,
        escalation={
            "levels": [
                {
                    "name": "L1",
                    "holdFor": hold,
                    "when": {"any": [{"failed": {"above": 50}}, {"gates": {"names": ["db"]}}]},
                    "actions": {"notify": [channel(c) for c in sorted(CHANNELS["L1"])]},
                },
                {
                    "name": "L2",
                    "holdFor": hold,
                    "when": {"all": [{"gates": {}}, {"breaching": {"kinds": ["failed"], "minQueues": 2}}]},
                    "actions": {
                        "notify": [channel(c) for c in sorted(CHANNELS["L2"])],
                        "pauseQueues": True,
                        "stopAutoReplay": True,
                        "snapshot": True,
                    },
                },
                {
                    "name": "L3",
                    "holdFor": hold,
                    "when": {"all": [{"gates": {"red": "all"}}]},
                    "actions": {"notify": [channel(c) for c in sorted(CHANNELS["L3"])], "pauseQueues": True},
                },
            ]
        },
    )


# ----------------------------------------------------------------- the level machine


@SETTINGS
@given(
    steps=st.lists(st.tuples(st.integers(1, 600), st.booleans()), min_size=1, max_size=80),
    hold=st.integers(0, 900),
)
def test_a_level_changes_only_after_a_run_of_hold_for(steps: list[tuple[int, bool]], hold: int) -> None:
    hold_for = timedelta(seconds=hold)
    timing = [LevelTiming("L1", hold_for)]
    now = T0
    previous: dict[str, EscalationLevelState] = {}
    in_force = False
    run_start = now
    run_value: bool | None = None
    for advance, holds in steps:
        now += timedelta(seconds=advance)
        if holds != run_value:
            run_value, run_start = holds, now
        current, states, flags = step_levels(timing, previous, {"L1": in_force}, [holds], now)
        if flags[0] != in_force:
            # the flag only ever follows the condition, after a continuous run of holdFor
            assert flags[0] == holds
            assert now - run_start >= hold_for
        else:
            assert not (now - run_start >= hold_for and holds != in_force)
        in_force = flags[0]
        assert current == (1 if in_force else 0)
        assert states[0].since == run_start
        previous = {"L1": states[0]}


@SETTINGS
@given(runs=st.lists(st.integers(1, 299), min_size=1, max_size=60), start=st.booleans())
def test_a_condition_toggling_faster_than_hold_for_never_changes_the_level(
    runs: list[int], start: bool
) -> None:
    """Each run of equal values lasts under holdFor (5m): the level stays where it was."""
    timing = [LevelTiming("L1", HOLD)]
    now = T0
    previous: dict[str, EscalationLevelState] = {}
    holds = start
    for length in runs:
        # one evaluation at the run's start and one just before it ends: the run is seen for `length` s
        for offset in (0, length):
            current, states, _ = step_levels(
                timing, previous, {"L1": False}, [holds], now + timedelta(seconds=offset)
            )
            assert current == 0
            previous = {"L1": states[0]}
        now += timedelta(seconds=length + 1)
        holds = not holds


# ----------------------------------------------------------------- the whole decision

step_st = st.fixed_dictionaries(
    {
        "advance": st.integers(min_value=1, max_value=600),
        "gates": st.one_of(st.none(), st.tuples(st.booleans(), st.booleans())),
        "human": st.lists(
            st.tuples(st.sampled_from(QUEUES), st.sampled_from(["pause", "resume"])),
            max_size=2,
            unique_by=lambda t: t[0],
        ),
        "failed": st.lists(st.integers(min_value=0, max_value=200), min_size=3, max_size=3),
        "execute": st.sampled_from([True, True, True, False]),
        "dry": st.sampled_from([None, None, None, None, "on", "off"]),
    }
)


def run(sim: PolicySim, steps: list[dict[str, Any]]) -> list[tuple[int, int, Any]]:
    """Play ``steps``; return (level before, level after, decision) per step. Asserts the
    per-decision properties as it goes."""
    out = []
    for s in steps:
        sim.gates = (
            None if s["gates"] is None else (gate("db", s["gates"][0]), gate("provider", s["gates"][1]))
        )
        for queue, what in s["human"]:
            (sim.external_pause if what == "pause" else sim.external_resume)(queue)
        for queue, failed in zip(QUEUES, s["failed"], strict=True):
            sim.q(queue).failed = failed
        if s["dry"] is not None:
            sim.spec = sim.spec.model_copy(update={"dry_run": s["dry"] == "on"})
        out.append(step(sim, s["advance"], s["execute"]))
    return out


def step(sim: PolicySim, advance: int, execute: bool = True) -> tuple[int, int, Any]:
    before = sim.status.escalation.level if sim.status and sim.status.escalation else 0
    before_name = sim.status.escalation.name if sim.status and sim.status.escalation else ""
    names = queues_to_observe(sim.spec, sim.status)
    obs = sim.observe(names)
    sim.now += timedelta(seconds=advance)
    decision = decide(sim.spec, sim.status, obs, sim.memory, now=sim.now, policy_name="p")
    sim.status, sim.memory = decision.status, decision.memory
    sim.history.append((sim.now, decision))
    for action in decision.to_execute:
        if isinstance(action, Resume):
            assert sim.q(action.queue).paused_by == "policy", (action, sim.q(action.queue))
        if isinstance(action, Pause):
            assert not sim.q(action.queue).paused, action
    sim.finish(decision, execute=execute)
    after = decision.status.escalation.level if decision.status.escalation else 0
    after_name = decision.status.escalation.name if decision.status.escalation else ""
    events = [e for e in decision.events if e.reason in ESCALATION_REASONS]
    notices = [n.channel.name for n in decision.escalation.notices] if decision.escalation else []
    # one Event exactly when the level changes, at most one message per channel, to the right channels
    assert len(events) == (1 if after != before else 0), (before, after, events)
    assert len(notices) == len(set(notices))
    if sim.spec.dry_run or after == before:
        assert notices == []
    else:
        assert set(notices) == CHANNELS.get(before_name, set()) | CHANNELS.get(after_name, set())
    return before, after, decision


@SETTINGS
@given(steps=st.lists(step_st, min_size=1, max_size=40), dry=st.booleans(), gate_pause=st.booleans())
def test_one_event_and_one_message_per_channel_per_change_and_never_resumes_others(
    steps: list[dict[str, Any]], dry: bool, gate_pause: bool
) -> None:
    sim = PolicySim(spec(dry, pauseWhileGatesFail=gate_pause))
    run(sim, steps)  # asserts inside


@SETTINGS
@given(steps=st.lists(step_st, min_size=1, max_size=40), gate_pause=st.booleans())
def test_everything_escalation_paused_is_resumed_once_healthy(
    steps: list[dict[str, Any]], gate_pause: bool
) -> None:
    sim = PolicySim(spec(False, pauseWhileGatesFail=gate_pause))
    run(sim, steps)
    sim.spec = sim.spec.model_copy(update={"dry_run": False})
    sim.gates = (gate("db", True), gate("provider", True))
    for queue in QUEUES:
        sim.q(queue).failed = 0
    for _ in range(4):  # two holdFor periods: every level clears, every pause is released
        step(sim, 200)
    assert sim.status is not None and sim.status.escalation is not None
    assert sim.status.escalation.level == 0 and sim.status.escalation.paused_queues == []
    assert [q for q in QUEUES if sim.q(q).paused_by == "policy"] == []


@SETTINGS
@given(runs=st.lists(st.integers(1, 299), min_size=2, max_size=30))
def test_an_outage_flapping_faster_than_hold_for_sends_nothing(runs: list[int]) -> None:
    """The db gate (L1, and L3 when both are red) flaps with runs under holdFor: no change, no message."""
    sim = PolicySim(spec(False, pauseWhileGatesFail=True))
    for queue in QUEUES:
        sim.q(queue).failed = 0
    red = True
    for length in runs:
        sim.gates = (gate("db", not red), gate("provider", not red))
        for advance in (1, length - 1 if length > 1 else 0):
            if advance:
                before, after, decision = step(sim, advance)
                assert before == after == 0
                assert not decision.escalation or not decision.escalation.notices
        sim.now += timedelta(seconds=1)
        red = not red
