"""Which Redis connections are a queue's BullMQ workers, as BullMQ's own ``getWorkers`` tells.

A BullMQ worker names its connection (``CLIENT SETNAME``) after its queue:
``{prefix}:{base64 of the queue name}`` in Node BullMQ 5 and 6, ``{prefix}:{queue}`` in
Python bullmq, each followed by ``:w:{worker name}`` when the worker has a name.
``Queue.getWorkers()`` lists the ``CLIENT LIST`` entries whose name is exactly that or
starts with it plus ``:w:``; :func:`count_workers` counts the same way, for many queues in
one pass over one ``CLIENT LIST``.

Bounded: the work per connection does not grow with its name's length beyond the longest
queue base (names are set by clients, so a hostile one may be long or full of ``:w:``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["CLIENT_LIST", "client_names", "count_workers", "worker_bases"]

_NAMED = ":w:"
_NAME_FIELD = " name="
#: ``CLIENT LIST`` as two words: redis-py then returns the reply as it came (``client_list()``
#: parses every field of every connection into a dict, ~5 µs per connection, for one field).
CLIENT_LIST = ("CLIENT", "LIST")


def client_names(reply: bytes | str) -> list[str]:
    """The ``name`` of every connection in a raw ``CLIENT LIST`` reply ("" when it has none).

    One line per connection, ``field=value`` pairs separated by spaces; Redis refuses names
    with spaces, and ``name`` is the first field whose key ends in "name" (``lib-name`` comes
    after it), so its value runs from `` name=`` to the next space.
    """
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    names = []
    for line in text.splitlines():
        at = line.find(_NAME_FIELD)
        if at < 0:
            continue
        start = at + len(_NAME_FIELD)
        end = line.find(" ", start)
        names.append(line[start:] if end < 0 else line[start:end])
    return names


def worker_bases(prefix: str, queue: str) -> tuple[str, ...]:
    """The connection names of ``queue``'s unnamed workers: Node's (base64) and Python's."""
    encoded = base64.b64encode(queue.encode()).decode()
    return tuple(dict.fromkeys((f"{prefix}:{encoded}", f"{prefix}:{queue}")))


def count_workers(client_names: Iterable[str], prefix: str, queues: Sequence[str]) -> dict[str, int]:
    """Queue -> connections named as its workers' (every queue listed, 0 when none)."""
    owner: dict[str, str] = {}
    for queue in queues:
        for base in worker_bases(prefix, queue):
            owner.setdefault(base, queue)
    longest = max((len(b) for b in owner), default=0)
    counts = dict.fromkeys(queues, 0)
    for name in client_names:
        found = _owner_of(name, owner, longest)
        if found is not None:
            counts[found] += 1
    return counts


def _owner_of(name: str, owner: Mapping[str, str], longest: int) -> str | None:
    """The queue whose worker ``name`` is (``base`` or ``base:w:...``), or None."""
    if name in owner:
        return owner[name]
    end = longest + len(_NAMED)  # a base is never longer: look no further into the name
    at = name.find(_NAMED, 0, end)
    while at >= 0:
        queue = owner.get(name[:at])
        if queue is not None:
            return queue
        at = name.find(_NAMED, at + 1, end)
    return None
