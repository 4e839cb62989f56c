"""Hypothesis properties of the QueuePolicy decisions over random histories.

A history is a sequence of steps; in each, time passes, gates change (red,
green, not checked), people pause or resume queues, and failed counts move
around the threshold. The simulated world applies the policy's actions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from requeue.policy.actions import Alert, AutoReplay, Pause, Recover, Resume
from requeue.policy.decide import decide, queues_to_observe
from support.policy_sim import PolicySim, gate, make_spec

QUEUES = ["critical", "default", "bulk"]
GATES = [
    {"name": "g0", "http": {"url": "http://127.0.0.1:1/"}},
    {"name": "g1", "http": {"url": "http://127.0.0.1:2/"}},
]

step_st = st.fixed_dictionaries(
    {
        "advance": st.integers(min_value=1, max_value=900),
        "gates": st.one_of(st.none(), st.tuples(st.booleans(), st.booleans())),
        "human": st.lists(
            st.tuples(st.sampled_from(QUEUES), st.sampled_from(["pause", "resume"])),
            max_size=2,
            unique_by=lambda t: t[0],
        ),
        "failed": st.lists(st.integers(min_value=0, max_value=200), min_size=3, max_size=3),
        "spec_change": st.sampled_from([None, None, None, None, "dry_on", "dry_off", "drop_bulk", "all"]),
        "execute": st.sampled_from([True, True, True, False]),
    }
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(dry_run: bool, cooldown_min: int, stable_min: int) -> PolicySim:
    spec = make_spec(
        queues=QUEUES,
        gates=GATES,
        dryRun=dry_run,
        thresholds={"failed": 100},
        alerts={"repeatAfter": "1000d"},
        actions={
            "pauseWhileGatesFail": True,
            "autoReplay": {"stableFor": f"{stable_min}m", "cooldown": f"{cooldown_min}m"},
        },
    )
    return PolicySim(spec)


def run(sim: PolicySim, steps: list[dict[str, Any]]) -> None:
    for s in steps:
        if s["gates"] is None:
            sim.gates = None
        else:
            sim.gates = tuple(gate(f"g{i}", h) for i, h in enumerate(s["gates"]))
        for queue, what in s["human"]:
            (sim.external_pause if what == "pause" else sim.external_resume)(queue)
        for queue, failed in zip(QUEUES, s["failed"], strict=True):
            sim.q(queue).failed = failed
        change = s["spec_change"]
        if change == "dry_on":
            sim.spec = sim.spec.model_copy(update={"dry_run": True})
        elif change == "dry_off":
            sim.spec = sim.spec.model_copy(update={"dry_run": False})
        elif change == "drop_bulk":
            sim.spec = sim.spec.model_copy(update={"queues": ["critical", "default"]})
        elif change == "all":
            sim.spec = sim.spec.model_copy(update={"queues": QUEUES})
        # the world keeps every queue; the sim observes what the policy asks for
        names = queues_to_observe(sim.spec, sim.status)
        for name in names:
            sim.q(name)
        obs = sim.observe(names)
        sim.now += timedelta(seconds=s["advance"])
        decision = decide(sim.spec, sim.status, obs, sim.memory, now=sim.now, policy_name="p")
        sim.status, sim.memory = decision.status, decision.memory
        sim.history.append((sim.now, decision))
        for action in decision.to_execute:
            if isinstance(action, Resume):
                # the property: never resume a queue the policy did not pause
                assert sim.q(action.queue).paused_by == "policy", (action, sim.q(action.queue))
            if isinstance(action, Pause):
                assert not sim.q(action.queue).paused, action
        sim.finish(decision, execute=s["execute"])


@SETTINGS
@given(steps=st.lists(step_st, min_size=1, max_size=40), dry=st.booleans())
def test_never_resumes_a_queue_it_did_not_pause(steps: list[dict[str, Any]], dry: bool) -> None:
    sim = build(dry, cooldown_min=10, stable_min=2)
    run(sim, steps)  # asserts inside


@SETTINGS
@given(steps=st.lists(step_st, min_size=1, max_size=40))
def test_at_most_one_alert_per_breach_episode_and_one_recover_when_it_ends(
    steps: list[dict[str, Any]],
) -> None:
    sim = build(False, cooldown_min=10, stable_min=2)
    run(sim, steps)
    active: set[tuple[str, str]] = set()
    for _, decision in sim.history:
        for action in decision.actions:
            key = (action.queue, str(getattr(action, "breach", "")))
            if isinstance(action, Alert):
                assert key not in active, f"second alert in one episode: {key}"
                active.add(key)
            elif isinstance(action, Recover):
                assert key in active, f"recover without a breach: {key}"
                active.discard(key)
    # what is still breaching is exactly what the status says
    assert sim.status is not None
    still = {(q.name, b.kind) for q in sim.status.queues for b in q.breaches}
    assert still == active


@SETTINGS
@given(
    steps=st.lists(step_st, min_size=1, max_size=60), cooldown=st.integers(1, 120), stable=st.integers(0, 30)
)
def test_auto_replay_at_most_once_per_outage_and_never_within_cooldown(
    steps: list[dict[str, Any]],
    cooldown: int,
    stable: int,
) -> None:
    sim = build(False, cooldown_min=cooldown, stable_min=stable)
    run(sim, steps)
    last: datetime | None = None
    outages_replayed: set[datetime] = set()
    red_since_last = True
    for (now, decision), step in zip(sim.history, steps, strict=True):
        if step["gates"] is not None and not all(step["gates"]):
            red_since_last = True
        replays = [a for a in decision.actions if isinstance(a, AutoReplay)]
        if not replays:
            continue
        assert red_since_last, "a second auto replay without a new outage"
        assert last is None or now - last >= timedelta(minutes=cooldown)
        starts = {r.outage_started_at for r in replays}
        assert len(starts) == 1 and not starts & outages_replayed
        assert len({r.queue for r in replays}) == len(replays)
        for r in replays:
            assert r.selector.failed_after is not None and r.selector.failed_before is not None
            assert r.selector.failed_after < r.selector.failed_before <= now
            assert now - r.recovered_at >= timedelta(minutes=stable)
        outages_replayed |= starts
        last = now
        red_since_last = False
