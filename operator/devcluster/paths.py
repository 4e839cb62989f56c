"""Where a resource lives in the Kubernetes API, for the emulator's own HTTP clients."""

from __future__ import annotations

import kmock


def resource_path(res: kmock.resource, namespace: str | None = None, name: str | None = None) -> str:
    """``api/v1/namespaces/ns/secrets/x`` or ``apis/group/version/...``: the core group has no
    group segment; cluster-scoped objects (namespace None) no namespace segment."""
    root = f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{root}{scope}/{res.plural}" + (f"/{name}" if name else "")
