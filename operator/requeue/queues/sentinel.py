"""Redis Sentinel: ask the Sentinels where the primary is, on every new connection.

The common Helm installs of Redis (Bitnami's ``redis`` chart with ``sentinel.enabled``,
``redis-ha``) run a primary, replicas and Sentinels that promote a replica when the
primary dies. A client must not keep the primary's address: it asks the Sentinels.

The URL (one Secret value, like every other Redis URL requeue takes)::

    redis+sentinel://[user:password@]host[:port][,host[:port]...]/<master-name>[/<db>][?options]
    rediss+sentinel://...   (TLS to the Sentinels and to the data nodes)

* ``host:port`` are Sentinels (port 26379 when left out); one is enough, all is better:
  requeue asks them in turn.
* ``<master-name>`` is the name the Sentinels monitor (``sentinel monitor <name> ...``;
  Bitnami's ``sentinel.masterSet``, default ``mymaster``), percent-encoded if it holds
  ``/``, ``?`` or ``#``. ``<db>`` is the database number (default 0).
* ``user:password`` are the **data nodes'** credentials (the primary's ``requirepass`` or
  ACL user: what BullMQ's ioredis calls ``username``/``password``). Any character may be
  in the password, raw, as in every Redis URL requeue takes.
* The **Sentinels'** credentials: ``?sentinel_password=...`` (and ``sentinel_username``),
  percent-encoded, when the Sentinels have a password of their own. Without them, requeue
  offers the Sentinels the data nodes' credentials and, when a Sentinel has no password
  set (it says so), talks to it without one: so one URL works for Bitnami's default
  (``auth.sentinel: true``, the same password on both) and for Sentinels without
  authentication. Other query options apply to the data nodes, as on ``redis://``.

How a failover is followed: the client is redis-py's :class:`SentinelConnectionPool`,
which asks the Sentinels for the primary's address before each new connection and drops
idle connections to an old one. A connection to a dead or demoted primary fails with a
``ConnectionError`` (``READONLY`` replies included), which every caller already treats as
transient; the next connection goes to the promoted replica. Nothing in a replay's state
depends on which node served it, so a replay resumes where Redis says it was.

Why :meth:`_Sentinels.discover_master` is requeue's own: redis-py says "No master found"
for three different situations, and only one of them (a failover under way) passes by
itself. A name no Sentinel monitors is a typo (:class:`SentinelMasterUnknownError`); no
Sentinel answering is an outage of the Sentinels themselves (:class:`NoSentinelError`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from requeue.errors import RedisUnreachable, RedisUrlInvalid, SentinelMasterUnknown
from requeue.queues.seeds import host_address, parse_hosts
from requeue.redact import encode_userinfo, redact_url, split_url

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "AddressCheck",
    "MasterAddressRefused",
    "NoSentinelError",
    "SentinelMasterUnknownError",
    "SentinelUrl",
    "is_sentinel_url",
    "named_sentinel_error",
    "parse_sentinel_url",
    "sentinel_client",
]

#: The URL schemes that say "ask these Sentinels", and the scheme of the data nodes behind them.
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
#: The port a Sentinel listens on when the URL gives none.
DEFAULT_SENTINEL_PORT = 26379
#: Sentinels at most in one URL (each costs a connection attempt while the others are down).
MAX_SENTINELS = 32
#: Query options for the Sentinels themselves; every other option is the data nodes'.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
#: What a Sentinel without a password answers to AUTH (Redis 6+, and 5): talk to it without one.
_NO_PASSWORD_SET = ("without any password configured", "no password is set")
#: Master names shown in a message at most, and characters of each.
_SHOW_NAMES, _SHOW_CHARS = 10, 64

#: The URL form, for messages (written so that redaction leaves it alone).
SENTINEL_URL_FORM = (
    "redis+sentinel:// followed by [user:password@]host[:port][,host[:port]...]/<master-name>[/<db>]"
)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Sentinels (``redis+sentinel://`` or ``rediss+sentinel://``)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelUrl:
    """A Sentinel URL taken apart. Nothing here is shown: messages use the redacted URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    #: ``redis[s]://[userinfo@]<first sentinel>/<db>[?options]``: the data nodes' credentials and
    #: options in the form redis-py (and :func:`requeue.queues.connection.client_from_url`) reads.
    node_url: str = field(repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def addresses(self) -> str:
        """``host:port, host:port`` of the Sentinels, for messages."""
        return ", ".join(host_address(h, p) for h, p in self.sentinels)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Take a :data:`SENTINEL_URL_FORM` URL apart (see the module docstring).

    :raises RedisUrlInvalid: not that form: no Sentinel, a port that is not a number, no
        master name, a database that is not a number. The message shows the URL redacted.
    """
    parts = split_url(url)
    shown = shown_url(url)
    if parts is None or parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise RedisUrlInvalid(f"{shown} is not a Redis Sentinel URL ({SENTINEL_URL_FORM})")
    sentinels = parse_hosts(
        parts.hostport,
        most=MAX_SENTINELS,
        default_port=DEFAULT_SENTINEL_PORT,
        invalid=f"{shown} is not a valid Redis Sentinel URL: each Sentinel is host[:port] with a port "
        f"from 1 to 65535, comma-separated ({SENTINEL_URL_FORM})",
        too_many=f"{shown} names more than {MAX_SENTINELS} Sentinels; three or five are enough",
    )
    master_part, _, db_part = parts.path.removeprefix("/").partition("/")
    master = unquote(master_part)
    if not master:
        raise RedisUrlInvalid(
            f"{shown} names no master: the path is the name the Sentinels monitor ({SENTINEL_URL_FORM}; "
            "Bitnami's chart calls it sentinel.masterSet, default mymaster)"
        )
    if db_part and not (db_part.isascii() and db_part.isdigit() and len(db_part) <= 5):
        raise RedisUrlInvalid(f"{shown}: the database after the master name is a number (e.g. /mymaster/0)")
    own: dict[str, str] = {}
    rest: list[str] = []
    for pair in parts.query.split("&") if parts.query else []:
        name, _, value = pair.partition("=")
        if name in SENTINEL_OPTIONS:
            own[name] = unquote(value.replace("+", " "))
        else:
            rest.append(pair)
    auth = f"{parts.userinfo}@" if parts.userinfo is not None else ""
    host, port = sentinels[0]
    node_url = (
        f"{SENTINEL_SCHEMES[parts.scheme.lower()]}://{auth}{host_address(host, port)}/{db_part or '0'}"
        + (f"?{'&'.join(rest)}" if rest else "")
    )
    return SentinelUrl(
        sentinels,
        master,
        node_url,
        sentinel_username=own.get("sentinel_username") or None,
        sentinel_password=own.get("sentinel_password") or None,
    )


#: Characters of a redacted URL shown in a message at most (a hostile one may be megabytes long).
MAX_SHOWN = 300


def shown_url(url: str) -> str:
    """``url`` redacted, then cut to :data:`MAX_SHOWN` characters (redacted before cutting)."""
    shown = redact_url(url)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 1] + "…"


# ---------------------------------------------------------------- errors


class SentinelMasterUnknownError(rx.RedisError):
    """Sentinels answered, and none of them monitors a master of that name (a typo, or the wrong
    Sentinels). Not a ``ConnectionError``: redis-py would retry it, and retrying will not help."""


class NoSentinelError(MasterNotFoundError):
    """No Sentinel of the URL answered: the Sentinels themselves are down or unreachable."""


class _SentinelAuthError(rx.AuthenticationError):
    """Every Sentinel that answered refused the credentials offered to it."""


class _SentinelCertificateError(rx.ConnectionError):
    """Every Sentinel presented a certificate the CA given did not sign (its text keeps redis-py's
    "certificate verify failed", so the caller names it ``RedisCertificateUntrusted``)."""


def named_sentinel_error(
    exc: BaseException, *, where: str, detail: str, queue: str | None, replay: str | None
) -> RedisUnreachable | None:
    """requeue's error for a Sentinel failure that needs its own words, or None (the caller's
    mapping then applies: an auth error is ``AuthFailed``, anything else ``RedisUnreachable``).

    :param where: `` at <redacted URL>``; :param detail: the redacted redis-py error.
    """
    if isinstance(exc, SentinelMasterUnknownError):
        return SentinelMasterUnknown(
            f"Redis{where}: {detail}; put the name the Sentinels monitor in the URL's path "
            f"({SENTINEL_URL_FORM}; `redis-cli -p 26379 SENTINEL MASTERS` lists them)",
            queue=queue,
            replay=replay,
        )
    if isinstance(exc, NoSentinelError):
        return RedisUnreachable(
            f"Redis{where} unavailable: no Sentinel answered ({detail})", queue=queue, replay=replay
        )
    return None


# ---------------------------------------------------------------- the client


class _Sentinels(Sentinel):
    """redis-py's Sentinel manager, with failures told apart (see the module docstring)."""

    def __init__(self, url: SentinelUrl, *, check_address: AddressCheck | None = None, **kwargs: Any) -> None:
        super().__init__(url.sentinels, **kwargs)
        self.url = url
        self.check_address = check_address

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The primary's address as the first Sentinel that knows it healthy says.

        :raises SentinelMasterUnknownError: Sentinels answered, none monitors ``service_name``.
        :raises NoSentinelError: no Sentinel answered.
        :raises MasterNotFoundError: Sentinels monitor it but see it down (a failover is under way).
        """
        errors: list[str] = []
        known: set[str] = set()
        from requeue.queues.connection import is_certificate_error  # it builds on this module

        refused = untrusted = answered = 0
        seen_down: str | None = None
        for i, sentinel in enumerate(self.sentinels):
            address = _client_address(sentinel)
            try:
                masters: dict[str, dict[str, Any]] = await sentinel.sentinel_masters()  # type: ignore[assignment]
            except (rx.ConnectionError, rx.ResponseError, rx.TimeoutError) as exc:
                refused += isinstance(exc, rx.AuthenticationError) or "NOAUTH" in str(exc)
                untrusted += is_certificate_error(exc)
                errors.append(f"{address}: {type(exc).__name__}: {exc}")
                continue
            answered += 1
            state = masters.get(service_name)
            if state is None:
                known.update(str(name) for name in masters)
                continue
            if self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[i] = sentinel, self.sentinels[0]
                found = str(state["ip"]), int(state["port"])
                await self._check(*found)
                return found
            seen_down = f"{address} sees it at {host_address(str(state['ip']), int(state['port']))} down"
        name = repr(service_name[:100])
        if seen_down is not None:
            raise MasterNotFoundError(
                f"the Sentinels monitor master {name} but none sees it up ({seen_down}); "
                "a failover is under way or no replica can be promoted"
            )
        if answered:
            shown = ", ".join(repr(n[:_SHOW_CHARS]) for n in sorted(known)[:_SHOW_NAMES]) or "none"
            raise SentinelMasterUnknownError(
                f"no Sentinel at {self.url.addresses} monitors a master named {name} (they monitor: {shown})"
            )
        tried = "; ".join(errors)
        if refused and refused == len(errors):
            raise _SentinelAuthError(
                f"every Sentinel refused the credentials ({tried}); give the Sentinels' own in "
                "?sentinel_password=... (percent-encoded)"
            )
        if untrusted and untrusted == len(errors):
            raise _SentinelCertificateError(
                f"every Sentinel's TLS certificate failed to verify ({tried}); the same CA "
                "(spec.redis.tls) verifies the Sentinels and the data nodes"
            )
        raise NoSentinelError(f"no Sentinel answered at {self.url.addresses} ({tried})")

    async def _check(self, host: str, port: int) -> None:
        """The caller's check of the address the Sentinels named (a gate's destination policy)."""
        if self.check_address is None:
            return
        try:
            await self.check_address(host, port)
        except Exception as exc:  # the policy's refusal, or a name that does not resolve
            text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise MasterAddressRefused(
                f"the Sentinels name the primary {host_address(host, port)}: {text}"
            ) from None


class MasterAddressRefused(rx.ConnectionError):
    """The primary's address the Sentinels answered with fails the caller's check (nothing sent to it)."""


def _client_address(client: aioredis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return host_address(str(kwargs.get("host")), int(kwargs.get("port") or 0))


class _PrimaryPool(SentinelConnectionPool):
    """The primary's pool; closing it closes the Sentinel clients too (nobody else holds them)."""

    sentinel_manager: _Sentinels

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


