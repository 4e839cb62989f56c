"""Issue 14 end to end: secrets a DLQReplay uses never show, whole or in pieces, anywhere the operator
writes: ``.status`` (message, conditions, gates), Events, the operator's log (kopf's included).

The Redis password holds every character urlsplit misreads (``/ ? # @ : % " \\``) and is pasted
into the Secret unencoded: the replay still connects. A redis gate uses a URL with a wrong such
password (the server refuses it: WRONGPASS), an HTTP gate sends a 160-character bearer token the
server echoes back in the JSON value the gate judges. A second replay's URL cannot be parsed at
all: it is named ``RedisUrlInvalid``, and deleting it is not held up by the finalizer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from requeue.redact import encode_userinfo
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    condition,
    operator_command,
    replay,
    secret,
    status,
    wait_gone_async,
    wait_status_async,
)
from support.http_endpoint import endpoint
from support.kube import Kube
from support.leaks import leaks
from support.operator_proc import OperatorProcess
from support.redis_server import RedisServer

pytestmark = pytest.mark.e2e

PASSWORD = 'Op3r/Pw+Q7"x\\k?Zr#M2@w:%9TleakXy'
WRONG = 'Wr0ng/Pw+"Zq\\9?Lk#Vb@Ns:%3Hd'
#: 160 characters, with a quote and a backslash (JSON-escaped when echoed).
TOKEN = ('Tk"9\\' + "".join(f"{i:02x}Zq" for i in range(40)))[:160]


class Echo:
    """An API that answers ``{"token": <the Authorization header it got>}``."""

    url = ""

    @staticmethod
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"token": request.headers.get("Authorization", "")})


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    async with endpoint(server.handle) as server.url:
        yield server


def url_with(server: RedisServer, password: str, *, port: str | None = None) -> str:
    return f"redis://default:{password}@{server.host}:{port or server.port}/0"


def everything_shown(kube: Kube, operator: OperatorProcess, name: str) -> str:
    """``.status``, every Event (``kubectl get events -o json``) and the operator's whole log."""
    shown = json.dumps(status(kube, name))
    shown += json.dumps(kube.kubectl.json("get", "events")["items"])
    return shown + operator.logs()


async def test_no_secret_reaches_status_events_or_logs(
    kube: Kube, operator_factory: Any, redis_factory: Callable[..., RedisServer], echo: Echo
) -> None:
    server = redis_factory(password=PASSWORD)
    await make_failed_jobs(
        encode_userinfo(url_with(server, PASSWORD)),
        "default",
        [JobSpec("send", {"n": i}, reason="429 Too Many Requests") for i in range(5)],
    )
    for manifest in (
        secret("redis", {"url": url_with(server, PASSWORD), "bad": url_with(server, PASSWORD, port="63x79")}),
        secret("gate-redis", {"url": url_with(server, WRONG)}),
        secret("cgb", {"token": TOKEN}),
    ):
        await asyncio.to_thread(kube.kubectl.apply, manifest)
    operator = operator_factory(operator_command())

    await asyncio.to_thread(
        kube.kubectl.apply,
        replay(
            "leaky",
            "default",
            gates=[
                {"name": "own-redis", "redis": {"timeout": "2s"}},
                {
                    "name": "other-redis",
                    "redis": {"urlSecretRef": {"name": "gate-redis", "key": "url"}, "timeout": "2s"},
                },
                {
                    "name": "cgb",
                    "http": {
                        "url": echo.url,
                        "timeout": "2s",
                        "jsonPath": "$.token",
                        "equals": "ok",
                        "headers": [
                            {
                                "name": "Authorization",
                                "prefix": "Bearer ",
                                "valueFrom": {"secretKeyRef": {"name": "cgb", "key": "token"}},
                            }
                        ],
                    },
                },
            ],
            gatePolicy={"interval": "500ms"},
        ),
    )
    st = await wait_status_async(
        kube,
        "leaky",
        lambda s: (
            {g["name"]: g for g in s.get("gates", [])}.get("cgb", {}).get("consecutiveFailures", 0) >= 1
            and len(s.get("gates", [])) == 3
        ),
        operator=operator,
        timeout=60,
        what="all three gates checked",
    )
    gates = {g["name"]: g for g in st["gates"]}
    assert gates["own-redis"]["consecutiveFailures"] == 0, gates  # the raw password connects
    assert "WRONGPASS" in gates["other-redis"]["message"], gates
    assert "$.token is" in gates["cgb"]["message"], gates
    assert st["phase"] == "WaitingForGates" and st["matched"] == 0

    await asyncio.to_thread(kube.kubectl.apply, replay("broken", "default", secret_key="bad"))
    broken = await wait_status_async(
        kube,
        "broken",
        lambda s: condition(s, "Ready").get("reason") == "RedisUrlInvalid",
        operator=operator,
        timeout=60,
        what="Ready=False/RedisUrlInvalid",
    )
    assert f"{server.host}:63x79" in condition(broken, "Ready")["message"]

    for name in ("leaky", "broken"):
        assert leaks(everything_shown(kube, operator, name), PASSWORD, WRONG, TOKEN) == []

    await asyncio.to_thread(kube.kubectl, "delete", "dlqr", "broken", "--wait=false")
    await wait_gone_async(kube, "broken", operator=operator, timeout=30)
    await asyncio.to_thread(kube.kubectl, "delete", "dlqr", "leaky", "--wait=false")
    await wait_gone_async(kube, "leaky", operator=operator, timeout=30)
    assert (
        leaks(
            operator.logs() + json.dumps(kube.kubectl.json("get", "events")["items"]), PASSWORD, WRONG, TOKEN
        )
        == []
    )
