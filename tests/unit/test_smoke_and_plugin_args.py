"""The smoke test's spec rules (as the API server's CEL rules say them) and how the kubectl plugin
takes kubectl's own flags out of the requeue command line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from requeue.api.smoke import SmokeTest
from requeue.kubectl_plugin import KubeContext, split_kube_flags

URL = "https://api.example.com/hooks/test"
FROM_SECRET = {"secretKeyRef": {"name": "api", "key": "body"}}


def test_one_body_at_most() -> None:
    with pytest.raises(ValidationError, match="set at most one of body or bodyFrom"):
        SmokeTest.model_validate({"url": URL, "body": "{}", "bodyFrom": FROM_SECRET})
    assert SmokeTest.model_validate({"url": URL, "bodyFrom": FROM_SECRET}).body is None


def test_retries_are_bounded_and_json_path_needs_equals() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        SmokeTest.model_validate({"url": URL, "retries": 11})
    with pytest.raises(ValidationError, match="jsonPath and equals go together"):
        SmokeTest.model_validate({"url": URL, "jsonPath": "$.ok"})
    smoke = SmokeTest.model_validate({"url": URL, "waitForJob": {"queue": "orders"}})
    assert (smoke.retries, smoke.retry_delay, smoke.wait_for_job and smoke.wait_for_job.timeout) == (
        2,
        "5s",
        "5m",
    )


def test_kubectl_flags_are_taken_out_anywhere() -> None:
    kube, rest = split_kube_flags(
        [
            "inspect",
            "-n",
            "ops",
            "--from",
            "dlqreplay/x",
            "--context=prod",
            "--kubeconfig",
            "/k",
            "--name",
            "pay",
        ]
    )
    assert kube == KubeContext(kubeconfig="/k", context="prod", namespace="ops")
    assert rest == ["inspect", "--from", "dlqreplay/x", "--name", "pay"]  # --name is requeue's


def test_the_queue_a_smoke_test_waits_on_shares_the_replays_slot_on_a_cluster() -> None:
    """A waitForJob queue with its own hash tag is refused before anything runs (HashTagRequired),
    instead of MOVED answers on every look once the replay has moved its jobs."""
    from requeue.api import DLQReplaySpec
    from requeue.errors import HashTagRequired
    from requeue.queues.cluster import queue_slot
    from requeue.redis_target import replay_queues

    def spec(queue: str) -> DLQReplaySpec:
        return DLQReplaySpec.model_validate(
            {
                "queue": "{a}orders",
                "prefix": "bull",
                "redis": {"urlSecretRef": {"name": "r", "key": "u"}},
                "verify": {"smokeTest": {"url": URL, "waitForJob": {"queue": queue}}},
            }
        )

    assert [q.queue for q in replay_queues(spec("{a}emails"))] == ["{a}orders", "{a}emails"]
    queue_slot(replay_queues(spec("{a}emails")))  # one tag: one slot
    with pytest.raises(HashTagRequired, match="waitForJob"):
        queue_slot(replay_queues(spec("{x}emails")))
