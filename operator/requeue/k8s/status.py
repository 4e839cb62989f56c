"""Write a resource's ``.status`` through the status subresource (JSON merge patch).

A merge patch replaces lists whole (``conditions`` is written as one list) and
deletes a field sent as ``null``, so callers send the complete status with
unset optionals as ``null`` and a field the model dropped disappears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from requeue.api.resources import GROUP, VERSION
from requeue.k8s.client import MERGE_PATCH, call_api, custom_object_path

__all__ = ["MERGE_PATCH", "patch_status"]


async def patch_status(
    plural: str, namespace: str, name: str, status: Mapping[str, Any], *, request_timeout: float = 10.0
) -> bool:
    """Merge ``status`` into the object's ``.status``; False when the object no longer exists.

    :raises KubernetesApiError: the API server is unreachable or failed (retry later).
    """

    return await call_api(
        "PATCH",
        custom_object_path(GROUP, VERSION, namespace, plural, name) + "/status",
        f"writing status of {plural} {namespace}/{name}",
        body={"status": dict(status)},
        content_type=MERGE_PATCH,
        request_timeout=request_timeout,
    )
