"""The emulator's garbage collector: dependents go when their owners are gone.

A QueuePolicy owns the DLQReplays it creates (``ownerReferences`` with the
policy's uid). On a real cluster, kube-controller-manager's garbage collector
deletes them once the policy is gone, and each child's own finalizer then runs
(the replay resumes a queue it paused and releases its lease). Without this,
deleting a policy in the emulator would leave its children running forever,
and that path, the one users take when they remove a policy mid-replay, could
not be tested.

What it does, like the real collector with background propagation (kubectl's
default): every ``interval`` it deletes each object none of whose owners exists
any more (by uid), through the API like any client, so finalizers, watch events
and ``deletionTimestamp`` behave as for a ``kubectl delete``. Not emulated:
foreground deletion (``blockOwnerDeletion`` holding the owner until its
dependents are gone), orphan propagation, and pruning only the dangling entry of
an object that still has another owner.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Protocol

import kmock

from devcluster.paths import resource_path

#: (resource, namespace, name, stored object) of an object that is not deleted.
LiveObject = tuple[kmock.resource, str | None, str, dict[str, Any]]


class LiveObjects(Protocol):
    """What the collector reads from the emulator (its deletes go over HTTP like any client's).

    A protocol, not the emulator class, so that this module does not import the emulator.
    """

    async def live_objects(self) -> list[LiveObject]: ...


logger = logging.getLogger(__name__)

#: Seconds between two collections (kube-controller-manager reacts to watch events; a short
#: poll is as good for a handful of objects).
GC_INTERVAL = 0.2


def orphans(live: list[LiveObject]) -> Iterator[tuple[kmock.resource, str | None, str]]:
    """(resource, namespace, name) of each object in ``live`` whose owners are all gone from it."""
    uids = {raw.get("metadata", {}).get("uid") for *_, raw in live}
    for res, ns, name, raw in live:
        meta = raw.get("metadata", {})
        owners = meta.get("ownerReferences") or []
        if owners and not meta.get("deletionTimestamp") and not any(o.get("uid") in uids for o in owners):
            yield res, ns, name


def _delete(base_url: str, res: kmock.resource, namespace: str | None, name: str) -> None:
    request = urllib.request.Request(f"{base_url}/{resource_path(res, namespace, name)}", method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # gone meanwhile: what the collector wanted anyway
            raise


async def collect_garbage(server: LiveObjects, base_url: str, interval: float = GC_INTERVAL) -> None:
    """Run until cancelled: delete orphaned dependents over HTTP at ``base_url``."""
    while True:
        await asyncio.sleep(interval)
        doomed = list(orphans(await server.live_objects()))
        for res, namespace, name in doomed:
            try:
                await asyncio.to_thread(_delete, base_url, res, namespace, name)
                logger.info(
                    "garbage collector: deleted %s %s/%s (its owners are gone)", res.plural, namespace, name
                )
            except (OSError, urllib.error.URLError) as exc:
                logger.warning(
                    "garbage collector: deleting %s %s/%s failed: %s", res.plural, namespace, name, exc
                )
