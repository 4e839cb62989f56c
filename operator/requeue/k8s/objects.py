"""Changes to requeue's own objects other than status: annotations, deletion."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from requeue.api.resources import GROUP, VERSION
from requeue.k8s.client import custom_objects, translate
from requeue.k8s.status import MERGE_PATCH

__all__ = ["delete_object", "patch_annotations"]


async def patch_annotations(
    plural: str, namespace: str, name: str, annotations: Mapping[str, str | None],
    *, request_timeout: float = 10.0,
) -> bool:
    """Set (or, with None, remove) annotations; False when the object no longer exists.

    Annotations are metadata: writing them never bumps ``.metadata.generation``.
    """

    def call() -> None:
        custom_objects().patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, {"metadata": {"annotations": dict(annotations)}},
            _content_type=MERGE_PATCH, _request_timeout=request_timeout,
        )

    try:
        await asyncio.to_thread(call)
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return False
        raise translate(exc, f"annotating {plural} {namespace}/{name}") from None
    return True


async def delete_object(
    plural: str, namespace: str, name: str, *, uid: str | None = None, request_timeout: float = 10.0
) -> bool:
    """Delete the object (background propagation); False when it was already gone.

    With ``uid`` the deletion is preconditioned on it, so a newer object that
    reuses the name is never deleted by mistake (the API server answers 409).
    """
    from kubernetes import client

    body = client.V1DeleteOptions(
        propagation_policy="Background",
        preconditions=client.V1Preconditions(uid=uid) if uid else None,
    )

    def call() -> None:
        custom_objects().delete_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, body=body, _request_timeout=request_timeout,
        )

    try:
        await asyncio.to_thread(call)
    except Exception as exc:
        if getattr(exc, "status", None) in (404, 409):
            return False
        raise translate(exc, f"deleting {plural} {namespace}/{name}") from None
    return True