async def _handshake_or_without_password(conn: AbstractConnection) -> None:
    """A Sentinel connection's handshake; when the Sentinel has no password set (and says so to
    the data nodes' credentials offered by default), go on without credentials."""
    try:
        await conn.on_connect()
    except rx.AuthenticationError as exc:
        if not any(text in str(exc) for text in _NO_PASSWORD_SET):
            raise
        conn.username = conn.password = None
        await conn.on_connect()


#: Checks an address before requeue connects to it (raises to refuse it).
AddressCheck = Callable[[str, int], Awaitable[object]]

#: Client-level options (``redis.asyncio.Redis(...)``) that a connection pool does not take.
_CLIENT_OPTIONS = ("single_connection_client",)
#: Options of the data nodes' connections that the Sentinel connections take as well.
_SHARED_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "encoding_errors")


def sentinel_client(url: str, *, check_address: AddressCheck | None = None, **kwargs: Any) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` on the primary that the Sentinels of ``url`` name, re-asked on every
    new connection. Nothing is sent yet.

    :param check_address: awaited with the primary's address the Sentinels name, before it is
        connected to; raising refuses it (:class:`MasterAddressRefused`, a connection error).
        A Redis gate's destination policy: the Sentinels choose that address, not the gate.
    :param kwargs: as for ``redis.asyncio.Redis.from_url`` (``db`` overrides the URL's).
    :raises RedisUrlInvalid: the URL or one of its options cannot be used.
    """
    from requeue.queues.connection import client_from_url  # builds on this module's parse

    parsed = parse_sentinel_url(url)
    try:  # the data nodes' part is an ordinary Redis URL: check its options the same way
        client_from_url(parsed.node_url, **kwargs)
    except RedisUrlInvalid as exc:
        problem = exc.message.partition(" is not a valid Redis URL: ")[2] or "its options are not usable"
        raise RedisUrlInvalid(f"{shown_url(url)} is not a valid Redis URL: {problem}") from None
    node = dict(parse_url(encode_userinfo(parsed.node_url)))
    for key in ("host", "port", "path"):
        node.pop(key, None)
    tls = node.pop("connection_class", None) is SSLConnection
    node.update(kwargs)
    client_options = {k: node.pop(k) for k in _CLIENT_OPTIONS if k in node}
    sentinel_kwargs: dict[str, Any] = {k: node[k] for k in _SHARED_OPTIONS if k in node}
    if tls:
        sentinel_kwargs.update({k: v for k, v in node.items() if k.startswith("ssl_")}, ssl=True)
    if parsed.sentinel_password is not None:
        sentinel_kwargs.update(username=parsed.sentinel_username, password=parsed.sentinel_password)
    elif node.get("password") is not None:
        sentinel_kwargs.update(
            username=node.get("username"),
            password=node["password"],
            redis_connect_func=_handshake_or_without_password,
        )
    manager = _Sentinels(parsed, check_address=check_address, sentinel_kwargs=sentinel_kwargs)
    pool = _PrimaryPool(parsed.master, manager, ssl=tls, is_master=True, **node)  # type: ignore[no-untyped-call]
    pool.make_connection()  # type: ignore[no-untyped-call]  # proves the options (TypeError)
    if client_options.get("single_connection_client"):
        client = aioredis.Redis(connection_pool=pool, single_connection_client=True)
        client.auto_close_connection_pool = True
        return client
    return aioredis.Redis.from_pool(pool)
