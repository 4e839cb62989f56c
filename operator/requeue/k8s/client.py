"""The Kubernetes API client, configured once per process.

The ``kubernetes`` package keeps its configuration in a process-wide default:
:func:`load_config` fills it from the in-cluster service account when running
in a pod (``KUBERNETES_SERVICE_HOST`` set and non-empty), else from the
kubeconfig (``KUBECONFIG`` or ``~/.kube/config``). Every API object built
afterwards (including :class:`requeue.k8s.secrets.KubeSecrets`'s) uses it.

The client is synchronous: callers run its calls in a worker thread
(``asyncio.to_thread``) so the event loop never blocks on the API server.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Collection
from typing import Any

from requeue.api.conditions import Reason
from requeue.errors import TransientError

__all__ = [
    "KubernetesApiError",
    "api_client",
    "call_api",
    "core_v1",
    "custom_objects",
    "load_config",
    "translate",
    "use_kubeconfig",
]

_lock = threading.Lock()
_loaded = False
#: The one ``ApiClient`` of the process: its connection pool is reused by every call. A new
#: ``CustomObjectsApi()`` without one copies the configuration and opens a new TCP (and TLS)
#: connection each time, which was most of a QueuePolicy's status write at 2,000 queues.
_api_client: Any = None


def load_config() -> None:
    """Configure the client's defaults once (idempotent, thread-safe)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        from kubernetes import config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        _loaded = True


def use_kubeconfig(config_file: str | None, context: str | None) -> None:
    """Configure the client from a kubeconfig and context chosen by the user (``kubectl requeue``):
    their own credentials, not the in-cluster service account. Later calls use it."""
    global _loaded
    with _lock:
        from kubernetes import config

        config.load_kube_config(config_file=config_file, context=context)  # type: ignore[no-untyped-call]
        _loaded = True
        _drop_api_client()


def _drop_api_client() -> None:
    """Forget the shared client (the configuration changed); the next call builds one."""
    global _api_client
    _api_client = None


def api_client() -> Any:
    """The process's shared ``ApiClient`` on the loaded configuration (thread-safe: urllib3's pool is)."""
    global _api_client
    load_config()
    with _lock:
        if _api_client is None:
            from kubernetes import client

            _api_client = client.ApiClient()
        return _api_client


def custom_objects() -> Any:
    """A ``CustomObjectsApi`` on the loaded configuration."""
    from kubernetes import client

    return client.CustomObjectsApi(api_client())


def core_v1() -> Any:
    """A ``CoreV1Api`` on the loaded configuration."""
    from kubernetes import client

    return client.CoreV1Api(api_client())


class KubernetesApiError(TransientError):
    """The Kubernetes API server could not be reached or answered with a server error."""

    reason = Reason.KUBERNETES_API_ERROR


def translate(exc: BaseException, what: str) -> Exception:
    """An API exception as our error tree; the response body (it may echo objects) is never quoted."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        reason = getattr(exc, "reason", None) or ""
        return KubernetesApiError(f"{what}: Kubernetes API answered HTTP {status} {reason}".strip(), delay=5)
    return KubernetesApiError(f"{what}: Kubernetes API unreachable ({type(exc).__name__})", delay=5)


async def call_api(call: Callable[[], object], what: str, *, absent: Collection[int] = (404,)) -> bool:
    """Run the synchronous client ``call`` in a worker thread; False when the API server answers
    with a status in ``absent`` (e.g. 404: the object is gone).

    :param what: what the call does, for the error message (``"deleting dlqreplays ns/name"``).
    :raises KubernetesApiError: any other failure, through :func:`translate`.
    """
    try:
        await asyncio.to_thread(call)
    except Exception as exc:
        if getattr(exc, "status", None) in absent:
            return False
        raise translate(exc, what) from None
    return True
