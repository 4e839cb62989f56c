"""Helpers for the DLQReplay e2e tests: manifests, status reads and bounded waits through kubectl.

Everything a test asserts on comes from what a user sees: ``kubectl get``,
``kubectl describe``, ``kubectl get events``, plus Redis itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

from support import async_wait_until, wait_until
from support.kube import Kube
from support.operator_proc import OperatorProcess
from support.redis_server import free_port

__all__ = [
    "DLQR",
    "condition",
    "event_reasons",
    "events",
    "operator_command",
    "replay",
    "secret",
    "status",
    "wait_gone_async",
    "wait_status",
    "wait_status_async",
]

DLQR = "requeue.dev/v1alpha1/dlqreplays"


def operator_command(*extra: str, metrics_port: int | None = None) -> tuple[str, ...]:
    """``python -m requeue run --standalone -A`` on a free metrics port (tests may run side by side)."""
    port = metrics_port if metrics_port is not None else free_port()
    return (sys.executable, "-m", "requeue", "run", "--standalone", "-A", "--verbose",
            "--metrics-port", str(port), *extra)


def secret(name: str, values: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    """A Secret manifest with base64 ``data``."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def replay(name: str, queue: str, *, secret_name: str = "redis", secret_key: str = "url",
           namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A DLQReplay manifest; ``spec`` entries are camelCase wire fields."""
    return {"apiVersion": "requeue.dev/v1alpha1", "kind": "DLQReplay",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"redis": {"urlSecretRef": {"name": secret_name, "key": secret_key}},
                     "queue": queue, **spec}}


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


def wait_status(kube: Kube, name: str, predicate: Any, *, operator: OperatorProcess | None = None,
                timeout: float = 30.0, what: str = "status", namespace: str = "default") -> dict[str, Any]:
    """Wait until ``predicate(status)`` holds; fail with the status and the operator's log tail."""

    def check() -> dict[str, Any] | None:
        st = status(kube, name, namespace)
        return st if predicate(st) else None

    def explain() -> str:
        tail = operator.logs()[-5000:] if operator is not None else ""
        return (f"{what} of dlqr/{name}; last status:\n"
                f"{json.dumps(status(kube, name, namespace), indent=1)[:4000]}\noperator log:\n{tail}")

    result: dict[str, Any] = wait_until(check, timeout=timeout, interval=0.1, message=explain)
    return result


async def wait_status_async(kube: Kube, name: str, predicate: Any, *,
                            operator: OperatorProcess | None = None, timeout: float = 30.0,  # noqa: ASYNC109
                            what: str = "status", namespace: str = "default") -> dict[str, Any]:
    """:func:`wait_status` for async tests: the test's loop keeps running (e.g. BullMQ workers on it)."""

    async def check() -> dict[str, Any] | None:
        st = await asyncio.to_thread(status, kube, name, namespace)
        return st if predicate(st) else None

    def explain() -> str:
        tail = operator.logs()[-5000:] if operator is not None else ""
        return (f"{what} of dlqr/{name}; last status:\n"
                f"{json.dumps(status(kube, name, namespace), indent=1)[:4000]}\noperator log:\n{tail}")

    result: dict[str, Any] = await async_wait_until(check, timeout=timeout, interval=0.1, message=explain)
    return result


async def wait_gone_async(kube: Kube, name: str, *, operator: OperatorProcess | None = None,
                          timeout: float = 30.0, namespace: str = "default") -> None:  # noqa: ASYNC109
    """Wait until the object no longer exists (finalizers released)."""

    async def gone() -> bool:
        return await asyncio.to_thread(kube.get, DLQR, name, namespace) is None

    await async_wait_until(gone, timeout=timeout, interval=0.1,
                           message=lambda: f"dlqr/{name} to be gone; operator log:\n"
                                           f"{operator.logs()[-5000:] if operator else ''}")
