"""Where the Kubernetes API is and how to log in: the pod's service account or a kubeconfig.

requeue talks to the API server over a small client of its own (:mod:`requeue.k8s.client`)
instead of the ``kubernetes`` package: that package and its 600 modules were ~20 MiB of every
operator's memory (kopf imports it whenever it is installed) for five kinds of request. This
module is the one place that reads credentials, for requeue's own requests and for kopf's
(:func:`requeue.handlers.main.login`), so both always talk to the same cluster as the same user.

Supported, as ``kubectl`` does: in-cluster service account (the token file is read again as
the kubelet rotates it), kubeconfig files (``KUBECONFIG`` with several paths, first wins, or
``~/.kube/config``) with a context chosen or current; server CA as file or data or
``insecure-skip-tls-verify``; client certificates as files or data; a bearer token or token
file; basic auth; ``exec`` credential plugins (``aws eks get-token``, ``gke-gcloud-auth-plugin``,
``kubelogin``); a legacy ``auth-provider``'s cached ``access-token``; ``proxy-url``. Not
supported: refreshing a legacy ``auth-provider`` (run ``kubectl`` once to refresh it) and
interactive exec plugins (an operator cannot prompt).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from requeue.api.conditions import Reason
from requeue.errors import SpecInvalid, TransientError

__all__ = [
    "ApiConnection",
    "ExecPluginFailed",
    "KubeconfigInvalid",
    "from_kubeconfig",
    "in_cluster",
    "load_connection",
    "user_connection",
]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: Seconds a token read from a file (the service account's, or ``tokenFile``) is reused: the
#: kubelet rotates projected tokens well before they expire (the kubernetes client's 60 s too).
TOKEN_FILE_REREAD = 60.0
#: Seconds an exec plugin gets to print its credential.
EXEC_TIMEOUT = 60.0


class KubeconfigInvalid(SpecInvalid):
    """The kubeconfig (or the service account) does not say how to reach and log in to a cluster."""


@dataclass
class ApiConnection:
    """The API server's address, how to trust it and how to log in. Secrets live only here, and
    never in its ``repr``."""

    server: str
    namespace: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    #: The name the server's certificate must carry when it is not the URL's host (``tls-server-name``).
    tls_server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec_spec: Mapping[str, Any] | None = field(default=None, repr=False)
    #: Where the kubeconfig was: an exec plugin's relative command is found from there.
    base_dir: Path | None = None
    proxy_url: str | None = None
    #: The cached token and until when (monotonic) it is used; when the exec plugin's expires.
    _cached: tuple[str | None, float, datetime | None] = field(default=(None, 0.0, None), repr=False)
    _refresh: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an ``https://`` server (None for plain HTTP, as the dev stand-in).
        Data wins over a file, as in client-go."""
        if not self.server.startswith("https://"):
            return None
        ca_data = self.ca_data.decode("ascii") if self.ca_data else None
        ctx = ssl.create_default_context(cafile=None if ca_data else self.ca_file, cadata=ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_data and self.key_data:
            _load_chain_from_memory(ctx, self.cert_data, self.key_data)
        elif self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    async def authorization(self) -> str | None:
        """The ``Authorization`` header's value now (a token file re-read, an exec plugin re-run
        when its credential expires), or None for client certificates alone."""
        if self.token:
            return f"Bearer {self.token}"
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        if not (self.token_file or self.exec_spec):
            return None
        async with self._refresh_lock():  # 200 daemons starting at once run the plugin once
            value, until, _expires = self._cached
            if value is not None and time.monotonic() < until:
                return value
            if self.token_file:
                token = await asyncio.to_thread(Path(self.token_file).read_text, "utf-8")
                self._cached = (f"Bearer {token.strip()}", time.monotonic() + TOKEN_FILE_REREAD, None)
            elif self.exec_spec:
                self._cached = await _run_exec(self.exec_spec, self)
            return self._cached[0]

    @property
    def expires(self) -> datetime | None:
        """When the exec plugin's current credential expires (kopf logs in again then)."""
        return self._cached[2]

    def forget_credentials(self) -> bool:
        """Drop a cached token (the API answered 401): the next request reads or runs it again.
        False when there is nothing to renew (a static token, a certificate)."""
        renewable = bool(self.token_file or self.exec_spec) and not self.token
        self._cached = (None, 0.0, None)
        return renewable

    def _refresh_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh[0] is not loop:
            self._refresh = (loop, asyncio.Lock())
        return self._refresh[1]


def _load_chain_from_memory(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Python's ``ssl`` loads a client certificate and key only from files: private ones (0600)
    that live for the call and are removed at once."""
    with tempfile.TemporaryDirectory(prefix="requeue-kube-") as private:
        cert_file, key_file = Path(private, "client.crt"), Path(private, "client.key")
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        ctx.load_cert_chain(cert_file, key_file)


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> ApiConnection:
    """The operator's connection: the service account inside a pod (``KUBERNETES_SERVICE_HOST``
    set, no kubeconfig asked for), else the kubeconfig and context.

    :raises KubeconfigInvalid: neither says how to reach a cluster (the message names the file).
    """
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster()
    return from_kubeconfig(kubeconfig, context)


def user_connection(kubeconfig: str | None = None, context: str | None = None) -> ApiConnection:
    """A person's connection (``kubectl requeue``), as kubectl finds it: the kubeconfig first,
    the pod's service account only when there is no kubeconfig at all (a CI runner or a
    toolbox pod with its own kubeconfig talks to that cluster, not its own)."""
    if kubeconfig is None and context is None and not _kubeconfig_exists():
        return in_cluster()
    return from_kubeconfig(kubeconfig, context)


def _kubeconfig_exists() -> bool:
    raw = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return any(Path(p).expanduser().is_file() for p in raw.split(os.pathsep) if p.strip())


def in_cluster() -> ApiConnection:
    """The pod's service account: the API server of ``KUBERNETES_SERVICE_HOST``/``_PORT``."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT / "token"
    if not host or not token.exists():
        raise KubeconfigInvalid(
            f"in-cluster login: KUBERNETES_SERVICE_HOST or {token} is missing (is "
            "automountServiceAccountToken false?)"
        )
    namespace = SERVICE_ACCOUNT / "namespace"
    ca = SERVICE_ACCOUNT / "ca.crt"
    return ApiConnection(
        server=f"https://{_bracketed(host)}:{port}",
        namespace=namespace.read_text("utf-8").strip() if namespace.exists() else None,
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(token),
    )


