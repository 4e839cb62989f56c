"""Secret values from Kubernetes Secrets of one namespace (the resource's own), for the operator.

One ``GET`` per read on the API client's session (:mod:`requeue.k8s.client`), on the event loop.
Errors name the Secret and key, never a value: a missing one is
:class:`~requeue.errors.SecretNotFound`, a 403 says which RBAC permission is missing.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

import aiohttp

from requeue.api.base import SecretKeyRef
from requeue.errors import SecretNotFound, TransientError
from requeue.k8s.client import ApiStatusError, request

__all__ = ["KubeSecrets"]


class KubeSecrets:
    """A :class:`~requeue.secrets.SecretSource` reading Secrets of ``namespace`` through the API.

    :param request_timeout: seconds allowed for one API call.
    """

    def __init__(self, namespace: str, *, request_timeout: float = 10.0) -> None:
        if not namespace:
            raise ValueError("KubeSecrets needs the namespace of the resource")
        self.namespace = namespace
        self.request_timeout = request_timeout

    async def get(self, ref: SecretKeyRef) -> str:
        """The decoded value of ``ref.key`` in Secret ``ref.name`` of this namespace."""
        where = f"secret {self.namespace}/{ref.name}"
        path = f"/api/v1/namespaces/{quote(self.namespace, safe='')}/secrets/{quote(ref.name, safe='')}"
        try:
            secret = await request("GET", path, request_timeout=self.request_timeout)
        except (ApiStatusError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc, where) from None
        data = secret.get("data") if isinstance(secret, dict) else None
        data = data if isinstance(data, dict) else {}
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretNotFound(f"{where} has no key {ref.key!r} (keys: {keys})")
        try:
            return base64.b64decode(str(data[ref.key]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretNotFound(f"{where}: key {ref.key!r} is not base64-encoded UTF-8 text") from None

    def _translate(self, exc: Exception, where: str) -> Exception:
        """API errors -> our tree; the response body (which can echo the object) is never quoted."""
        status = exc.status if isinstance(exc, ApiStatusError) else None
        if status == 404:
            return SecretNotFound(f"{where} not found")
        if status in (401, 403):
            return SecretNotFound(
                f"{where}: reading it is forbidden (HTTP {status}); grant the operator's service account "
                f'RBAC "get" on "secrets" in namespace {self.namespace}'
            )
        if isinstance(exc, ApiStatusError):
            return TransientError(f"{where}: Kubernetes API answered HTTP {status} {exc.reason}".strip())
        return TransientError(f"{where}: Kubernetes API unreachable ({type(exc).__name__})")
