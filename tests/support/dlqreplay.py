"""Helpers for the DLQReplay e2e tests: manifests, status reads and bounded waits through kubectl.

Everything a test asserts on comes from what a user sees: ``kubectl get``,
``kubectl describe``, ``kubectl get events``, plus Redis itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from support import async_wait_until, wait_until
from support.kube import Kube
from support.operator_proc import OperatorProcess
from support.redis_server import free_port

__all__ = [
    "DLQR",
    "ReplayInRedis",
    "check_exactly_once",
    "condition",
    "event_reasons",
    "events",
    "in_redis",
    "operator_command",
    "replay",
    "replay_uid",
    "secret",
    "status",
    "wait_finished",
    "wait_gone_async",
    "wait_status",
    "wait_status_async",
]

DLQR = "requeue.dev/v1alpha1/dlqreplays"


def operator_command(*extra: str, metrics_port: int | None = None) -> tuple[str, ...]:
    """``python -m requeue run --standalone -A`` on a free metrics port (tests may run side by side)."""
    port = metrics_port if metrics_port is not None else free_port()
    return (
        sys.executable,
        "-m",
        "requeue",
        "run",
        "--standalone",
        "-A",
        "--verbose",
        "--metrics-port",
        str(port),
        *extra,
    )


def secret(name: str, values: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    """A Secret manifest with base64 ``data``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def replay(
    name: str,
    queue: str,
    *,
    secret_name: str = "redis",
    secret_key: str = "url",
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A DLQReplay manifest; ``spec`` entries are camelCase wire fields."""
    return {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": "DLQReplay",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"redis": {"urlSecretRef": {"name": secret_name, "key": secret_key}}, "queue": queue, **spec},
    }


def status(kube: Kube, name: str, namespace: str = "default") -> dict[str, Any]:
    """The stored ``.status`` ({} when the object or its status is absent)."""
    obj = kube.get(DLQR, name, namespace)
    return dict((obj or {}).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition of that type ({} when absent)."""
    return next((c for c in st.get("conditions", []) if c.get("type") == type_), {})


def events(kube: Kube, name: str) -> list[dict[str, Any]]:
    """Events about the object, oldest first, as ``kubectl get events`` lists them."""
    items = kube.kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))


def event_reasons(kube: Kube, name: str) -> list[str]:
    return [e.get("reason", "") for e in events(kube, name)]


def wait_status(
    kube: Kube,
    name: str,
    predicate: Any,
    *,
    operator: OperatorProcess | None = None,
    timeout: float = 30.0,
    what: str = "status",
    namespace: str = "default",
) -> dict[str, Any]:
    """Wait until ``predicate(status)`` holds; fail with the status and the operator's log tail."""

    def check() -> dict[str, Any] | None:
        st = status(kube, name, namespace)
        return st if predicate(st) else None

    def explain() -> str:
        tail = operator.logs()[-5000:] if operator is not None else ""
        return (
            f"{what} of dlqr/{name}; last status:\n"
            f"{json.dumps(status(kube, name, namespace), indent=1)[:4000]}\noperator log:\n{tail}"
        )

    result: dict[str, Any] = wait_until(check, timeout=timeout, interval=0.1, message=explain)
    return result


async def wait_status_async(
    kube: Kube,
    name: str,
    predicate: Any,
    *,
    operator: OperatorProcess | None = None,
    timeout: float = 30.0,
    what: str = "status",
    namespace: str = "default",
) -> dict[str, Any]:
    """:func:`wait_status` for async tests: the test's loop keeps running (e.g. BullMQ workers on it)."""

    async def check() -> dict[str, Any] | None:
        st = await asyncio.to_thread(status, kube, name, namespace)
        return st if predicate(st) else None

    def explain() -> str:
        tail = operator.logs()[-5000:] if operator is not None else ""
        return (
            f"{what} of dlqr/{name}; last status:\n"
            f"{json.dumps(status(kube, name, namespace), indent=1)[:4000]}\noperator log:\n{tail}"
        )

    result: dict[str, Any] = await async_wait_until(check, timeout=timeout, interval=0.1, message=explain)
    return result


async def wait_finished(
    kube: Kube,
    name: str,
    *,
    operator: OperatorProcess | None = None,
    timeout: float = 30.0,
    what: str = "the end of the replay",
    namespace: str = "default",
) -> dict[str, Any]:
    """Wait until the DLQReplay has finished, Succeeded or Failed (the test asserts which: a
    failure then shows the whole status); its status."""
    return await wait_status_async(
        kube,
        name,
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        operator=operator,
        timeout=timeout,
        what=what,
        namespace=namespace,
    )


