"""Changes to requeue's own objects other than status: annotations, deletion."""

from __future__ import annotations

from collections.abc import Mapping

from requeue.api.resources import GROUP, VERSION
from requeue.k8s.client import MERGE_PATCH, call_api, custom_object_path

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
        "PATCH",
        custom_object_path(GROUP, VERSION, namespace, plural, name),
        f"{doing} {plural} {namespace}/{name}",
        body=body,
        content_type=MERGE_PATCH,
        request_timeout=request_timeout,
    )


async def delete_object(
    plural: str, namespace: str, name: str, *, uid: str | None = None, request_timeout: float = 10.0
) -> bool:
    """Delete the object (background propagation); False when it was already gone.

    With ``uid`` the deletion is preconditioned on it, so a newer object that
    reuses the name is never deleted by mistake (the API server answers 409).
    """
    body: dict[str, object] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    if uid:
        body["preconditions"] = {"uid": uid}
    return await call_api(
        "DELETE",
        custom_object_path(GROUP, VERSION, namespace, plural, name),
        f"deleting {plural} {namespace}/{name}",
        body=body,
        absent=(404, 409),
        request_timeout=request_timeout,
    )
