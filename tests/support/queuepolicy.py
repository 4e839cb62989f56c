"""Helpers for the QueuePolicy e2e tests: manifests, status reads, a Slack sink and /metrics.

What a test asserts on comes from what a user sees: ``kubectl get``, events,
the Slack channel (a local webhook the test runs), ``/metrics`` over HTTP,
plus Redis itself. The DLQReplay helpers (:mod:`support.dlqreplay`) are reused
for Secrets, Events and the operator command.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
from aiohttp import web

from support import async_wait_until
from support.dlqreplay import DLQR, condition, events, operator_command, secret
from support.kube import Kube
from support.leaks import SLACK_TOKEN
from support.operator_proc import OperatorProcess
from support.redis_server import free_port

__all__ = [
    "DLQR",
    "QPOL",
    "SlackSink",
    "apply",
    "apply_until_green",
    "auto_replay",
    "condition",
    "evaluations",
    "gated_policy",
    "kubectl",
    "metric",
    "object_uid",
    "operator_with_metrics",
    "policy",
    "policy_events",
    "scrape",
    "status",
    "wait_policy",
    "with_a_redis_gate",
]

QPOL = "requeue.dev/v1alpha1/queuepolicies"


def policy(
    name: str, queues: list[str], *, secret_name: str = "redis", namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    """A QueuePolicy manifest; ``spec`` entries are camelCase wire fields."""
    return {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": "QueuePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"redis": {"urlSecretRef": {"name": secret_name, "key": "url"}}, "queues": queues, **spec},
    }


#: Gate timing for tests: check every 500 ms, one failure is red, one pass is green.
FAST_GATES = {"interval": "500ms", "failureThreshold": 1, "successThreshold": 1}


def redis_gate(name: str = "cache", secret_name: str = "gate-redis") -> dict[str, Any]:
    """A ``redis`` gate on the Redis whose URL is in Secret ``secret_name`` (the test's
    killable "dependency"), with a 1 s timeout."""
    return {"name": name, "redis": {"urlSecretRef": {"name": secret_name, "key": "url"}, "timeout": "1s"}}


def gated_policy(name: str, queues: list[str], **spec: Any) -> dict[str, Any]:
    """A QueuePolicy evaluated every second and gated by :func:`redis_gate` with :data:`FAST_GATES`."""
    return policy(name, queues, interval="1s", gates=[redis_gate()], gatePolicy=FAST_GATES, **spec)


async def with_a_redis_gate(kube: Kube, redis_url: str, redis_factory: Any) -> Any:
    """The Secret of the queues' Redis (``redis``) and a killable gate Redis of its own (Secret
    ``gate-redis``, see :func:`redis_gate`); returns the gate's server."""
    gate = redis_factory()
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("gate-redis", {"url": gate.url}))
    return gate


