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
from support.tls_redis import make_client_certificate, tls_redis_server

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


async def test_replay_from_a_dlqreplay_previews_then_runs_its_spec(
    kube: Kube, redis_url: str, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pays = await make_failed_jobs(
        redis_url, "billing", [JobSpec(name="pay", data={"i": i}) for i in range(5)]
    )
    await make_failed_jobs(redis_url, "billing", [JobSpec(name="refund", data={}) for _ in range(2)])
    kube.kubectl.apply(secret("redis", {"url": redis_url}, namespace="default"))
    rate = {"jobsPerSecond": 10_000, "batchSize": 50}
    kube.kubectl.apply(replay("pay-fix", "billing", suspend=True, selector={"jobNames": ["pay"]}, rate=rate))

    dry = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/pay-fix", "--dry-run", "-o", "json")

    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["matched"] == 5
    assert await redis_client.zcard("bull:billing:failed") == 7  # a preview moves nothing

    res = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/pay-fix", "-o", "json")

    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert (st["phase"], st["replayed"]) == ("Succeeded", 5)  # spec.suspend held the operator, not this
    assert sorted(await redis_client.lrange("bull:billing:wait", 0, -1)) == sorted(pays)
    assert await redis_client.zcard("bull:billing:failed") == 2  # the selector's, not the whole set
    assert leaks(dry.stdout + dry.stderr + res.stdout + res.stderr, SESSION_PASSWORD) == []
    assert kube.kubectl.json("get", "dlqreplay", "pay-fix")["spec"]["suspend"] is True  # not touched


async def test_replay_from_refuses_a_queuepolicy_a_missing_object_and_one_the_operator_runs(
    kube: Kube, redis_url: str, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "mail", [JobSpec(name="mail.send", data={}) for _ in range(3)])
    kube.kubectl.apply(secret("redis", {"url": redis_url}, namespace="default"))
    kube.kubectl.apply(policy("watch", ["mail"]))
    kube.kubectl.apply(replay("live", "mail"))  # not suspended: the operator's to run

    as_policy = kubectl_requeue(kube, tmp_path, "replay", "--from", "queuepolicy/watch", "--dry-run")
    assert as_policy.returncode == 2, as_policy.stderr
    assert "replay --from queuepolicy/watch: a QueuePolicy is not a replay" in as_policy.stderr

    missing = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/nope", "--dry-run", "-o", "json")
    assert missing.returncode == 2 and "dlqreplays.requeue.dev default/nope not found" in missing.stderr
    assert json.loads(missing.stdout)["error"]["reason"] == "ReplayNotFound"
    elsewhere = kubectl_requeue(
        kube, tmp_path, "replay", "--from", "dlqreplay/live", "-n", "other", "--dry-run"
    )
    assert elsewhere.returncode == 2 and "other/live not found" in elsewhere.stderr

    running = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/live")
    assert running.returncode == 2, running.stderr
    assert "default/live is not suspended and has not finished" in running.stderr
    assert await redis_client.zcard("bull:mail:failed") == 3
    preview = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/live", "--dry-run", "-o", "json")
    assert preview.returncode == 0 and json.loads(preview.stdout)["matched"] == 3, preview.stderr

    both = kubectl_requeue(kube, tmp_path, "replay", "--from", "dlqreplay/live", "-f", "x.yaml")
    assert both.returncode == 2 and "use either --from dlqreplay/NAME or -f FILE" in both.stderr


async def test_inspect_and_replay_from_an_object_with_tls_from_secrets(kube: Kube, tmp_path: Path) -> None:
    """spec.redis.tls: the CA and the client certificate (a server that demands one) from Secrets,
    handed to the CLI in its environment; the same object without them cannot connect."""
    server = tmp_path / "server"
    server.mkdir()
    password = "tls-Plugin-7c1e-secret"
    with tls_redis_server(server, password=password, client_certificates=True) as (port, ca_pem):
        cert_pem, key_pem = make_client_certificate(server)
        url = f"rediss://default:{password}@127.0.0.1:{port}/0"
        files = f"?ssl_ca_certs={server / 'ca.crt'}&ssl_certfile={server / 'client.crt'}"
        await make_failed_jobs(
            f"{url}{files}&ssl_keyfile={server / 'client.key'}",
            "secure",
            [JobSpec(name="pdf.render", data={"i": i}, reason="OOM") for i in range(4)],
        )
        kube.kubectl.apply(secret("redis", {"url": url, "ca": ca_pem}, namespace="default"))
        kube.kubectl.apply(secret("redis-client", {"crt": cert_pem, "key": key_pem}, namespace="default"))
        tls = {
            "caSecretRef": {"name": "redis", "key": "ca"},
            "certSecretRef": {"name": "redis-client", "key": "crt"},
            "keySecretRef": {"name": "redis-client", "key": "key"},
        }
        with_tls = replay("secure-fix", "secure", suspend=True)
        with_tls["spec"]["redis"]["tls"] = tls
        kube.kubectl.apply(with_tls)
        kube.kubectl.apply(replay("no-tls", "secure", suspend=True))

        inspected = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/secure-fix", "-o", "json")
        previewed = kubectl_requeue(
            kube, tmp_path, "replay", "--from", "dlqreplay/secure-fix", "--dry-run", "-o", "json"
        )
        bare = kubectl_requeue(kube, tmp_path, "inspect", "--from", "dlqreplay/no-tls", "-o", "json")

    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["total"] == 4
    assert previewed.returncode == 0, previewed.stderr
    assert json.loads(previewed.stdout)["matched"] == 4
    assert bare.returncode == 3, bare.stderr  # without the object's CA the server is not trusted
    assert json.loads(bare.stdout)["error"]["reason"] == "RedisCertificateUntrusted"
    shown = (
        inspected.stdout + inspected.stderr + previewed.stdout + previewed.stderr + bare.stdout + bare.stderr
    )
    assert leaks(shown, password) == []
    assert "PRIVATE KEY" not in shown and key_pem.splitlines()[1] not in shown