def from_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> ApiConnection:
    """The connection of ``context`` (default: the current one) in ``kubeconfig`` (default:
    ``KUBECONFIG``, several files merged with the first one winning, as kubectl does)."""
    paths = _kubeconfig_paths(kubeconfig)
    merged: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    current: str | None = None
    base: dict[tuple[str, str], Path] = {}
    for path in paths:
        doc = _read_yaml(path)
        current = current or doc.get("current-context") or None
        for section, entries in merged.items():
            for item in doc.get(section) or []:
                if (
                    isinstance(item, dict)
                    and isinstance(item.get("name"), str)
                    and item["name"] not in entries
                ):
                    entries[item["name"]] = item.get(section[:-1]) or {}
                    base[(section, item["name"])] = path.parent
    where = ", ".join(str(p) for p in paths)
    chosen = context or current
    if not chosen:
        raise KubeconfigInvalid(f"kubeconfig {where}: no current-context; pass --context")
    ctx = _entry(merged, "contexts", chosen, where)
    cluster = _entry(merged, "clusters", str(ctx.get("cluster")), where)
    user = _entry(merged, "users", str(ctx.get("user")), where) if ctx.get("user") else {}
    cluster_dir = base[("clusters", str(ctx.get("cluster")))]
    user_dir = base.get(("users", str(ctx.get("user"))), cluster_dir)
    if not cluster.get("server"):
        raise KubeconfigInvalid(f"kubeconfig {where}: cluster {ctx.get('cluster')!r} has no server")
    provider = (user.get("auth-provider") or {}).get("config") or {}
    ca_data = _data(cluster.get("certificate-authority-data"), "certificate-authority-data", where)
    ca_file = None if ca_data else _path(cluster.get("certificate-authority"), cluster_dir)
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if insecure and (ca_data or ca_file):
        raise KubeconfigInvalid(
            f"kubeconfig {where}: cluster {ctx.get('cluster')!r} sets insecure-skip-tls-verify and a "
            "certificate authority; keep one (kubectl refuses both too)"
        )
    return ApiConnection(
        server=str(cluster["server"]).rstrip("/"),
        namespace=ctx.get("namespace") or None,
        ca_file=ca_file,
        ca_data=ca_data,
        insecure=insecure,
        tls_server_name=cluster.get("tls-server-name") or None,
        cert_file=_path(user.get("client-certificate"), user_dir),
        key_file=_path(user.get("client-key"), user_dir),
        cert_data=_data(user.get("client-certificate-data"), "client-certificate-data", where),
        key_data=_data(user.get("client-key-data"), "client-key-data", where),
        token=user.get("token") or provider.get("access-token") or None,
        token_file=_path(user.get("tokenFile"), user_dir),
        username=user.get("username"),
        password=user.get("password"),
        exec_spec=user.get("exec") or None,
        base_dir=user_dir,
        proxy_url=cluster.get("proxy-url") or None,
    )


