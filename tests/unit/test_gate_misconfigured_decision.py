"""A gate whose check cannot run because of its configuration is neither red nor green.

The checks run for real (no server is reached: the failure comes before any connection);
the QueuePolicy decisions run through :class:`PolicySim`, the pure decide().
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.gates import GatePolicy, GateSpec, GateStatus, GateType, HttpGate, PostgresGate, RedisGate
from requeue.gates import GateResult, GateRunner, check_http, check_postgres, check_redis
from requeue.gates.destinations import DestinationPolicy
from requeue.gates.runner import fold
from requeue.policy.actions import AutoReplay, Pause, Resume
from requeue.secrets import StaticSecrets
from support.policy_sim import HTTP_GATE, T0, PolicySim, gate, make_spec

NO_SECRETS = StaticSecrets({}, environ={})
MISSING = "secret visapi/visapi-db not found"


def unusable(healthy_before: bool, reason: Reason = Reason.SECRET_NOT_FOUND) -> GateStatus:
    """What fold() makes of a misconfigured result: the previous ``healthy`` kept, the marker set."""
    return GateStatus(
        name="db",
        type=GateType.HTTP,
        healthy=healthy_before,
        message=MISSING,
        misconfigured=reason.value,
    )


# ---------------------------------------------------------------- which failures are configuration


async def test_a_missing_secret_is_secret_not_found_in_every_gate_type() -> None:
    ref = {"name": "visapi-db", "key": "dsn"}
    pg = await check_postgres(PostgresGate.model_validate({"dsnSecretRef": ref}), NO_SECRETS)
    assert not pg.healthy and pg.misconfigured == Reason.SECRET_NOT_FOUND
    assert "visapi-db/dsn" in pg.message
    redis = await check_redis(
        RedisGate.model_validate({"urlSecretRef": {"name": "visapi-cache", "key": "url"}}),
        NO_SECRETS,
        default_url=None,
    )
    assert redis.misconfigured == Reason.SECRET_NOT_FOUND and "visapi-cache/url" in redis.message
    http = await check_http(
        HttpGate.model_validate(
            {
                "url": "http://127.0.0.1:1/health",
                "headers": [
                    {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "api", "key": "t"}}}
                ],
            }
        ),
        NO_SECRETS,
    )
    assert http.misconfigured == Reason.SECRET_NOT_FOUND and "api/t" in http.message


async def test_denied_destination_bad_url_and_bad_dsn_are_configuration() -> None:
    deny_local = DestinationPolicy.build(deny=["127.0.0.0/8"])
    http = await check_http(
        HttpGate.model_validate({"url": "http://127.0.0.1:1/health"}), NO_SECRETS, policy=deny_local
    )
    assert http.misconfigured == Reason.DESTINATION_DENIED and "DestinationDenied" in http.message
    bad_url = StaticSecrets({("c", "url"): "redis://127.0.0.1:notaport/0"}, environ={})
    redis = await check_redis(
        RedisGate.model_validate({"urlSecretRef": {"name": "c", "key": "url"}}), bad_url, default_url=None
    )
    assert redis.misconfigured == Reason.REDIS_URL_INVALID, redis
    bad_dsn = StaticSecrets({("d", "dsn"): "host=127.0.0.1 port='unterminated"}, environ={})
    pg = await check_postgres(
        PostgresGate.model_validate({"dsnSecretRef": {"name": "d", "key": "dsn"}}), bad_dsn
    )
    assert pg.misconfigured == Reason.GATE_MISCONFIGURED and "unterminated" not in pg.message


async def test_a_dependency_that_refuses_is_red_not_misconfigured() -> None:
    dsn = StaticSecrets({("d", "dsn"): "postgresql://u@127.0.0.1:1/db"}, environ={})
    pg = await check_postgres(
        PostgresGate.model_validate({"dsnSecretRef": {"name": "d", "key": "dsn"}, "timeout": "2s"}), dsn
    )
    assert not pg.healthy and pg.misconfigured is None


# ---------------------------------------------------------------- fold and the runner's verdicts


@pytest.mark.parametrize("failure_threshold", [1, 3])
def test_fold_keeps_the_previous_state_and_counters_of_a_misconfigured_gate(failure_threshold: int) -> None:
    spec = GateSpec.model_validate(HTTP_GATE)
    pol = GatePolicy(failure_threshold=failure_threshold, success_threshold=2)
    new = fold(spec, None, GateResult.unusable(Reason.SECRET_NOT_FOUND, MISSING), pol, T0)
    assert (new.healthy, new.consecutive_successes, new.consecutive_failures) == (False, 0, 0)
    assert new.misconfigured == "SecretNotFound" and new.message == MISSING
    green = fold(spec, None, GateResult.ok("ok"), pol, T0)
    green = fold(spec, green, GateResult.ok("ok"), pol, T0)
    assert green.healthy
    kept = fold(spec, green, GateResult.unusable(Reason.SECRET_NOT_FOUND, MISSING), pol, T0)
    assert kept.healthy and kept.consecutive_successes == 2 and kept.misconfigured == "SecretNotFound"
    # fixed: counting continues where it was, and the marker is gone
    after = fold(spec, kept, GateResult.ok("ok"), pol, T0)
    assert after.healthy and after.consecutive_successes == 3 and after.misconfigured is None
    red = fold(spec, None, GateResult.fail("refused"), GatePolicy(failure_threshold=1), T0)
    kept_red = fold(spec, red, GateResult.unusable(Reason.DESTINATION_DENIED, "denied"), pol, T0)
    assert not kept_red.healthy and kept_red.consecutive_failures == 1


def test_runner_never_counts_a_misconfigured_gate_as_passed_or_red() -> None:
    spec = GateSpec.model_validate(HTTP_GATE)
    runner = GateRunner([spec], GatePolicy(), NO_SECRETS)
    was_green = GateStatus(
        name="db",
        type=GateType.HTTP,
        healthy=True,
        consecutive_successes=5,
        misconfigured="SecretNotFound",
        message=MISSING,
        last_checked_at=T0,
    )
    was_red = was_green.model_copy(
        update={"healthy": False, "consecutive_successes": 0, "consecutive_failures": 4}
    )
    for status in (was_green, was_red):
        assert not runner.all_passed([status]) and not runner.any_red([status])
        assert runner.misconfigured([status]) == [status]
        assert "cannot be checked (SecretNotFound)" in runner.summary([status])
    fixed = was_green.model_copy(update={"misconfigured": None})
    assert runner.all_passed([fixed]) and runner.misconfigured([fixed]) == []


# ---------------------------------------------------------------- the QueuePolicy decisions


def pause_sim() -> PolicySim:
    return PolicySim(make_spec(queues=["default"], gates=[HTTP_GATE], actions={"pauseWhileGatesFail": True}))


def cond(sim: PolicySim, kind: PolicyCondition) -> tuple[str, str, str]:
    assert sim.status is not None
    c = next(c for c in sim.status.conditions if c.type == kind)
    return c.status.value, c.reason, c.message


def test_a_missing_secret_never_pauses_and_says_so_in_ready_gates_passed_and_one_event() -> None:
    sim = pause_sim()
    sim.gates = (unusable(False),)
    d = sim.step()
    assert d.actions == () and not sim.q().paused
    ready = cond(sim, PolicyCondition.READY)
    assert ready[:2] == ("False", "SecretNotFound") and MISSING in ready[2]
    assert cond(sim, PolicyCondition.GATES_PASSED)[:2] == ("Unknown", "SecretNotFound")
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "SecretNotFound")]
    assert MISSING in d.events[0].message
    again = sim.step()
    assert again.actions == () and again.events == ()  # the Event once, not every evaluation
    assert sim.status is not None and sim.status.outage_started_at is None
    # the Secret appears and the database is down: the gate works as any other
    sim.gates = (gate("db", False, "connection refused"),)
    d = sim.step()
    assert [a for a in d.actions if isinstance(a, Pause)] == [
        Pause("default", "gate red: db: connection refused")
    ]
    assert cond(sim, PolicyCondition.READY)[:2] == ("True", "Evaluated")
    assert cond(sim, PolicyCondition.GATES_PASSED)[:2] == ("False", "GateFailed")


def test_a_secret_lost_during_a_real_outage_keeps_the_pause_and_the_outage() -> None:
    sim = pause_sim()
    sim.gates = (gate("db", False),)
    sim.step()
    assert sim.q().paused and sim.status is not None
    started = sim.status.outage_started_at
    for _ in range(3):
        sim.gates = (unusable(False),)
        d = sim.step(timedelta(minutes=1))
        assert not [a for a in d.actions if isinstance(a, Resume | Pause)]
        assert sim.q().paused and sim.status.queues[0].paused_by_policy
    assert sim.status.outage_started_at == started
    sim.gates = (gate("db", False),)
    d = sim.step()
    assert d.actions == () and "GatesFailed" not in [e.reason for e in d.events]  # the same outage
    sim.gates = (gate("db", True),)
    assert [a for a in sim.step().actions if isinstance(a, Resume)] == [Resume("default", "all gates green")]


def test_a_misconfigured_gate_does_not_resume_and_a_really_red_one_still_pauses() -> None:
    sim = PolicySim(
        make_spec(
            queues=["default"],
            gates=[HTTP_GATE, {"name": "api", "http": {"url": "http://127.0.0.1:1/"}}],
            actions={"pauseWhileGatesFail": True},
        )
    )
    api_red = gate("api", False, "HTTP 503")
    sim.gates = (unusable(True), api_red)
    d = sim.step()
    assert [a for a in d.actions if isinstance(a, Pause)] == [Pause("default", "gate red: api: HTTP 503")]
    assert cond(sim, PolicyCondition.READY)[:2] == ("False", "SecretNotFound")
    sim.gates = (unusable(True), gate("api", True))
    assert sim.step().actions == () and sim.q().paused  # not green while db cannot be checked


def test_no_auto_replay_while_a_gate_cannot_be_checked() -> None:
    sim = PolicySim(
        make_spec(
            queues=["default"],
            gates=[HTTP_GATE],
            actions={"pauseWhileGatesFail": True, "autoReplay": {"stableFor": "2m", "cooldown": "10m"}},
        )
    )
    sim.gates = (gate("db", True),)
    sim.step()
    sim.gates = (gate("db", False),)
    sim.step()
    sim.q().failed = 10
    sim.gates = (unusable(False),)
    for _ in range(10):
        d = sim.step(timedelta(minutes=1))
        assert not [a for a in d.actions if isinstance(a, AutoReplay | Resume)]
    sim.gates = (gate("db", True),)
    sim.step()
    replays = [a for a in sim.step(timedelta(minutes=3)).actions if isinstance(a, AutoReplay)]
    assert len(replays) == 1


def test_a_denied_destination_names_its_reason() -> None:
    sim = pause_sim()
    sim.gates = (unusable(False, Reason.DESTINATION_DENIED),)
    d = sim.step()
    assert d.actions == ()
    assert cond(sim, PolicyCondition.READY)[:2] == ("False", "DestinationDenied")
    assert [e.reason for e in d.events] == ["DestinationDenied"]
