"""Redis Cluster without a cluster client: talk to the one primary that owns the queue's slot.

BullMQ runs on a cluster only with a hash tag in the prefix (``{bull}``): then every key
of a queue (``{bull}:default:failed``, ``{bull}:default:42``, ...) hashes to one slot, which
is what its multi-key scripts need. requeue keeps its own keys of a queue in that slot too
(:class:`requeue.queues.keys.ReplayKeys` with ``slot_tag``; the lease already embeds the
prefix). So everything requeue sends for one queue goes to ONE node, and an ordinary
client to that node suffices: BullMQ's scripts, requeue's scripts and the hand-built
MULTI/EXEC of :mod:`requeue.queues.raw` work unchanged, and nothing can cross slots.

How it finds the node: a ``redis+cluster://`` (or ``rediss+cluster://``) URL names one or
more seed nodes, ``redis+cluster://[user:password@]host:port[,host:port...]``. Every new
connection asks a node (the last owner, then the seeds, then every node the cluster
named) for ``CLUSTER SLOTS`` and connects to the primary serving the queue's slot
(computed locally, CRC16 as Redis does). ``CLUSTER SLOTS`` rather than ``CLUSTER SHARDS``
because Redis 6.2 (what Upstash speaks) has only the former.

When the slot moves (a failover promoted a replica, or a reshard), the old node answers
``MOVED`` (or stops answering): the connection is dropped and the error surfaces as a
``ConnectionError``, which callers already treat as transient (the replay engine retries
its step; redis-py retries a plain command on a fresh connection); the next connection
asks the cluster again. Nothing in a replay's state depends on which node served it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot

from requeue.errors import HashTagRequired, RedisUrlInvalid
from requeue.queues.connection import is_certificate_error
from requeue.queues.keys import QueueKeys
from requeue.queues.seeds import host_address, parse_hosts
from requeue.redact import redact_url, split_url

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterUrl",
    "NodeOpener",
    "SlotClient",
    "SlotRoute",
    "cluster_primaries",
    "connect_primaries",
    "connect_slot_owner",
    "hash_tag",
    "is_cluster_url",
    "node_opener",
    "parse_cluster_url",
    "primaries_of",
    "queue_slot",
    "slot_tag",
]

#: The URL schemes that say "this is a Redis Cluster", and the scheme of one of its nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Reply prefixes that mean "this node does not serve the slot (now)": drop the connection, ask again.
_ROUTING_ERRORS = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN")
#: Seed nodes at most in one URL (each costs a connection attempt when the others are down).
MAX_SEEDS = 64


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_SCHEMES


def hash_tag(key: str) -> str | None:
    """The hash tag Redis Cluster hashes ``key`` by (the text between the first ``{`` and the
    first ``}`` after it), or None when the whole key is hashed (no ``{``, no ``}``, or ``{}``)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def queue_slot(queues: Sequence[QueueKeys]) -> tuple[str, int]:
    """The hash tag and slot that every key of ``queues`` shares (the first queue's).

    The tag must close inside ``{prefix}:{queue}:``: then every BullMQ key of the queue
    (that text followed by a suffix or a job id) hashes by it, whatever a job id holds.

    :raises HashTagRequired: a queue has no hash tag, or two of them hash to different slots.
    """
    tag: str | None = None
    slot = -1
    for q in queues:
        own = hash_tag(q.base)
        name = q.base[:-1]
        if own is None:
            raise HashTagRequired(
                f"queue {name!r} cannot be used on a Redis Cluster: its prefix {q.prefix!r} has no hash "
                f"tag, so BullMQ's keys of one queue spread over many slots and its scripts (and "
                f"requeue's) fail with CROSSSLOT. BullMQ on a cluster needs a prefix like "
                f"'{{{q.prefix.strip('{}') or 'bull'}}}' (new Queue(name, {{ prefix: '{{bull}}' }})): "
                f"use the prefix the application uses",
                queue=q.queue,
            )
        own_slot = key_slot(own.encode())
        if tag is None:
            tag, slot = own, own_slot
        elif own_slot != slot:
            raise HashTagRequired(
                f"queue {name!r} hashes to slot {own_slot} and {queues[0].base[:-1]!r} to slot {slot}: "
                f"on a Redis Cluster, a replay's queue, its targetQueue and its smoke test's "
                f"waitForJob queue, and the queues of one QueuePolicy, must share a hash tag (put the "
                f"tag in the prefix, e.g. '{{bull}}', not "
                f"in the queue name)",
                queue=q.queue,
            )
    if tag is None:
        raise ValueError("queue_slot needs at least one queue")
    return tag, slot


