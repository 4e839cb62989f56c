"""``kubectl requeue``: kubectl finds the ``kubectl-requeue`` plugin on PATH and runs the requeue CLI
with the current kubeconfig context: the Redis URL read from a DLQReplay's Secret (with the user's
own credentials), a manifest's Secrets read from the cluster, ``cancel`` patching ``spec.cancel``.

The real kubectl against the API stand-in; the plugin is the installed entry point's function
behind a shim on PATH (as pip puts ``kubectl-requeue`` in the environment's bin); real Redis with
failed BullMQ jobs. No operator runs: the plugin needs none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import replay, secret
from support.kube import Kube
from support.leaks import SESSION_PASSWORD, leaks
from support.queuepolicy import policy

pytestmark = pytest.mark.e2e

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"


def plugin_path(tmp_path: Path) -> str:
    """A directory holding a ``kubectl-requeue`` that runs the ``[project.scripts]`` entry function."""
    bin_dir = tmp_path / "plugins"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "kubectl-requeue"
    shim.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'from requeue.kubectl_plugin import main; main()' \"$@\"\n"
    )
    shim.chmod(0o755)
    return str(bin_dir)


def kubectl_requeue(
    kube: Kube, tmp_path: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubectl requeue ARGS`` as a user types it: the context from KUBECONFIG, the plugin on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQUEUE_")}
    env.update(
        {
            "KUBECONFIG": str(kube.kubeconfig),
            "PATH": f"{plugin_path(tmp_path)}:{env['PATH']}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(OPERATOR_DIR), env.get("PYTHONPATH")])),
            "NO_COLOR": "1",
            "REQUEUE_CONNECT_TIMEOUT": "0",
        }
    )
    return subprocess.run(
        [kube.kubectl.binary, "requeue", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_kubectl_lists_the_plugin(kube: Kube, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{plugin_path(tmp_path)}:{os.environ['PATH']}"}
    listed = subprocess.run(
        [kube.kubectl.binary, "plugin", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert "kubectl-requeue" in listed.stdout, listed.stdout + listed.stderr


async def test_inspect_from_a_dlqreplay_reads_its_secret(kube: Kube, redis_url: str, tmp_path: Path) -> None:
    await make_failed_jobs(
        redis_url, "emails", [JobSpec(name="email.send", data={"i": i}, reason="SMTP 421") for i in range(7)]
    )
    kube.kubectl.apply(secret("redis", {"url": redis_url}, namespace="default"))
    kube.kubectl.apply(replay("emails-fix", "emails", suspend=True))

    res = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/emails-fix", "-o", "json")

    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["queue"] == "emails" and report["total"] == 7, report
    assert leaks(res.stdout + res.stderr, SESSION_PASSWORD) == []

    missing = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/nope")
    assert missing.returncode == 2 and "ReplayNotFound" in missing.stderr
    assert "dlqreplays.requeue.dev default/nope not found" in missing.stderr
    as_json = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/nope", "-o", "json")
    assert json.loads(as_json.stdout)["error"]["reason"] == "ReplayNotFound"
    wrong_ns = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/emails-fix", "-n", "other")
    assert wrong_ns.returncode == 2 and "other/emails-fix not found" in wrong_ns.stderr


async def test_inspect_from_a_queuepolicy_needs_a_queue_when_it_has_several(
    kube: Kube, redis_url: str, tmp_path: Path
) -> None:
    await make_failed_jobs(
        redis_url, "pdf", [JobSpec(name="pdf.render", data={}, reason="OOM") for _ in range(2)]
    )
    await make_failed_jobs(
        redis_url, "mail", [JobSpec(name="mail.send", data={}, reason="421") for _ in range(3)]
    )
    kube.kubectl.apply(secret("redis", {"url": redis_url}, namespace="default"))
    kube.kubectl.apply(policy("watch", ["pdf", "mail"]))

    ambiguous = kubectl_requeue(kube, tmp_path, "inspect", "--from", "queuepolicy/watch")
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "queuepolicies default/watch watches 2 queues: say which with --queue" in ambiguous.stderr

    res = kubectl_requeue(
        kube, tmp_path, "inspect", "--from", "queuepolicy/watch", "--queue", "mail", "-o", "json"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["total"] == 3


async def test_replay_takes_the_manifests_secrets_from_the_cluster(
    kube: Kube, redis_url: str, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "default", [JobSpec(name="pay", data={"i": i}) for i in range(5)])
    kube.kubectl.apply(secret("redis", {"url": redis_url}, namespace="default"))
    manifest: dict[str, Any] = replay("pay-fix", "default", rate={"jobsPerSecond": 10_000, "batchSize": 50})

    res = kubectl_requeue(kube, tmp_path, "replay", "-f", "-", "-o", "json", stdin=yaml.safe_dump(manifest))

    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert (st["phase"], st["replayed"]) == ("Succeeded", 5)
    assert await redis_client.zcard("bull:default:failed") == 0
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == sorted(ids)
    assert leaks(res.stdout + res.stderr, SESSION_PASSWORD) == []


def test_cancel_patches_spec_cancel(kube: Kube, tmp_path: Path) -> None:
    kube.kubectl.apply(replay("long-one", "default", suspend=True))

    res = kubectl_requeue(kube, tmp_path, "cancel", "long-one")

    assert res.returncode == 0, res.stderr
    assert "dlqreplay.requeue.dev/long-one cancel requested" in res.stdout
    got = kube.kubectl.json("get", "dlqreplay", "long-one")
    assert got["spec"]["cancel"] is True
    gone = kubectl_requeue(kube, tmp_path, "cancel", "never-was")
    assert gone.returncode == 2 and "ReplayNotFound" in gone.stderr