def auto_replay(
    rate: dict[str, int], *, selector: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """``actions.autoReplay`` of the outage tests: the ``whatsapp.*`` jobs (or ``selector``) once
    the gates have been green for 1 s, 1 s apart, at ``rate``; ``fields`` add to it (camelCase)."""
    chosen = selector if selector is not None else {"jobNames": ["whatsapp.*"]}
    return {"selector": chosen, "stableFor": "1s", "cooldown": "1s", "rate": rate, **fields}


async def apply_until_green(
    kube: Kube, manifest: dict[str, Any], *, operator: OperatorProcess, ready: bool = False
) -> dict[str, Any]:
    """Apply a gated QueuePolicy and wait until its gates are green (with ``ready``, and it is
    Ready): the starting point of every outage test. Returns that status."""
    name = manifest["metadata"]["name"]
    await apply(kube, manifest)
    return await wait_policy(
        kube,
        name,
        lambda s: gates(s) == "True" and (not ready or condition(s, "Ready").get("status") == "True"),
        operator=operator,
        what="gates green",
    )


async def operator_with_metrics(
    kube: Kube, operator_factory: Any, redis_url: str, *, slack: SlackSink | None = None
) -> tuple[OperatorProcess, int]:
    """Secret ``redis`` (and ``ops-slack``, ``slack``'s webhook), then an operator serving
    /metrics on a free port: the start of the tests that read what a policy exports."""
    port = free_port()
    await apply(kube, secret("redis", {"url": redis_url}))
    if slack is not None:
        await apply(kube, secret("ops-slack", {"url": slack.url}))
    return operator_factory(operator_command(metrics_port=port)), port


async def kubectl(kube: Kube, *args: str) -> str:
    return (await asyncio.to_thread(kube.kubectl, *args)).stdout


async def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    await asyncio.to_thread(kube.kubectl.apply, manifest)


async def status(kube: Kube, name: str, namespace: str = "default") -> dict[str, Any]:
    obj = await asyncio.to_thread(kube.get, QPOL, name, namespace)
    return dict((obj or {}).get("status") or {})


async def object_uid(kube: Kube, res: str, name: str, namespace: str = "default") -> str:
    """The UID of a stored object (e.g. ``QPOL``), which must exist: owner references carry it."""
    obj = await asyncio.to_thread(kube.get, res, name, namespace)
    assert obj is not None, f"{res}/{name} does not exist"
    return str(obj["metadata"]["uid"])


async def policy_events(kube: Kube, name: str) -> list[dict[str, Any]]:
    """Events about the QueuePolicy (not its child replays), oldest first."""
    items = await asyncio.to_thread(events, kube, name)
    return [e for e in items if e.get("involvedObject", {}).get("kind") == "QueuePolicy"]


async def wait_policy(
    kube: Kube,
    name: str,
    predicate: Callable[[dict[str, Any]], Any],
    *,
    operator: OperatorProcess | None = None,
    timeout: float = 30.0,
    what: str = "status",
) -> dict[str, Any]:
    """Wait until ``predicate(status)`` holds; fail with the status and the operator's log tail."""
    last: dict[str, Any] = {}

    async def check() -> dict[str, Any] | None:
        nonlocal last
        last = await status(kube, name)
        return last if predicate(last) else None

    def explain() -> str:
        tail = operator.logs()[-6000:] if operator is not None else ""
        dump = json.dumps(last, indent=1)[:5000]
        return f"{what} of qpol/{name}; last status:\n{dump}\noperator log:\n{tail}"

    result: dict[str, Any] = await async_wait_until(check, timeout=timeout, interval=0.1, message=explain)
    return result


def gates(st: dict[str, Any]) -> str:
    """The policy's GatesPassed condition status: "True", "False", or "" before the first check."""
    return str(condition(st, "GatesPassed").get("status", ""))


def auto_replays(st: dict[str, Any]) -> list[str]:
    """Names of the child DLQReplays in ``.status.lastActions``, newest first."""
    return [a["result"] for a in st.get("lastActions", []) if a["action"] == "AutoReplay" and a.get("result")]


async def wait_auto_replay(
    kube: Kube,
    name: str,
    *,
    after: str | None = None,
    operator: OperatorProcess | None = None,
    timeout: float = 40.0,
    what: str = "the auto replay",
) -> str:
    """Wait until the policy reports a child DLQReplay (one other than ``after``); its name."""
    st = await wait_policy(
        kube,
        name,
        lambda s: auto_replays(s)[:1] not in ([], [after]),
        operator=operator,
        timeout=timeout,
        what=what,
    )
    return auto_replays(st)[0]


async def evaluations(
    kube: Kube, name: str, count: int, *, operator: OperatorProcess | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Wait until the policy has been evaluated ``count`` more times; return the latest status."""
    seen: set[str] = set()

    def newer(st: dict[str, Any]) -> bool:
        at = st.get("lastEvaluatedAt")
        if at:
            seen.add(at)
        return len(seen) > count

    return await wait_policy(
        kube, name, newer, operator=operator, timeout=timeout, what=f"{count} more evaluations"
    )


def queue_state(st: dict[str, Any], queue: str) -> dict[str, Any]:
    return next((q for q in st.get("queues", []) if q.get("name") == queue), {})


class SlackSink:
    """A Slack incoming-webhook stand-in on 127.0.0.1 that records every POSTed message."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.url = ""
        #: The HTTP status it answers with (set 500 to see how a refusing webhook is reported).
        self.status = 200
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.messages.append(str(body.get("text", "")))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "no_service")

    async def start(self) -> SlackSink:
        app = web.Application()
        app.router.add_post(f"/services/T000/B000/{SLACK_TOKEN}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/services/T000/B000/{SLACK_TOKEN}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def scrape(port: int) -> str:
    """``GET /metrics`` from the operator."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
        response.raise_for_status()
        return response.text


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels...}`` (labels matched as a subset), or None."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None or m[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m[3])
    return None