@dataclass(frozen=True)
class ClusterUrl:
    """A ``redis+cluster://`` URL taken apart: node URLs are built from it, never shown."""

    scheme: str
    #: As written (may hold any character); :func:`requeue.queues.connection.client_from_url`
    #: encodes it.
    userinfo: str | None = field(repr=False)
    seeds: tuple[tuple[str, int], ...]
    tail: str

    def node_url(self, host: str, port: int) -> str:
        """The ``redis://`` (or ``rediss://``) URL of one node, with the same credentials and options."""
        auth = f"{self.userinfo}@" if self.userinfo is not None else ""
        return f"{self.scheme}://{auth}{host_address(host, port)}{self.tail}"


def parse_cluster_url(url: str) -> ClusterUrl:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0][?options]``.

    :raises RedisUrlInvalid: not that form, no seed, a port that is not a number, a
        database other than 0 (a cluster has only database 0). The message shows the URL
        redacted.
    """
    parts = split_url(url)
    shown = redact_url(url)
    if parts is None or parts.scheme.lower() not in CLUSTER_SCHEMES:
        raise RedisUrlInvalid(f"{shown} is not a Redis Cluster URL (redis+cluster://host:port[,host:port])")
    seeds = parse_hosts(
        parts.hostport,
        most=MAX_SEEDS,
        default_port=None,
        invalid=f"{shown} is not a valid Redis Cluster URL: each seed node is host:port "
        f"(comma-separated, e.g. redis+cluster://:PASSWORD@redis-0:6379,redis-1:6379)",
        too_many=f"{shown} names more than {MAX_SEEDS} seed nodes; a few are enough",
    )
    if parts.path not in ("", "/", "/0"):
        raise RedisUrlInvalid(f"{shown}: a Redis Cluster has only database 0; remove {parts.path!r}")
    tail = "/0" + (f"?{parts.query}" if parts.query else "")
    return ClusterUrl(CLUSTER_SCHEMES[parts.scheme.lower()], parts.userinfo, seeds, tail)


class SlotRoute:
    """Which primary serves one slot, asked of the cluster whenever a connection is made.

    :param seeds: the URL's nodes; asked after the last known owner.
    :param open_node: a plain client for one node (same credentials, TLS and timeouts).
    """

    def __init__(self, *, seeds: Sequence[tuple[str, int]], slot: int, open_node: NodeOpener) -> None:
        self.seeds = list(seeds)
        self.slot = slot
        self._open_node = open_node
        #: The primary that served the slot when last asked.
        self.owner: tuple[str, int] | None = None
        #: Every node the cluster named in its last answer (asked when the seeds are down).
        self._known: list[tuple[str, int]] = []

    def _candidates(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for node in [*([self.owner] if self.owner else []), *self.seeds, *self._known]:
            if node not in out:
                out.append(node)
        return out

    async def resolve(self) -> tuple[str, int]:
        """The primary serving the slot now, asked of the first node that answers.

        :raises redis.exceptions.ConnectionError: no node answered, or none serves the slot
            (a cluster that lost a primary and has no replica to promote, or is still electing).
        """
        problems: list[str] = []
        for host, port in self._candidates():
            try:
                reply = await self._ask(host, port)
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                if same_on_every_node(exc):
                    raise
                problems.append(f"{host}:{port}: {type(exc).__name__}")
                continue
            owner, known = owner_of(reply, self.slot, asked=host)
            if known:
                self._known = known
            if owner is None:
                problems.append(f"{host}:{port}: no primary serves slot {self.slot}")
                continue
            self.owner = owner
            return owner
        raise rx.ConnectionError(
            f"no node of the Redis Cluster named the primary of slot {self.slot} ({'; '.join(problems[:6])})"
        )

    async def _ask(self, host: str, port: int) -> Any:
        client = self._open_node(host, port)
        try:
            return await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()


class NodeOpener:
    """Makes a plain client for one node from a template pool's class and arguments."""

    def __init__(self, connection_class: type[AbstractConnection], kwargs: dict[str, Any]) -> None:
        self.connection_class = connection_class
        self.kwargs = kwargs

    def __call__(self, host: str, port: int) -> aioredis.Redis:
        pool = ConnectionPool(
            connection_class=self.connection_class, **{**self.kwargs, "host": host, "port": port}
        )
        return aioredis.Redis.from_pool(pool)


