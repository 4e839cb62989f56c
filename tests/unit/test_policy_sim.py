"""The policy simulator itself (:mod:`support.policy_sim`) applies decisions as the executor would."""

from __future__ import annotations

from support.policy_sim import HTTP_GATE, PolicySim, gate, make_spec


def test_sim_applies_pause_and_resume() -> None:
    sim = PolicySim(make_spec(gates=[HTTP_GATE], actions={"pauseWhileGatesFail": True}))
    sim.gates = (gate("db", False),)
    sim.step()
    assert sim.q().paused and sim.q().paused_by == "policy"
    sim.gates = (gate("db", True),)
    sim.step()
    assert not sim.q().paused
