"""requeue's own Kubernetes client, against a real HTTP(S) server standing in for the API: what it
sends (path, credentials), what it makes of each answer, and every way a kubeconfig logs in.

The e2e tests drive the same client through the operator on the devcluster stand-in (plain HTTP,
a token); this file covers what that stand-in cannot: TLS with a private CA, client
certificates, exec plugins, token files, merged kubeconfigs, and the API's error answers.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import os
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from requeue.api import SecretKeyRef
from requeue.errors import RequeueError, SecretNotFound, TransientError
from requeue.handlers.main import LOGIN_PRIORITY, connection_info
from requeue.k8s import client, config
from requeue.k8s.config import ExecPluginFailed, KubeconfigInvalid
from requeue.k8s.secrets import KubeSecrets
from requeue.k8s.status import patch_status
from support.gates import make_certificates
from support.redis_server import free_port
from support.tls_redis import make_client_certificate

REF = SecretKeyRef(name="cgb", key="bearer")
EXEC_API = "client.authentication.k8s.io/v1"
VALUE = 'tok-3f9a1c/?#@:%"\\'
LEAK = "body-secret-9d1e"  # what an error answer's body carries: never shown


@dataclass
class FakeApi:
    """Serves Secrets of its dict and records each request's path, Authorization and client cert."""

    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    status: int | None = None  # answer every request with this error status instead
    seen: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    accept_tokens: set[str] | None = None  # else every token is fine

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.seen.append((request.method, request.path, auth, bool(peer)))
        if self.accept_tokens is not None and (auth or "").removeprefix("Bearer ") not in self.accept_tokens:
            return web.json_response({"message": LEAK}, status=401)
        if self.status is not None:
            return web.json_response({"message": f"secrets forbidden {LEAK}"}, status=self.status)
        if request.method == "PATCH":
            return web.json_response(await request.json())
        data = self.secrets.get((request.match_info["ns"], request.match_info["name"]))
        if data is None:
            return web.json_response({"message": LEAK}, status=404)
        return web.json_response({"kind": "Secret", "data": data})


@asynccontextmanager
async def serve(api: FakeApi, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/secrets/{name}", api.handle)
    app.router.add_patch("/apis/requeue.dev/v1alpha1/namespaces/{ns}/{plural}/{name}/status", api.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        yield f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def kubeconfig(path: Path, server: str, user: dict[str, Any], **cluster: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "c", "user": "u", "namespace": "payments"}}
                ],
            }
        )
    )
    return path


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@pytest.fixture(autouse=True)
async def fresh_client() -> AsyncIterator[None]:
    """Each test loads its own kubeconfig and closes its session."""
    yield
    await client.close()
    client._connection = None


