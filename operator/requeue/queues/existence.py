"""Does a BullMQ queue exist, and which queues do exist under a prefix?

A typo (``queue: defualt``) names a queue without a single key in Redis. Reading
it looks exactly like reading an empty queue, so without this check a replay
"Succeeds with 0 of 0" and a policy watches nothing. Here "exists" means: at
least one of the keys BullMQ writes for a queue is present (one ``EXISTS``).

Measured with Node BullMQ 5.81/6.7 and Python bullmq 3.4: ``new Queue()`` (Node)
writes ``meta``; adding a job writes ``meta``, ``id``, ``events``, ``marker`` and
``wait``; after the job completed and was removed, ``meta``, ``id`` and ``events``
stay; only ``obliterate`` removes them all. So ``meta`` names every queue that
was ever used, and listing the queues under a prefix is a ``SCAN`` for
``{prefix}:*:meta``.

Redis 6.2 and Cluster: ``EXISTS`` takes keys of one queue only, which share the
queue's hash slot wherever BullMQ itself works on a cluster (its prefix carries
the hash tag). ``SCAN ... MATCH ... COUNT`` is bounded in keys visited
(:data:`SCAN_KEY_BUDGET`); on a cluster it sees the keys of the node the client
talks to, which is where a hash-tagged prefix keeps them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from requeue.errors import QueueNotFound
from requeue.queues.keys import QueueKeys
from requeue.redact import redact_url

__all__ = [
    "LISTED_QUEUES_LIMIT",
    "SCAN_KEY_BUDGET",
    "QueueListing",
    "existence_keys",
    "list_queues",
    "queue_not_found",
    "redis_location",
    "require_queue",
]

#: The keys BullMQ writes for a queue (see the module docstring); any one present means it exists.
_EXISTENCE_SUFFIXES = (
    "meta",
    "id",
    "events",
    "wait",
    "paused",
    "active",
    "prioritized",
    "delayed",
    "failed",
    "completed",
    "marker",
)
#: The key every queue that was ever used has: what a listing scans for.
_LISTING_SUFFIX = "meta"
#: Keys one listing may make Redis visit (``SCAN`` pages of :data:`SCAN_PAGE` until this many).
SCAN_KEY_BUDGET = 10_000
#: ``COUNT`` of each ``SCAN`` call.
SCAN_PAGE = 1000
#: Queue names a message lists at most; "and more" says when there are others.
LISTED_QUEUES_LIMIT = 20
_GLOB_SPECIAL = frozenset("*?[]\\")


def existence_keys(keys: QueueKeys) -> list[str]:
    """The keys whose presence means the queue exists (all in the queue's hash slot)."""
    return [keys.key(suffix) for suffix in _EXISTENCE_SUFFIXES]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class QueueListing:
    """Queue names found under a prefix, at most ``limit`` of them, sorted."""

    names: tuple[str, ...]
    #: More queues exist than ``names`` shows (over the limit, or the scan stopped at its budget).
    more: bool
    #: ``SCAN`` calls (round trips) the listing made.
    calls: int = 0
    #: The user's ACL refused ``SCAN``: nothing could be listed (the queue is still not found).
    refused: bool = False
    #: Every name the scan found (``names`` shows the first ``limit``): where a typo's match is.
    found: tuple[str, ...] = ()

    def describe(self, queue: str = "") -> str:
        """``did you mean "orders"? queues there: default, emails`` (``and more`` when cut)."""
        close = closest_name(queue, self.found or self.names) if queue else None
        hint = f'did you mean "{close}"? ' if close else ""
        return hint + self._listed()

    def _listed(self) -> str:
        if self.refused:
            return "cannot list the queues there: this user may not SCAN (check the queue name and prefix)"
        if not self.names:
            return (
                "no queue found under that prefix in the first keys scanned"
                if self.more
                else "no queue exists under that prefix there (is the prefix right?)"
            )
        return "queues there: " + ", ".join(self.names) + (", and more" if self.more else "")


async def list_queues(
    redis: Redis, prefix: str, *, limit: int = LISTED_QUEUES_LIMIT, key_budget: int = SCAN_KEY_BUDGET
) -> QueueListing:
    """The queues under ``prefix`` that have a ``meta`` hash, from a ``SCAN`` bounded by ``key_budget``.

    BullMQ refuses queue names with ``:``, so a matched key whose middle holds one
    (e.g. a job hash of a job whose id ends in ``:meta``) is not a queue. A user whose ACL
    refuses ``SCAN`` gets an empty listing marked ``refused``, not ``Forbidden``: the typo is
    what the person must fix.
    """
    head = f"{prefix}:"
    tail = f":{_LISTING_SUFFIX}"
    match = _glob_escape(head) + "*" + _glob_escape(tail)
    found: set[str] = set()
    cursor = 0
    calls = 0
    while True:
        try:
            cursor, batch = await redis.scan(cursor=cursor, match=match, count=SCAN_PAGE)
        except rx.NoPermissionError:  # a least-privilege user: the queue is still not found
            return QueueListing((), more=False, calls=calls + 1, refused=True)
        calls += 1
        for raw in batch:
            key = _text(raw)
            name = key[len(head) : -len(tail)]
            if key.startswith(head) and key.endswith(tail) and name and ":" not in name:
                found.add(name)
        if int(cursor) == 0:
            scanned_all = True
            break
        if calls * SCAN_PAGE >= key_budget or len(found) > limit:
            scanned_all = False
            break
    names = sorted(found)
    more = len(names) > limit or not scanned_all
    return QueueListing(tuple(names[:limit]), more=more, calls=calls, found=tuple(names))


#: Edits (insert, delete, change one character; case is free) a name may be from a queue's to be
#: offered as "did you mean"; names longer than :data:`_MAX_COMPARED` are not compared, nor more
#: than :data:`_MAX_CANDIDATES` names (a worst case of ~50 ms on the event loop).
_MAX_EDITS = 2
_MAX_COMPARED = 100
_MAX_CANDIDATES = 200


def closest_name(queue: str, names: Sequence[str]) -> str | None:
    """The one existing queue name within :data:`_MAX_EDITS` edits of ``queue`` (the nearest; the
    first in order on a tie), or None. Banded: O(len x edits) per name, whatever the names hold."""
    if not queue or len(queue) > _MAX_COMPARED:
        return None
    best: tuple[int, str] | None = None
    for name in names[:_MAX_CANDIDATES]:
        if name == queue or len(name) > _MAX_COMPARED:
            continue
        edits = _edits_within(queue.lower(), name.lower(), _MAX_EDITS)
        if edits is not None and (best is None or edits < best[0]):
            best = (edits, name)
    return best[1] if best else None


def _edits_within(a: str, b: str, limit: int) -> int | None:
    """Levenshtein distance of ``a`` and ``b`` when at most ``limit``, else None; only the cells
    within ``limit`` of the diagonal are computed."""
    if abs(len(a) - len(b)) > limit:
        return None
    far = limit + 1
    row = {j: j for j in range(min(len(b), limit) + 1)}
    for i in range(1, len(a) + 1):
        new = {}
        for j in range(max(0, i - limit), min(len(b), i + limit) + 1):
            if j == 0:
                new[j] = i
                continue
            change = row.get(j - 1, far) + (a[i - 1] != b[j - 1])
            new[j] = min(change, row.get(j, far) + 1, new.get(j - 1, far) + 1)
        row = new
        if min(row.values(), default=far) > limit:
            return None
    edits = row.get(len(b), far)
    return edits if edits <= limit else None


def redis_location(redis: Redis) -> str:
    """The client's Redis as a redacted URL (``redis://default:***@host:6379/0``), for messages."""
    pool = redis.connection_pool
    kw = pool.connection_kwargs
    user, password = kw.get("username"), kw.get("password")
    auth = f"{user or ''}:{password}@" if password else (f"{user}@" if user else "")
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        return redact_url(f"unix://{auth}{kw.get('path', '')}?db={kw.get('db', 0)}")
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return redact_url(
        f"{scheme}://{auth}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    )


def queue_not_found(queue: str, prefix: str, location: str, listing: QueueListing) -> QueueNotFound:
    """The named error, its message saying where requeue looked and what is there instead."""
    return QueueNotFound(
        f'queue "{queue}" has no BullMQ keys under prefix "{prefix}" in {location}; '
        + listing.describe(queue),
        queue=queue,
    )


async def require_queue(redis: Redis, keys: QueueKeys) -> None:
    """Return when the queue exists; else raise :class:`QueueNotFound` listing the queues there.

    One ``EXISTS`` when the queue exists; the bounded listing only when it does not.
    """
    if int(await redis.exists(*existence_keys(keys))) > 0:
        return
    listing = await list_queues(redis, keys.prefix)
    raise queue_not_found(keys.queue, keys.prefix, redis_location(redis), listing)
