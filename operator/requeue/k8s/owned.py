"""Objects one of ours creates and owns: owner references and an idempotent create.

A QueuePolicy's auto replays are real DLQReplay objects owned by the policy
(``controller: true``, ``blockOwnerDeletion: true``), so ``kubectl get dlqr``
shows them, ``kubectl describe`` names their owner, and the API server's
garbage collector deletes them with the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from requeue.api.resources import API_VERSION, GROUP, VERSION
from requeue.k8s.client import call_api, custom_object_path

__all__ = ["Owner", "create_owned"]


@dataclass(frozen=True)
class Owner:
    """The object that owns (and controls) another one; same namespace."""

    kind: str
    name: str
    uid: str
    api_version: str = API_VERSION

    def reference(self) -> dict[str, Any]:
        """The ``metadata.ownerReferences`` entry."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


async def create_owned(
    plural: str,
    kind: str,
    namespace: str,
    name: str,
    owner: Owner,
    *,
    spec: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    request_timeout: float = 10.0,
) -> bool:
    """Create ``name`` in ``namespace`` owned by ``owner``; False when it already existed (409).

    The name is deterministic on the caller's side, so a retried or repeated
    create never makes a second object.

    :raises KubernetesApiError: the API server is unreachable or refused the object.
    """
    body = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
            "ownerReferences": [owner.reference()],
        },
        "spec": dict(spec),
    }

    return await call_api(
        "POST",
        custom_object_path(GROUP, VERSION, namespace, plural),
        f"creating {plural} {namespace}/{name}",
        body=body,
        absent=(409,),
        request_timeout=request_timeout,
    )
