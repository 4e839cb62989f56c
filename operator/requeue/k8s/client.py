"""requeue's own requests to the Kubernetes API: a few JSON calls over aiohttp (kopf's own HTTP
library), on the connection :mod:`requeue.k8s.config` loads once per process.

Status writes, Secret reads, annotations, owned DLQReplays and deletions are all the operator
asks besides what kopf does; an async client keeps them on the event loop (no worker thread
per call, as the synchronous ``kubernetes`` package needed) and one session per event loop
reuses its connections (a new TCP and TLS connection per status write was most of its cost at
2,000 queues).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from requeue.api.conditions import Reason
from requeue.errors import TransientError
from requeue.k8s.config import ApiConnection, load_connection, user_connection

__all__ = [
    "MERGE_PATCH",
    "ApiStatusError",
    "KubernetesApiError",
    "call_api",
    "close",
    "connection",
    "custom_object_path",
    "load_config",
    "request",
    "translate",
    "use_kubeconfig",
]

MERGE_PATCH = "application/merge-patch+json"

_lock = threading.Lock()
_connection: ApiConnection | None = None
#: One session per event loop (the operator has one; tests and the kubectl plugin start others),
#: with the connection it was made for (its TLS context is the connection's).
_sessions: dict[asyncio.AbstractEventLoop, tuple[ApiConnection, aiohttp.ClientSession]] = {}


class KubernetesApiError(TransientError):
    """The Kubernetes API server could not be reached or answered with a server error."""

    reason = Reason.KUBERNETES_API_ERROR


class ApiStatusError(Exception):
    """The API server answered with an error status; its body (which may echo objects) is dropped."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status
        self.reason = reason


def load_config() -> ApiConnection:
    """The process's connection: the service account in a pod, else the kubeconfig (once)."""
    global _connection
    with _lock:
        if _connection is None:
            _connection = load_connection()
        return _connection


def use_kubeconfig(config_file: str | None, context: str | None) -> ApiConnection:
    """Use a kubeconfig and context chosen by the user (``kubectl requeue``): their own
    credentials, found as kubectl finds them. Later calls use it."""
    global _connection
    with _lock:
        _connection = user_connection(config_file, context)
        return _connection


def connection() -> ApiConnection:
    return _connection or load_config()


def custom_object_path(group: str, version: str, namespace: str, plural: str, name: str = "") -> str:
    """``/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]`` with each segment escaped."""
    path = f"/apis/{group}/{version}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


async def request(
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    request_timeout: float = 10.0,
) -> Any:
    """One API call; the decoded JSON answer. A 401 with a credential that can be renewed (a
    token file, an exec plugin) renews it and tries once more, as kubectl does.

    :raises ApiStatusError: the server answered 4xx/5xx.
    :raises aiohttp.ClientError, TimeoutError, OSError: it could not be reached.
    """
    conn = connection()
    data = None if body is None else json.dumps(body, separators=(",", ":"))
    for renewed in (False, True):
        headers = {"Accept": "application/json"}
        auth = await conn.authorization()
        if auth:
            headers["Authorization"] = auth
        if data is not None:
            headers["Content-Type"] = content_type
        async with (await _session(conn)).request(
            method,
            conn.server + path,
            data=data,
            headers=headers,
            proxy=conn.proxy_url,
            server_hostname=conn.tls_server_name,
            # per connect and per read, not in total: waiting for a pooled connection while 200
            # policies start at once is not the API server being slow
            timeout=aiohttp.ClientTimeout(sock_connect=request_timeout, sock_read=request_timeout),
        ) as resp:
            if resp.status == 401 and not renewed and conn.forget_credentials():
                continue
            if resp.status >= 400:
                raise ApiStatusError(resp.status, resp.reason or "")
            text = await resp.text()
            return json.loads(text) if text.strip() else None
    raise AssertionError("unreachable: the second attempt returns or raises")


async def _session(conn: ApiConnection) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    for finished in [lp for lp in _sessions if lp.is_closed()]:
        del _sessions[finished]  # a finished loop's session: its connections died with the loop
    made = _sessions.get(loop)
    if made is not None and made[0] is conn and not made[1].closed:
        return made[1]
    if made is not None:  # another kubeconfig or context since: its TLS context may differ
        await made[1].close()
    connector = aiohttp.TCPConnector(ssl=conn.ssl_context() or True, limit=16)
    session = aiohttp.ClientSession(connector=connector, trust_env=True)  # HTTPS_PROXY, NO_PROXY
    _sessions[loop] = (conn, session)
    return session


async def close() -> None:
    """Close this event loop's session (the operator's cleanup, the end of a CLI command)."""
    made = _sessions.pop(asyncio.get_running_loop(), None)
    if made is not None:
        await made[1].close()


def translate(exc: BaseException, what: str) -> Exception:
    """An API failure as our error tree; the response body (it may echo objects) is never quoted."""
    status = getattr(exc, "status", None)
    if isinstance(exc, ApiStatusError) and isinstance(status, int):
        return KubernetesApiError(
            f"{what}: Kubernetes API answered HTTP {status} {exc.reason}".strip(), delay=5
        )
    return KubernetesApiError(f"{what}: Kubernetes API unreachable ({type(exc).__name__})", delay=5)


async def call_api(
    method: str,
    path: str,
    what: str,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    absent: Collection[int] = (404,),
    request_timeout: float = 10.0,
) -> bool:
    """A write: False when the API server answers with a status in ``absent`` (404: the object is gone).

    :param what: what the call does, for the error message (``"deleting dlqreplays ns/name"``).
    :raises KubernetesApiError: any other failure, through :func:`translate`.
    """
    try:
        await request(method, path, body=body, content_type=content_type, request_timeout=request_timeout)
    except ApiStatusError as exc:
        if exc.status in absent:
            return False
        raise translate(exc, what) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise translate(exc, what) from None
    return True
