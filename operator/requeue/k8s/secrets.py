"""Secret values from Kubernetes Secrets of one namespace (the resource's own), for the operator.

The ``kubernetes`` client is synchronous, so every read runs in a worker
thread and never blocks the event loop. Errors name the Secret and key,
never a value: a missing one is :class:`~requeue.errors.SecretNotFound`, a
403 says which RBAC permission is missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from requeue.api.base import SecretKeyRef
from requeue.errors import SecretNotFound, TransientError

__all__ = ["KubeSecrets"]


class KubeSecrets:
    """A :class:`~requeue.secrets.SecretSource` reading Secrets of ``namespace`` through the API.

    :param api: a ``kubernetes.client.CoreV1Api``; by default one built from the
        already loaded configuration (kopf's login, in-cluster or kubeconfig).
    :param request_timeout: seconds allowed for one API call.
    """

    def __init__(self, namespace: str, *, api: Any = None, request_timeout: float = 10.0) -> None:
        if not namespace:
            raise ValueError("KubeSecrets needs the namespace of the resource")
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            from requeue.k8s.client import core_v1

            self._api = core_v1()
        return self._api

    async def get(self, ref: SecretKeyRef) -> str:
        """The decoded value of ``ref.key`` in Secret ``ref.name`` of this namespace."""
        where = f"secret {self.namespace}/{ref.name}"
        try:
            secret = await asyncio.to_thread(
                self.api.read_namespaced_secret,
                ref.name,
                self.namespace,
                _request_timeout=self.request_timeout,
            )
        except Exception as exc:
            raise self._translate(exc, where) from None
        data: dict[str, str] = dict(getattr(secret, "data", None) or {})
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretNotFound(f"{where} has no key {ref.key!r} (keys: {keys})")
        try:
            return base64.b64decode(data[ref.key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretNotFound(f"{where}: key {ref.key!r} is not base64-encoded UTF-8 text") from None

    def _translate(self, exc: Exception, where: str) -> Exception:
        """API errors -> our tree; the response body (which can echo the object) is never quoted."""
        status = getattr(exc, "status", None)
        if status == 404:
            return SecretNotFound(f"{where} not found")
        if status in (401, 403):
            return SecretNotFound(
                f"{where}: reading it is forbidden (HTTP {status}); grant the operator's service account "
                f'RBAC "get" on "secrets" in namespace {self.namespace}'
            )
        if isinstance(status, int):
            reason = getattr(exc, "reason", None) or ""
            return TransientError(f"{where}: Kubernetes API answered HTTP {status} {reason}".strip())
        return TransientError(f"{where}: Kubernetes API unreachable ({type(exc).__name__})")
