"""The end-of-life rules the operator's handlers only call: ending, pinning, cleanup, ttl (no kopf)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from requeue.api import (
    DLQReplaySpec,
    DLQReplayStatus,
    QueuePolicyStatus,
    QueueState,
    ReplayPhase,
    find_condition,
)
from requeue.api.conditions import Reason, ReplayCondition
from requeue.errors import RedisUnreachable, SecretNotFound, SpecInvalid
from requeue.policy import finalize as policy_finalize
from requeue.replay.ending import fail
from requeue.replay.finalize import cleanup_needed, give_up_cleanup, ttl_left
from requeue.replay.pinning import PIN_ANNOTATION, pin_text, pinned_values, read_pin, with_pinned

NOW = datetime(2025, 7, 16, 9, 0, tzinfo=UTC)
SPEC = {"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}, "queue": "emails"}


def test_an_invalid_spec_fails_the_replay_like_the_engine_does() -> None:
    st = DLQReplayStatus()
    event = fail(st, SpecInvalid.reason, "spec.rate: bad", generation=2, now=NOW)
    assert st.phase == ReplayPhase.FAILED and st.completed_at == NOW
    ready = find_condition(st.conditions, ReplayCondition.READY)
    succeeded = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    progressing = find_condition(st.conditions, ReplayCondition.PROGRESSING)
    assert ready is not None and (ready.status, ready.reason) == ("False", "SpecInvalid")
    assert succeeded is not None and (succeeded.status, succeeded.reason) == ("False", "SpecInvalid")
    assert progressing is not None and progressing.reason == Reason.FINISHED
    assert (event.type, event.reason) == ("Warning", "SpecInvalid")


def test_pinned_fields_come_back_and_are_named() -> None:
    spec = DLQReplaySpec.model_validate(SPEC)
    pin = pinned_values(spec)
    body = {"metadata": {"annotations": {PIN_ANNOTATION: pin_text(pin)}}}
    assert read_pin(body) == pin
    edited = DLQReplaySpec.model_validate({**SPEC, "queue": "sms"})
    kept, changed = with_pinned(edited, pin)
    assert kept.queue == "emails" and changed == ["queue"]


def test_a_replay_that_never_reached_redis_is_let_go_without_an_event() -> None:
    st = DLQReplayStatus()
    assert cleanup_needed(st)
    verdict = give_up_cleanup(SecretNotFound("no secret"), st, attempt=1, attempts=20)
    assert verdict is not None and verdict.why == ""


def test_a_transient_cleanup_failure_retries_until_the_last_attempt() -> None:
    st = DLQReplayStatus(phase=ReplayPhase.REPLAYING, started_at=NOW, matched=3)
    assert give_up_cleanup(RedisUnreachable("down"), st, attempt=1, attempts=20) is None
    last = give_up_cleanup(RedisUnreachable("down"), st, attempt=20, attempts=20)
    assert last is not None and last.why == "20 attempts failed"
    permanent = give_up_cleanup(SecretNotFound("gone"), st, attempt=1, attempts=20)
    assert permanent is not None and permanent.why == "retrying cannot help"


def test_ttl_counts_from_the_end() -> None:
    st = DLQReplayStatus(phase=ReplayPhase.SUCCEEDED, completed_at=NOW)
    assert ttl_left(None, st, NOW) is None and ttl_left(True, st, NOW) is None
    assert ttl_left(60, st, NOW + timedelta(seconds=15)) == 45.0
    assert ttl_left(0, st, NOW) == 0.0


def test_a_deleted_policy_resumes_only_what_it_paused_and_gives_up_on_nothing_to_lose() -> None:
    status = QueuePolicyStatus(queues=[QueueState(name="a", paused_by_policy=True), QueueState(name="b")])
    decision = policy_finalize.plan(status, NOW)
    assert [a.queue for a in policy_finalize.resumes(decision)] == ["a"]
    assert not policy_finalize.give_up(RedisUnreachable("down"), decision, attempt=1, attempts=10)
    assert policy_finalize.give_up(RedisUnreachable("down"), decision, attempt=10, attempts=10)
    nothing = policy_finalize.plan(QueuePolicyStatus(), NOW)
    assert policy_finalize.give_up(RedisUnreachable("down"), nothing, attempt=1, attempts=10)
