"""The Argo CD health checks in examples/argocd/, run in real Lua runtimes.

Argo CD evaluates health scripts with gopher-lua (Lua 5.1): the live object is
the global ``obj`` and the script returns a table with ``status`` and
``message``. Here each script runs under Lua 5.1 and Lua 5.4 (lupa), without
the os/io/require libraries Argo CD does not offer, against objects whose status
is built by the real pydantic models for every phase.

The objects come from ``replay_objects()`` and ``policy_objects()``: to test
against statuses written by the real replay engine, replace those two functions
and keep the expectations.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from lupa import lua51, lua54

from requeue.api import (
    ConditionStatus,
    DLQReplay,
    DLQReplayStatus,
    GateStatus,
    GateType,
    PolicyCondition,
    QueuePolicy,
    QueuePolicyStatus,
    QueueState,
    Reason,
    ReplayCondition,
    ReplayPhase,
    set_condition,
)

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "examples" / "argocd"
DLQREPLAY_LUA = ARGOCD / "health-dlqreplay.lua"
QUEUEPOLICY_LUA = ARGOCD / "health-queuepolicy.lua"
NOW = datetime(2025, 7, 16, 11, 30, tzinfo=UTC)
RUNTIMES = {"lua5.1": lua51.LuaRuntime, "lua5.4": lua54.LuaRuntime}


# -- running a health script the way Argo CD does --------------------------------------------------


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON value -> Lua value, as Argo CD converts the unstructured object (arrays 1-based)."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        return runtime.table(*(to_lua(runtime, item) for item in value))
    return value


def health(script: Path, obj: dict[str, Any], lua: str = "lua5.1") -> dict[str, str]:
    runtime = RUNTIMES[lua]()
    env = runtime.globals()
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        env[name] = None  # not available to Argo CD health scripts
    env.obj = to_lua(runtime, obj)
    result = runtime.execute(script.read_text())
    assert result is not None, f"{script.name} returned nothing"
    status = {key: result[key] for key in ("status", "message")}
    assert set(dict(result.items())) <= {"status", "message"}
    assert status["status"] in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    assert isinstance(status["message"], str)
    return status


# -- objects: swap these for ones produced by the real engine --------------------------------------


def replay_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ARGOCD / "postsync-replay.yaml").read_text())
    manifest["metadata"] = {"name": "invoice-render-after-sync-x7k2p", "namespace": "visapi", "generation": 1}
    return manifest


def replay_status(phase: ReplayPhase) -> DLQReplayStatus:
    """A plausible status of a replay in `phase`, built with the API models."""
    ready = DLQReplayStatus()
    set_condition(ready, ReplayCondition.READY, phase.finished, Reason.READY, "", 1, NOW)
    conditions = ready.conditions
    gates = [
        GateStatus(name="worker", type=GateType.HTTP, healthy=True, message="200 OK"),
        GateStatus(
            name="redis",
            type=GateType.REDIS,
            healthy=phase is not ReplayPhase.WAITING_FOR_GATES,
            message="PING 80ms > 50ms" if phase is ReplayPhase.WAITING_FOR_GATES else "PING 1ms",
        ),
    ]
    status = DLQReplayStatus(
        phase=phase, conditions=conditions, observed_generation=1, gates=gates, matched=5000
    )
    match phase:
        case ReplayPhase.REPLAYING:
            status.replayed, status.progress = 1200, "1200/5000"
            status.message = "replaying at 20 jobs/s"
        case ReplayPhase.VERIFYING:
            status.replayed, status.progress = 5000, "5000/5000"
            status.message = "verifying for 5m: 4100 completed, 12 failed again"
        case ReplayPhase.SUCCEEDED:
            status.replayed, status.completed, status.progress = 5000, 4988, "5000/5000"
            status.message = "4988 of 5000 replayed jobs completed"
        case ReplayPhase.FAILED:
            status.replayed, status.progress = 0, "0/5000"
            status.message = "gates not green within 10m: redis: PING 80ms > 50ms"
        case ReplayPhase.SUSPENDED:
            status.replayed, status.progress = 2400, "2400/5000"
            status.message = "suspended by spec.suspend"
        case ReplayPhase.CANCELLED:
            status.replayed, status.progress = 3000, "3000/5000"
            status.message = "deleted before it finished; queue resumed"
    return status


def replay_objects() -> Iterator[tuple[ReplayPhase, dict[str, Any]]]:
    """One DLQReplay per phase, as Argo CD would read it from the API server."""
    for phase in ReplayPhase:
        obj = replay_manifest()
        obj["status"] = replay_status(phase).to_wire()
        DLQReplay.model_validate(obj)
        yield phase, obj


def policy_status(healthy: ConditionStatus | None) -> QueuePolicyStatus:
    queues = [QueueState(name="default", waiting=12), QueueState(name="bulk", waiting=40)]
    conditions = []
    if healthy is ConditionStatus.FALSE:
        queues[1] = QueueState(name="bulk", waiting=4000, healthy=False, reasons=["waiting 4000 > 1000"])
        message = "bulk: waiting 4000 > 1000"
    else:
        message = (
            "all 2 queues within thresholds"
            if healthy is ConditionStatus.TRUE
            else "first evaluation running"
        )
    if healthy is not None:
        holder = QueuePolicyStatus()
        set_condition(holder, PolicyCondition.HEALTHY, healthy, Reason.EVALUATED, message, 3, NOW)
        conditions = holder.conditions
    return QueuePolicyStatus(
        conditions=conditions, observed_generation=3, queues=queues, last_evaluated_at=NOW
    )


def policy_objects() -> Iterator[tuple[ConditionStatus | None, dict[str, Any]]]:
    manifest = yaml.safe_load((ROOT / "examples" / "policy.yaml").read_text())
    for healthy in (*ConditionStatus, None):
        obj = {**manifest, "metadata": {**manifest["metadata"], "generation": 3}}
        obj["status"] = policy_status(healthy).to_wire()
        QueuePolicy.model_validate(obj)
        yield healthy, obj


# -- DLQReplay -------------------------------------------------------------------------------------

# Phase -> Argo CD health, and a piece of the message. Cancelled is Degraded on purpose: the
# replay was deleted before every selected job was replayed, and as a PostSync hook that must
# fail the sync (Argo CD fails a hook on Degraded, waits on Progressing and Suspended).
EXPECTED_REPLAY = {
    ReplayPhase.PENDING: ("Progressing", "Pending"),
    ReplayPhase.WAITING_FOR_GATES: ("Progressing", "waiting for redis"),
    ReplayPhase.REPLAYING: ("Progressing", "Replaying 1200/5000: replaying at 20 jobs/s"),
    ReplayPhase.VERIFYING: ("Progressing", "Verifying 5000/5000: verifying for 5m"),
    ReplayPhase.SUCCEEDED: ("Healthy", "4988 of 5000 replayed jobs completed"),
    ReplayPhase.FAILED: ("Degraded", "Failed 0/5000: gates not green within 10m"),
    ReplayPhase.SUSPENDED: ("Suspended", "Suspended 2400/5000"),
    ReplayPhase.CANCELLED: ("Degraded", "Cancelled 3000/5000: deleted before it finished"),
}


def test_every_phase_has_an_expectation() -> None:
    assert set(EXPECTED_REPLAY) == set(ReplayPhase)


@pytest.mark.parametrize("lua", RUNTIMES)
@pytest.mark.parametrize(("phase", "obj"), list(replay_objects()), ids=lambda v: getattr(v, "value", ""))
def test_dlqreplay_health_per_phase(phase: ReplayPhase, obj: dict[str, Any], lua: str) -> None:
    status, message = EXPECTED_REPLAY[phase]
    result = health(DLQREPLAY_LUA, obj, lua)
    assert result["status"] == status
    assert message in result["message"]


@pytest.mark.parametrize("lua", RUNTIMES)
def test_dlqreplay_without_status_waits_for_the_operator(lua: str) -> None:
    obj = replay_manifest()
    assert health(DLQREPLAY_LUA, obj, lua) == {"status": "Progressing", "message": "Waiting for the operator"}
    # kopf may write its own bookkeeping under .status before the first phase.
    obj["status"] = {"kopf": {"progress": {}}}
    assert health(DLQREPLAY_LUA, obj, lua) == {"status": "Progressing", "message": "Waiting for the operator"}


@pytest.mark.parametrize("lua", RUNTIMES)
@pytest.mark.parametrize("phase", [ReplayPhase.PENDING, ReplayPhase.WAITING_FOR_GATES, ReplayPhase.REPLAYING])
def test_spec_suspend_shows_suspended_before_the_operator_catches_up(phase: ReplayPhase, lua: str) -> None:
    obj = dict(replay_objects())[phase]
    obj["spec"]["suspend"] = True
    assert health(DLQREPLAY_LUA, obj, lua)["status"] == "Suspended"


@pytest.mark.parametrize("lua", RUNTIMES)
@pytest.mark.parametrize("phase", [p for p in ReplayPhase if p.finished])
def test_finished_phase_wins_over_spec_suspend(phase: ReplayPhase, lua: str) -> None:
    obj = dict(replay_objects())[phase]
    obj["spec"]["suspend"] = True
    assert health(DLQREPLAY_LUA, obj, lua)["status"] == EXPECTED_REPLAY[phase][0]


@pytest.mark.parametrize("lua", RUNTIMES)
def test_unknown_phase_from_a_newer_operator_does_not_fail_a_sync(lua: str) -> None:
    obj = replay_manifest()
    obj["status"] = {"phase": "Snapshotting", "message": "copying ids"}
    assert health(DLQREPLAY_LUA, obj, lua) == {
        "status": "Progressing",
        "message": "Unknown phase Snapshotting: copying ids",
    }


# -- QueuePolicy -----------------------------------------------------------------------------------

EXPECTED_POLICY = {
    ConditionStatus.TRUE: ("Healthy", "all 2 queues within thresholds"),
    ConditionStatus.FALSE: ("Degraded", "bulk: waiting 4000 > 1000"),
    ConditionStatus.UNKNOWN: ("Progressing", "first evaluation running"),
    None: ("Progressing", "Waiting for the first evaluation"),
}


@pytest.mark.parametrize("lua", RUNTIMES)
@pytest.mark.parametrize(("healthy", "obj"), list(policy_objects()), ids=str)
def test_queuepolicy_health(healthy: ConditionStatus | None, obj: dict[str, Any], lua: str) -> None:
    assert health(QUEUEPOLICY_LUA, obj, lua) == dict(
        zip(("status", "message"), EXPECTED_POLICY[healthy], strict=True)
    )


@pytest.mark.parametrize("lua", RUNTIMES)
def test_queuepolicy_without_status_or_with_a_new_spec(lua: str) -> None:
    objects = dict(policy_objects())
    fresh = {k: v for k, v in objects[ConditionStatus.TRUE].items() if k != "status"}
    assert health(QUEUEPOLICY_LUA, fresh, lua) == {
        "status": "Progressing",
        "message": "Waiting for the operator",
    }
    edited = objects[ConditionStatus.TRUE]
    edited["metadata"]["generation"] = 4
    assert health(QUEUEPOLICY_LUA, edited, lua) == {
        "status": "Progressing",
        "message": "Waiting for the operator to evaluate generation 4",
    }


# -- the files users copy --------------------------------------------------------------------------


def test_argocd_cm_embeds_exactly_the_lua_files() -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"] == {
        "resource.customizations.health.requeue.dev_DLQReplay": DLQREPLAY_LUA.read_text(),
        "resource.customizations.health.requeue.dev_QueuePolicy": QUEUEPOLICY_LUA.read_text(),
    }


def crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"requeue.dev_{plural}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_postsync_hook_is_a_valid_generated_dlqreplay() -> None:
    manifest = yaml.safe_load((ARGOCD / "postsync-replay.yaml").read_text())
    DLQReplay.model_validate(manifest)
    # OpenAPI v3.0 schemas have draft-4 semantics (boolean exclusiveMinimum).
    jsonschema.Draft4Validator(crd_schema("dlqreplays")).validate(manifest)
    metadata = manifest["metadata"]
    assert "name" not in metadata
    assert metadata["generateName"].endswith("-")
    assert metadata["annotations"] == {
        "argocd.argoproj.io/hook": "PostSync",
        "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
    }
    # Finished hooks accumulate under generateName unless something deletes them.
    assert manifest["spec"]["ttlSecondsAfterFinished"] > 0


def test_application_example_deploys_into_the_hook_namespace() -> None:
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    hook = yaml.safe_load((ARGOCD / "postsync-replay.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["kind"] == "Application"
    assert app["spec"]["destination"]["namespace"] == hook["metadata"]["namespace"]
    assert {"repoURL", "path", "targetRevision"} <= set(app["spec"]["source"])
