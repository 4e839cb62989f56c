"""Changes to requeue's own objects other than status: annotations, deletion."""

from __future__ import annotations

from collections.abc import Mapping

from requeue.api.resources import GROUP, VERSION
from requeue.k8s.client import call_api, custom_objects
from requeue.k8s.status import MERGE_PATCH

__all__ = ["delete_object", "patch_annotations", "patch_spec"]


async def patch_annotations(
    plural: str,
    namespace: str,
    name: str,
    annotations: Mapping[str, str | None],
    *,
    request_timeout: float = 10.0,
) -> bool:
    """Set (or, with None, remove) annotations; False when the object no longer exists.

    Annotations are metadata: writing them never bumps ``.metadata.generation``.
    """
    body = {"metadata": {"annotations": dict(annotations)}}
    return await _merge_patch(plural, namespace, name, body, "annotating", request_timeout)


async def patch_spec(
    plural: str, namespace: str, name: str, fields: Mapping[str, object], *, request_timeout: float = 10.0
) -> bool:
    """Merge ``fields`` into ``.spec`` (``kubectl requeue cancel``); False when the object does not exist."""
    return await _merge_patch(plural, namespace, name, {"spec": dict(fields)}, "patching", request_timeout)


async def _merge_patch(
    plural: str, namespace: str, name: str, body: Mapping[str, object], doing: str, request_timeout: float
) -> bool:
    """JSON-merge-patch ``body`` into the object; False when it does not exist. ``doing`` names the
    write in an error's message (``annotating qpol default/x``)."""
    return await call_api(
        lambda: custom_objects().patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            dict(body),
            _content_type=MERGE_PATCH,
            _request_timeout=request_timeout,
        ),
        f"{doing} {plural} {namespace}/{name}",
    )


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

    return await call_api(
        lambda: custom_objects().delete_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body=body,
            _request_timeout=request_timeout,
        ),
        f"deleting {plural} {namespace}/{name}",
        absent=(404, 409),
    )
