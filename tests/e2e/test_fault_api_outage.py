"""The Kubernetes API server unreachable for 30 s mid-replay: the replay keeps moving jobs (its
state lives in Redis, not in the API server) and the status catches up afterwards (issue 14).

The operator reaches the API server through a TCP proxy (``support.tcp_proxy``) that
the test switches to refusing connections, as during a control-plane upgrade or a
network partition; kubectl (the test's own view) goes direct.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
import yaml

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    check_exactly_once,
    in_redis,
    operator_command,
    replay,
    replay_uid,
    secret,
    status,
    wait_finished,
    wait_status_async,
)
from support.kube import Kube, kubeconfig
from support.queuepolicy import apply

#: Past the suite's 120 s default: the outage alone is 30 s and the replay outlasts it.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: How long the API server is unreachable (the issue's figure).
OUTAGE_S = 30.0
RATE = {"jobsPerSecond": 100, "batchSize": 10}
#: Enough jobs at RATE for the replay to outlast the outage by about 15 s.
JOBS = int(RATE["jobsPerSecond"] * (OUTAGE_S + 15))
#: Jobs the replay has moved when the outage begins.
BEFORE = 500


async def test_api_server_down_30s_mid_replay_the_replay_goes_on_and_status_catches_up(
    kube: Kube,
    operator_factory: Any,
    proxy_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"to": f"+49{i}"}, reason="429 Too Many Requests") for i in range(JOBS)],
        timeout=120,
    )
    api = urlsplit(kube.url)
    proxy = await proxy_factory(api.hostname, api.port)
    proxied = tmp_path / "kubeconfig-via-proxy"
    proxied.write_text(yaml.safe_dump(kubeconfig(f"http://127.0.0.1:{proxy.port}")))
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command(), env={"KUBECONFIG": str(proxied)})
    await apply(kube, replay("long", "default", rate=RATE))
    uid = await asyncio.to_thread(replay_uid, kube, "long")
    await wait_status_async(
        kube,
        "long",
        lambda s: s.get("replayed", 0) >= BEFORE,
        operator=operator,
        timeout=60,
        what=f"{BEFORE} jobs replayed (written through the proxy)",
    )

    # the outage: no connection reaches the API server
    await proxy.refuse()
    down_at = time.monotonic()
    at_start = await in_redis(redis_client, uid)
    written_before = (await asyncio.to_thread(status, kube, "long"))["replayed"]
    samples = [(0.0, at_start.replayed)]
    while (elapsed := time.monotonic() - down_at) < OUTAGE_S:
        assert operator.running, operator.logs()[-5000:]
        samples.append((round(elapsed, 1), (await in_redis(redis_client, uid)).replayed))
        await asyncio.sleep(min(1.0, OUTAGE_S - elapsed))
    during = await in_redis(redis_client, uid)
    stored = await asyncio.to_thread(status, kube, "long")
    # jobs kept moving at the rate the whole time, though no status could be written
    moved = during.replayed - at_start.replayed
    assert moved >= RATE["jobsPerSecond"] * OUTAGE_S / 2, samples
    assert all(b[1] > a[1] for a, b in zip(samples[::5], samples[5::5], strict=False)), samples
    assert not during.done, "the replay ended within the outage: too few jobs for the test"
    assert stored["replayed"] == written_before < during.replayed, (stored, during.progress)
    check_exactly_once(during, ids, what="at the end of the outage")

    # the API server is back: the status catches up with Redis while the replay still runs
    await proxy.passthrough()
    back = await in_redis(redis_client, uid)
    caught_up = await wait_status_async(
        kube,
        "long",
        lambda s: s.get("replayed", 0) >= back.replayed,
        operator=operator,
        timeout=30,
        what=f"the status to catch up with Redis ({back.replayed} replayed)",
    )
    assert caught_up["phase"] in ("Replaying", "Succeeded"), caught_up

    st = await wait_finished(
        kube,
        "long",
        operator=operator,
        timeout=90,
    )
    seen = await in_redis(redis_client, uid)
    check_exactly_once(seen, ids, selected=ids, what="at the end")
    assert st["phase"] == "Succeeded", st
    assert st["matched"] == st["replayed"] == seen.replayed == JOBS, st
    assert operator.running and operator.starts == 1
    print(
        f"\noutage {OUTAGE_S:.0f}s: Redis replayed {at_start.replayed} -> {during.replayed} "
        f"({moved} moved, {moved / OUTAGE_S:.0f}/s) while the stored status stayed at {written_before}; "
        f"samples {samples}"
    )