@pytest.fixture
def exec_plugin(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A real exec credential plugin: prints a new token per run (token-1, token-2, ...), with the
    expiry in $EXPIRES; counts its runs in a file."""
    runs = tmp_path / "runs"
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        "assert json.loads(os.environ['KUBERNETES_EXEC_INFO'])['kind'] == 'ExecCredential'\n"
        "status = {'token': f'token-{n}'}\n"
        "if os.environ.get('EXPIRES'): status['expirationTimestamp'] = os.environ['EXPIRES']\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',"
        " 'status': status}))\n"
    )
    yield script, runs


# ---------------------------------------------------------------- Secrets and the API's answers


async def test_a_secret_is_read_from_its_namespace_with_the_kubeconfigs_token(tmp_path: Path) -> None:
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE), "other": b64("x")}})
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, {"token": "t0k"})), None)
        assert await KubeSecrets("payments").get(REF) == VALUE
    assert api.seen == [("GET", "/api/v1/namespaces/payments/secrets/cgb", "Bearer t0k", False)]


async def test_each_error_answer_has_its_own_message_and_never_quotes_the_body(tmp_path: Path) -> None:
    api = FakeApi(secrets={("payments", "cgb"): {"token": b64(VALUE), "bearer": "!!not base64!!"}})
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, {"token": "t0k"})), None)
        expected: list[tuple[SecretKeyRef, int | None, type[RequeueError], str]] = [
            (SecretKeyRef(name="gone", key="k"), None, SecretNotFound, "secret payments/gone not found"),
            (
                SecretKeyRef(name="cgb", key="nope"),
                None,
                SecretNotFound,
                "has no key 'nope' (keys: bearer, token)",
            ),
            (REF, None, SecretNotFound, "key 'bearer' is not base64-encoded UTF-8 text"),
            (
                REF,
                403,
                SecretNotFound,
                'forbidden (HTTP 403); grant the operator\'s service account RBAC "get"',
            ),
            (
                REF,
                503,
                TransientError,
                "secret payments/cgb: Kubernetes API answered HTTP 503 Service Unavailable",
            ),
        ]
        for ref, status, kind, message in expected:
            api.status = status
            with pytest.raises(kind) as caught:
                await KubeSecrets("payments").get(ref)
            assert message in caught.value.message, caught.value.message
            assert LEAK not in caught.value.message and VALUE not in caught.value.message
        api.status = 503
        with pytest.raises(client.KubernetesApiError) as failed:
            await patch_status("dlqreplays", "payments", "r1", {"phase": "Replaying"})
        assert failed.value.message == (
            "writing status of dlqreplays payments/r1: Kubernetes API answered HTTP 503 Service Unavailable"
        )
    # and nothing listening: transient, says so
    with pytest.raises(TransientError) as caught:
        await KubeSecrets("payments").get(REF)
    assert "Kubernetes API unreachable (ClientConnectorError)" in caught.value.message


async def test_a_status_write_is_a_merge_patch_of_the_status_subresource(tmp_path: Path) -> None:
    api = FakeApi()
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, {"token": "t0k"})), None)
        assert await patch_status("dlqreplays", "payments", "r1", {"phase": "Replaying", "message": None})
    assert api.seen == [("PATCH", "/apis/requeue.dev/v1alpha1/namespaces/payments/dlqreplays/r1/status",
                         "Bearer t0k", False)]  # fmt: skip


# ---------------------------------------------------------------- TLS


async def test_tls_with_the_kubeconfigs_ca_data_and_client_certificate_data(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    client_pem, key_pem = make_client_certificate(tmp_path)
    tls = certs.server_context()
    tls.verify_mode = ssl.CERT_REQUIRED  # the API server demands a client certificate its CA signed
    tls.load_verify_locations(cadata=certs.ca_pem)
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE)}})
    async with serve(api, tls) as url:
        user = {"client-certificate-data": b64(client_pem), "client-key-data": b64(key_pem)}
        config = kubeconfig(tmp_path / "kc", url, user, **{"certificate-authority-data": b64(certs.ca_pem)})
        client.use_kubeconfig(str(config), None)
        assert await KubeSecrets("payments").get(REF) == VALUE
        assert api.seen[-1][2:] == (None, True)  # no token; the client certificate was shown
        assert glob.glob(os.path.join(tempfile.gettempdir(), "requeue-kube-*")) == []  # no key on disk
        await client.close()

        # the same server without the CA: refused, and said so
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc2", url, user)), None)
        with pytest.raises(TransientError) as caught:
            await KubeSecrets("payments").get(REF)
        assert "Kubernetes API unreachable (ClientConnectorCertificateError)" in caught.value.message


async def test_certificate_files_are_relative_to_the_kubeconfig_and_insecure_skips_the_ca(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path)
    make_client_certificate(tmp_path)
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE)}})
    async with serve(api, certs.server_context()) as url:
        user = {"client-certificate": "client.crt", "client-key": "client.key", "token": "t0k"}
        client.use_kubeconfig(
            str(kubeconfig(tmp_path / "kc", url, user, **{"certificate-authority": "ca.crt"})), None
        )
        assert await KubeSecrets("payments").get(REF) == VALUE
        await client.close()
        client.use_kubeconfig(
            str(kubeconfig(tmp_path / "kc2", url, {}, **{"insecure-skip-tls-verify": True})), None
        )
        assert await KubeSecrets("payments").get(REF) == VALUE


# ---------------------------------------------------------------- exec plugins and token files


async def test_an_exec_plugins_token_is_reused_until_it_expires_or_is_refused(
    tmp_path: Path, exec_plugin: tuple[Path, Path]
) -> None:
    script, runs = exec_plugin
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE)}}, accept_tokens={"token-1"})
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "env": [{"name": "EXPIRES", "value": soon}],
            "interactiveMode": "Never",
        }
    }
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, user)), None)
        for _ in range(3):
            assert await KubeSecrets("payments").get(REF) == VALUE
        assert runs.read_text() == "1"  # one run for three requests
        api.accept_tokens = {"token-2"}  # the cluster revoked token-1: a 401, the plugin runs again
        assert await KubeSecrets("payments").get(REF) == VALUE
        api.accept_tokens = set()  # and a credential refused even when fresh is an error
        with pytest.raises(SecretNotFound, match=r"forbidden \(HTTP 401\)"):
            await KubeSecrets("payments").get(REF)
    sent = [auth for *_, auth, _peer in api.seen]
    assert sent == ["Bearer token-1"] * 4 + ["Bearer token-2", "Bearer token-2", "Bearer token-3"]


async def test_an_exec_plugin_that_fails_is_named_without_its_output(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(f"import sys; print('password={LEAK}', file=sys.stderr); sys.exit(3)\n")
    user = {"exec": {"apiVersion": EXEC_API, "command": sys.executable, "args": [str(script)]}}
    client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", user)), None)
    with pytest.raises(ExecPluginFailed) as caught:  # transient: the next evaluation runs it again
        await KubeSecrets("payments").get(REF)
    assert caught.value.message == f"kubeconfig exec plugin {sys.executable} exited 3"
    # an exec entry without its apiVersion is refused, as client-go does
    user = {"exec": {"command": sys.executable, "args": [str(script)]}}
    client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", user)), None)
    with pytest.raises(KubeconfigInvalid, match="needs a command and an apiVersion"):
        await KubeSecrets("payments").get(REF)


async def test_many_requests_at_once_run_the_plugin_once(
    tmp_path: Path, exec_plugin: tuple[Path, Path]
) -> None:
    """200 policies starting together must not start 200 ``aws eks get-token``."""
    script, runs = exec_plugin
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE)}})
    user = {"exec": {"apiVersion": EXEC_API, "command": sys.executable, "args": [str(script)]}}
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, user)), None)
        got = await asyncio.gather(*(KubeSecrets("payments").get(REF) for _ in range(20)))
    assert got == [VALUE] * 20 and runs.read_text() == "1"


async def test_a_token_file_is_read_again_on_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    api = FakeApi(secrets={("payments", "cgb"): {"bearer": b64(VALUE)}}, accept_tokens={"first"})
    async with serve(api) as url:
        client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", url, {"tokenFile": str(token)})), None)
        assert await KubeSecrets("payments").get(REF) == VALUE
        token.write_text("second\n")  # the kubelet rotated it: a 401, the file is read again
        api.accept_tokens = {"second"}
        assert await KubeSecrets("payments").get(REF) == VALUE
    assert [auth for *_, auth, _peer in api.seen] == ["Bearer first", "Bearer first", "Bearer second"]


# ---------------------------------------------------------------- kubeconfig files and kopf's login


async def test_merged_kubeconfigs_first_wins_and_context_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(tmp_path / "a", "http://127.0.0.1:1111", {"token": "from-a"})
    second = yaml.safe_load(
        kubeconfig(tmp_path / "b", "http://127.0.0.1:2222", {"token": "from-b"}).read_text()
    )
    second["current-context"] = "other"
    second["contexts"].append({"name": "other", "context": {"cluster": "c", "user": "u"}})
    (tmp_path / "b").write_text(yaml.safe_dump(second))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'b'}:{tmp_path / 'absent'}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    conn = client.use_kubeconfig(None, None)  # a's current context, a's cluster and user
    assert (conn.server, conn.token, conn.namespace) == ("http://127.0.0.1:1111", "from-a", "payments")
    conn = client.use_kubeconfig(None, "other")  # b's context, but "c" and "u" are a's (first wins)
    assert (conn.server, conn.token, conn.namespace) == ("http://127.0.0.1:1111", "from-a", None)
    with pytest.raises(KubeconfigInvalid, match=r"no context 'typo' \(known: other, test\)"):
        client.use_kubeconfig(None, "typo")
    with pytest.raises(KubeconfigInvalid, match="no such file; set KUBECONFIG or pass --kubeconfig"):
        client.use_kubeconfig(str(tmp_path / "absent"), None)
    (tmp_path / "junk").write_text("- not\n- a mapping\n")
    with pytest.raises(KubeconfigInvalid, match="not a kubeconfig"):
        client.use_kubeconfig(str(tmp_path / "junk"), None)


async def test_kopf_logs_in_with_the_same_credentials(tmp_path: Path, exec_plugin: tuple[Path, Path]) -> None:
    script, runs = exec_plugin
    port = free_port()
    user = {"exec": {"apiVersion": EXEC_API, "command": sys.executable, "args": [str(script)]}}
    client.use_kubeconfig(str(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}", user)), None)
    info = await connection_info()
    assert (info.server, info.token, info.scheme) == (f"http://127.0.0.1:{port}", "token-1", "Bearer")
    assert (info.default_namespace, info.priority) == ("payments", LOGIN_PRIORITY)
    info = await connection_info()  # kopf calls it again after a 401: a fresh credential
    assert info.token == "token-2" and runs.read_text() == "2"
    assert info.expiration is None  # the plugin said no expiry: kopf waits for a 401
    assert "token-2" not in repr(client.connection())


async def test_kopf_gets_the_same_ca_and_client_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    cert_pem, key_pem = make_client_certificate(tmp_path)
    user = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    config = kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:1", user, **{"certificate-authority-data": b64(certs.ca_pem)}
    )
    client.use_kubeconfig(str(config), None)
    info = await connection_info()
    assert (info.ca_data, info.certificate_data, info.private_key_data) == (
        certs.ca_pem.encode(), cert_pem.encode(), key_pem.encode()
    )  # fmt: skip
    assert info.token is None and info.ca_path is None and info.certificate_path is None
    assert key_pem not in repr(client.connection())


async def test_insecure_with_a_ca_is_refused(tmp_path: Path) -> None:
    cluster = {"insecure-skip-tls-verify": True, "certificate-authority-data": b64("pem")}
    with pytest.raises(KubeconfigInvalid, match="insecure-skip-tls-verify and a certificate authority"):
        client.use_kubeconfig(
            str(kubeconfig(tmp_path / "kc", "https://h:1", {"token": "t"}, **cluster)), None
        )


async def test_the_plugin_prefers_a_kubeconfig_and_the_operator_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubectl requeue in a CI pod with its own kubeconfig talks to that cluster; the operator in its
    pod uses its service account (its token file read again after a 401)."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token\n")
    (account / "namespace").write_text("requeue-system")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {"token": "mine"}))
    )

    mine = client.use_kubeconfig(None, None)
    assert (mine.server, mine.token, mine.namespace) == ("http://127.0.0.1:1", "mine", "payments")
    operator = config.load_connection()  # what `requeue run` loads (client.load_config, once)
    assert (operator.server, operator.namespace, operator.ca_file) == (
        "https://[fd00::1]:6443",
        "requeue-system",
        None,
    )
    assert await operator.authorization() == "Bearer sa-token"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # no kubeconfig: the plugin uses the pod's
    assert client.use_kubeconfig(None, None).namespace == "requeue-system"