def primaries_of(reply: Any, *, asked: str) -> list[tuple[str, int]]:
    """Every primary a ``CLUSTER SLOTS`` reply names (once each, in slot order)."""
    out: list[tuple[str, int]] = []
    for entry in reply if isinstance(reply, list) else []:
        if not isinstance(entry, list | tuple) or len(entry) < 3:
            continue
        address = _node_address(entry[2], asked)
        if address is not None and address not in out:
            out.append(address)
    return out


def owner_of(reply: Any, slot: int, *, asked: str) -> tuple[tuple[str, int] | None, list[tuple[str, int]]]:
    """The primary of ``slot`` in a ``CLUSTER SLOTS`` reply, and every node it names.

    Each entry is ``[start, end, [host, port, id, ...] (primary), [host, port, ...] (replicas)...]``;
    a host of ``""`` or ``"?"`` means "the node you asked" (Redis 7 when it does not know its own).
    """
    owner: tuple[str, int] | None = None
    nodes: list[tuple[str, int]] = []
    for entry in reply if isinstance(reply, list) else []:
        if not isinstance(entry, list | tuple) or len(entry) < 3:
            continue
        start, end = int(entry[0]), int(entry[1])
        for i, node in enumerate(entry[2:]):
            address = _node_address(node, asked)
            if address is None:
                continue
            if address not in nodes:
                nodes.append(address)
            if i == 0 and start <= slot <= end:
                owner = address
    return owner, nodes


def _node_address(node: Any, asked: str) -> tuple[str, int] | None:
    """``[host, port, id, ...]`` of a ``CLUSTER SLOTS`` entry -> (host, port); None when malformed.

    A host of ``""`` or ``"?"`` means "the node you asked" (Redis 7 when it does not know its own).
    """
    if not isinstance(node, list | tuple) or len(node) < 2:
        return None
    raw = node[0]
    host = raw.decode() if isinstance(raw, bytes) else str(raw)
    return (host if host not in ("", "?") else asked, int(node[1]))


class _SlotConnectionMixin:
    """Connects to the slot's current primary; a routing reply drops the connection.

    The reply ``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN`` would otherwise be a plain
    ``ResponseError`` on a connection that goes back to the pool still pointing at the old
    node; raised as a ``ConnectionError`` it is retried like any lost connection, and the
    next connection asks the cluster again.
    """

    route: SlotRoute
    host: str
    port: int

    async def _connect(self) -> None:
        self.host, self.port = await self.route.resolve()
        await super()._connect()  # type: ignore[misc]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except rx.ResponseError as exc:
            if not str(exc).startswith(_ROUTING_ERRORS):
                raise
            await self.disconnect()  # type: ignore[attr-defined]
            raise rx.ConnectionError(
                f"the Redis Cluster moved slot {self.route.slot} away from {self.host}:{self.port} ({exc})"
            ) from None


class SlotConnection(_SlotConnectionMixin, Connection):
    """A TCP connection to the primary of a slot."""

    def __init__(self, *, route: SlotRoute, **kwargs: Any) -> None:
        self.route = route
        super().__init__(**kwargs)


class SlotSSLConnection(_SlotConnectionMixin, SSLConnection):
    """A TLS connection to the primary of a slot."""

    def __init__(self, *, route: SlotRoute, **kwargs: Any) -> None:
        self.route = route
        super().__init__(**kwargs)


class SlotClient(aioredis.Redis):
    """A ``redis.asyncio.Redis`` whose connections go to the primary serving one queue's slot."""

    #: The hash tag every key this client is meant for carries (requeue's own keys take it).
    slot_tag: str = ""
    route: SlotRoute