async def wait_gone_async(
    kube: Kube,
    name: str,
    *,
    operator: OperatorProcess | None = None,
    timeout: float = 30.0,
    namespace: str = "default",
) -> None:
    """Wait until the object no longer exists (finalizers released)."""

    async def gone() -> bool:
        return await asyncio.to_thread(kube.get, DLQR, name, namespace) is None

    await async_wait_until(
        gone,
        timeout=timeout,
        interval=0.1,
        message=lambda: (
            f"dlqr/{name} to be gone; operator log:\n{operator.logs()[-5000:] if operator else ''}"
        ),
    )


# ---------------------------------------------------------------- exactly once, as Redis holds it


def replay_uid(kube: Kube, name: str, namespace: str = "default") -> str:
    """The replay's UID: its keys in Redis are ``requeue:replay:<uid>:*``."""
    obj = kube.get(DLQR, name, namespace)
    assert obj is not None, f"dlqr/{name} does not exist"
    return str(obj["metadata"]["uid"])


@dataclass(frozen=True)
class ReplayInRedis:
    """One replay and its queue as Redis holds them at one instant: the ids themselves, not a
    counter's word for them (read in one MULTI, so a replay moving meanwhile cannot tear it)."""

    progress: dict[str, str]
    #: The selected ids, in the order the replay walks them.
    snapshot: list[str]
    #: The ids the replay says it moved (its ``replayed`` list), in move order.
    moved: list[str]
    waiting: list[str]
    failed: set[str]

    @property
    def replayed(self) -> int:
        """The progress hash's ``replayed`` counter."""
        return int(self.progress.get("replayed") or 0)

    @property
    def stage(self) -> str:
        return self.progress.get("stage", "")

    @property
    def done(self) -> bool:
        return self.stage == "done"

    def ms(self, field: str) -> int:
        """A timestamp field of the progress hash (``started_ms``, ``replayed_ms``, ``finished_ms``)."""
        value = self.progress.get(field)
        assert value, f"progress has no {field}: {self.progress}"
        return int(value)


async def in_redis(
    client: aioredis.Redis, uid: str, *, queue: str = "default", prefix: str = "bull"
) -> ReplayInRedis:
    """Read :class:`ReplayInRedis` (``client`` must decode responses)."""
    base = f"requeue:replay:{uid}:"
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(base + "progress")
        pipe.lrange(base + "snapshot", 0, -1)
        pipe.lrange(base + "replayed", 0, -1)
        pipe.lrange(f"{prefix}:{queue}:wait", 0, -1)
        pipe.zrange(f"{prefix}:{queue}:failed", 0, -1)
        progress, snapshot, moved, waiting, failed = await pipe.execute()
    return ReplayInRedis(dict(progress), list(snapshot), list(moved), list(waiting), set(failed))


def _twice(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)[:10]


def check_exactly_once(
    seen: ReplayInRedis, all_ids: Collection[str], *, selected: Collection[str] | None = None, what: str = ""
) -> None:
    """Assert exactly-once on the ids, at any instant of a replay (no worker on the queue):

    no id moved or waiting twice; the counter equals the moved list; every moved id was
    selected; ``wait`` holds exactly the moved ids and ``failed`` exactly the rest of
    ``all_ids`` (nothing lost, nothing moved that was not counted). Once the replay is done
    and ``selected`` is given: the snapshot is exactly ``selected`` and all of it moved.
    """
    where = f" ({what})" if what else ""
    moved = set(seen.moved)
    assert not _twice(seen.moved), f"ids moved twice{where}: {_twice(seen.moved)}"
    assert not _twice(seen.waiting), f"ids waiting twice{where}: {_twice(seen.waiting)}"
    assert not _twice(seen.snapshot), f"ids selected twice{where}: {_twice(seen.snapshot)}"
    assert seen.replayed == len(seen.moved), (
        f"replayed counter {seen.replayed} != {len(seen.moved)} moved ids{where}"
    )
    stray = moved - set(seen.snapshot)
    assert not stray, f"moved but never selected{where}: {sorted(stray)[:10]}"
    assert set(seen.waiting) == moved, (
        f"wait != moved{where}: {len(set(seen.waiting) - moved)} waiting not moved, "
        f"{len(moved - set(seen.waiting))} moved not waiting"
    )
    rest = set(all_ids) - moved
    assert seen.failed == rest, (
        f"failed set != the ids not moved{where}: {len(seen.failed - rest)} extra, "
        f"{len(rest - seen.failed)} lost"
    )
    if selected is not None and seen.done:
        assert set(seen.snapshot) == set(selected), (
            f"snapshot != selected{where}: {len(set(seen.snapshot) - set(selected))} extra, "
            f"{len(set(selected) - set(seen.snapshot))} missing"
        )
        assert moved == set(selected), f"{len(set(selected) - moved)} selected ids never moved{where}"