def _kubeconfig_paths(kubeconfig: str | None) -> list[Path]:
    raw = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    paths = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    found = [p for p in paths if p.is_file()]
    if not found:
        raise KubeconfigInvalid(f"kubeconfig {raw}: no such file; set KUBECONFIG or pass --kubeconfig")
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KubeconfigInvalid(f"kubeconfig {path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise KubeconfigInvalid(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    return doc


def _entry(merged: dict[str, dict[str, Any]], section: str, name: str, where: str) -> dict[str, Any]:
    entry = merged[section].get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(merged[section])) or "none"
        raise KubeconfigInvalid(f"kubeconfig {where}: no {section[:-1]} {name!r} (known: {known})")
    return entry


def _path(value: object, relative_to: Path) -> str | None:
    """A file named in a kubeconfig; relative paths are relative to that kubeconfig, as kubectl has it."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else relative_to / path)


def _data(value: object, what: str, where: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigInvalid(f"kubeconfig {where}: {what} is not base64") from None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ExecPluginFailed(TransientError):
    """A kubeconfig exec plugin did not give a credential this time (it may next time)."""

    reason = Reason.KUBERNETES_API_ERROR


async def _run_exec(
    spec: Mapping[str, Any], conn: ApiConnection
) -> tuple[str | None, float, datetime | None]:
    """Run a kubeconfig ``exec`` plugin (client.authentication.k8s.io); its token, until when
    (monotonic) it is reused, and when it expires. Its stderr is never shown (it may quote
    credentials); a client certificate from a plugin is not supported."""
    command = str(spec.get("command") or "")
    api_version = spec.get("apiVersion")
    if not command or not api_version:
        raise KubeconfigInvalid("kubeconfig: the user's exec needs a command and an apiVersion")
    if "/" in command and not Path(command).is_absolute() and conn.base_dir is not None:
        command = str(conn.base_dir / command)  # relative to the kubeconfig, as client-go has it
    env = dict(os.environ)
    for var in spec.get("env") or []:
        if isinstance(var, dict):
            env[str(var.get("name"))] = str(var.get("value"))
    info: dict[str, Any] = {"apiVersion": api_version, "kind": "ExecCredential"}
    info["spec"] = {"interactive": False}
    if spec.get("provideClusterInfo"):
        cluster: dict[str, Any] = {"server": conn.server, "insecure-skip-tls-verify": conn.insecure}
        if conn.ca_data:
            cluster["certificate-authority-data"] = base64.b64encode(conn.ca_data).decode("ascii")
        info["spec"]["cluster"] = cluster
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    try:
        proc = await asyncio.create_subprocess_exec(
            command,
            *[str(a) for a in spec.get("args") or []],
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        failed = f"kubeconfig exec plugin {command}: cannot run it ({type(exc).__name__})"
        raise KubeconfigInvalid(failed) from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ExecPluginFailed(f"kubeconfig exec plugin {command}: no answer in {EXEC_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        raise ExecPluginFailed(f"kubeconfig exec plugin {command} exited {proc.returncode}")
    try:
        status = json.loads(out)["status"]
        token = status.get("token")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ExecPluginFailed(f"kubeconfig exec plugin {command}: its output is no ExecCredential") from None
    if not token:
        raise KubeconfigInvalid(
            f"kubeconfig exec plugin {command}: gave no token (a client certificate from a plugin is "
            "not supported)"
        )
    expires = _expiry(status.get("expirationTimestamp"))
    reuse = float("inf") if expires is None else max(0.0, expires.timestamp() - time.time() - 60.0)
    return f"Bearer {token}", time.monotonic() + reuse, expires


def _expiry(expires: object) -> datetime | None:
    """An ExecCredential's ``expirationTimestamp``; None without one (reused, as kubectl does,
    until the API answers 401), the epoch when it cannot be read (run again next time)."""
    if not isinstance(expires, str):
        return None
    try:
        return datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