def slot_tag(redis: aioredis.Redis) -> str:
    """The hash tag requeue's own keys must carry on this client's Redis ("" off a cluster)."""
    return redis.slot_tag if isinstance(redis, SlotClient) else ""


async def connect_slot_owner(url: str, queues: Sequence[QueueKeys], kwargs: dict[str, Any]) -> SlotClient:
    """A client to the primary serving the slot of ``queues`` (not yet connected).

    :param kwargs: what :func:`requeue.queues.connection.connect` gives redis-py (timeouts, TLS).
    :raises RedisUrlInvalid: the URL is not a usable cluster URL.
    :raises HashTagRequired: the queues do not share one hash-tagged slot.
    """
    if not queues:
        raise RedisUrlInvalid(
            f"{redact_url(url)} is a Redis Cluster URL: say which queue it is for (the client goes to "
            "the primary serving that queue's slot)"
        )
    tag, slot = queue_slot(queues)
    parsed, opener = await node_opener(url, kwargs)
    base_class, node_kwargs = opener.connection_class, opener.kwargs
    route = SlotRoute(seeds=parsed.seeds, slot=slot, open_node=opener)
    slot_class = SlotSSLConnection if issubclass(base_class, SSLConnection) else SlotConnection
    client = SlotClient(
        connection_pool=ConnectionPool(connection_class=slot_class, route=route, **node_kwargs)
    )
    client.auto_close_connection_pool = True  # as Redis.from_pool: closing the client closes its pool
    client.slot_tag = tag
    client.route = route
    return client


async def node_opener(url: str, kwargs: dict[str, Any]) -> tuple[ClusterUrl, NodeOpener]:
    """The parsed URL and a maker of plain clients to its nodes (same credentials, TLS, timeouts).

    :raises RedisUrlInvalid: not a usable cluster URL, or a database other than 0.
    """
    from requeue.queues.connection import client_from_url  # connection imports this module lazily

    if kwargs.get("db") not in (None, 0):
        raise RedisUrlInvalid(f"{redact_url(url)}: a Redis Cluster has only database 0")
    parsed = parse_cluster_url(url)
    template = client_from_url(parsed.node_url(*parsed.seeds[0]), **kwargs)  # proves the options
    pool = template.connection_pool
    opener = NodeOpener(pool.connection_class, dict(pool.connection_kwargs))
    await template.aclose()
    return parsed, opener


def same_on_every_node(exc: BaseException) -> bool:
    """Whether trying the next node is pointless: the same credentials and the same CA go to every
    node, so a refused password (``AuthFailed``) or a certificate the CA did not sign
    (``RedisCertificateUntrusted``) must be named as such, not folded into "no node answered"."""
    return isinstance(exc, rx.AuthenticationError) or is_certificate_error(exc)


async def cluster_primaries(url: str, kwargs: dict[str, Any]) -> tuple[NodeOpener, list[tuple[str, int]]]:
    """Every primary the cluster names now (asked of the seeds in turn), and how to open a client to one.

    :raises RedisUrlInvalid: not a usable cluster URL.
    :raises redis.exceptions.ConnectionError: no seed answered ``CLUSTER SLOTS``.
    """
    parsed, opener = await node_opener(url, kwargs)
    problems: list[str] = []
    for host, port in parsed.seeds:
        client = opener(host, port)
        try:
            reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            if same_on_every_node(exc):
                raise
            problems.append(f"{host}:{port}: {type(exc).__name__}")
            continue
        finally:
            await client.aclose()
        nodes = primaries_of(reply, asked=host)
        if nodes:
            return opener, nodes
        problems.append(f"{host}:{port}: no slot assigned")
    raise rx.ConnectionError(f"no seed of the Redis Cluster named its primaries ({'; '.join(problems[:6])})")


async def connect_primaries(url: str, kwargs: dict[str, Any]) -> list[aioredis.Redis]:
    """A client to each primary of the cluster (not yet connected): for what requeue reads from
    every slot at once (``requeue replays list``: replay keys live in their queue's slot)."""
    opener, nodes = await cluster_primaries(url, kwargs)
    return [opener(host, port) for host, port in nodes]
