"""Connect to Redis with errors that name the server (redacted) and never the password."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2
import redis.asyncio as aioredis
from redis import exceptions as rx

from requeue.errors import (
    AuthFailed,
    Forbidden,
    RedisCertificateUntrusted,
    RedisOutOfMemory,
    RedisUnavailable,
    RedisUrlInvalid,
)
from requeue.queues.keys import QueueKeys
from requeue.queues.sentinel import is_sentinel_url, named_sentinel_error, sentinel_client
from requeue.queues.tls_probe import scheme_mismatch
from requeue.redact import encode_userinfo, redact_text, redact_url, sensitive_parts, split_url

#: Seconds to wait for connecting and for each command.
DEFAULT_TIMEOUT = 10.0

#: Redis errors that mean "try again later".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """How to verify a ``rediss://`` server (a PEM CA bundle, or not at all: testing only), and
    the client certificate to show it when it asks for one."""

    ca_pem: str | None = None
    insecure_skip_verify: bool = False
    cert_pem: str | None = None
    #: Never in a repr (logs): it is the private key.
    key_pem: str | None = field(default=None, repr=False)

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis.from_url(url, ...)``; none unless ``rediss://``."""
        kwargs: dict[str, Any] = {}
        if url.startswith(("rediss://", "rediss+")):  # rediss+cluster://: TLS to every node
            if self.ca_pem:
                kwargs["ssl_ca_data"] = self.ca_pem
            if self.cert_pem and self.key_pem:
                cert_file, key_file = _client_cert_files(self.cert_pem, self.key_pem)
                kwargs["ssl_certfile"], kwargs["ssl_keyfile"] = cert_file, key_file
            if self.insecure_skip_verify:
                kwargs["ssl_cert_reqs"] = ssl.CERT_NONE
                kwargs["ssl_check_hostname"] = False
        return kwargs


#: Client certificates written for redis-py (it takes files only), by content hash; removed at exit.
_CERT_FILES: dict[str, tuple[str, str]] = {}


def _client_cert_files(cert_pem: str, key_pem: str) -> tuple[str, str]:
    """The certificate and key as files only this process's user can read (redis-py and ``ssl``
    load a client certificate from paths, not data); one pair per distinct content."""
    digest = hashlib.sha256(f"{cert_pem}\0{key_pem}".encode()).hexdigest()
    if digest not in _CERT_FILES:
        directory = Path(tempfile.mkdtemp(prefix="requeue-tls-"))  # mode 0700
        atexit.register(shutil.rmtree, directory, True)
        cert, key = directory / "client.crt", directory / "client.key"
        for path, text in ((cert, cert_pem), (key, key_pem)):
            path.touch(mode=0o600)
            path.write_text(text)
        _CERT_FILES[digest] = (str(cert), str(key))
    return _CERT_FILES[digest]


def is_auth_error(exc: BaseException) -> bool:
    """Redis refused the credentials (or demands some)."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return True
    msg = str(exc)
    return isinstance(exc, rx.ResponseError) and any(
        m in msg for m in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password")
    )


#: NOPERM replies (Redis 6.2 and 7) that name a command: ``... to run the 'hset' command``.
_NOPERM_COMMAND = re2.compile(r"permissions to run the '([^']{1,64})' command")
#: What Redis says inside a script instead (it names no command), and of keys and channels.
_NOPERM_IN_SCRIPT = "script can't run this command"
_NOPERM_KEY = ("permissions to access one of the keys", "can't access at least one of the keys")
_NOPERM_CHANNEL = ("permissions to access one of the channels", "can't publish to the channel")
#: The SHA1 of the script a reply comes from: ``script: <sha>`` (7) or ``call to f_<sha>`` (6.2).
_SCRIPT_SHA = re2.compile(r"(?:script: |f_)([0-9a-f]{40})")


def forbidden_what(exc: BaseException) -> str | None:
    """What Redis's ACL refused (the command, a key, a script's command), or None if not NOPERM.

    Redis names the command only outside scripts; inside one it names the script's SHA, which
    is mapped back to requeue's or BullMQ's script and the commands it calls.
    """
    if not isinstance(exc, rx.ResponseError):
        return None
    msg = str(exc)
    found = _NOPERM_COMMAND.search(msg)
    if found:
        return f"the command {found.group(1).upper()}"
    script = _script_named(msg)
    if _NOPERM_IN_SCRIPT in msg:
        return f"a command inside {script or 'a Lua script'}"
    if any(m in msg for m in _NOPERM_KEY):
        where = f" (from {script})" if script else ""
        return f"a key outside the user's key patterns{where}: requeue needs ~PREFIX:* and ~requeue:*"
    if any(m in msg for m in _NOPERM_CHANNEL):
        return "a Pub/Sub channel"
    if isinstance(exc, rx.NoPermissionError) or "NOPERM" in msg:
        return "a command or key"
    return None


def _script_named(msg: str) -> str | None:
    """'the Lua script NAME (one of: CMD, ...)' for the SHA in ``msg``, if it is requeue's or BullMQ's."""
    from requeue.queues.scripts import script_by_sha  # scripts imports bullmq: only when needed

    sha = _SCRIPT_SHA.search(msg)
    named = script_by_sha(sha.group(1)) if sha else None
    if named is None:
        return None
    name, commands = named
    return f"the Lua script {name} (one of: {', '.join(commands)})"


def is_certificate_error(exc: BaseException) -> bool:
    """Whether a ``rediss://`` connection failed because the server's certificate did not verify.

    redis-py wraps the ``ssl.SSLCertVerificationError`` in a ``ConnectionError``; its text stays.
    """
    return isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, rx.ConnectionError | OSError) and "certificate verify failed" in str(exc)
    )


def is_oom_error(exc: BaseException) -> bool:
    """Whether Redis refused a write for ``maxmemory`` (``OOM command not allowed ...``).

    The reply arrives as ``OutOfMemoryError`` for a plain command, but wrapped in a
    ``ResponseError`` from a script or inside a MULTI, so the text decides too.
    """
    return isinstance(exc, rx.OutOfMemoryError) or (
        isinstance(exc, rx.ResponseError) and "OOM command not allowed" in str(exc)
    )


def client_from_url(url: str, **kwargs: Any) -> aioredis.Redis:
    """``redis.asyncio.Redis.from_url`` for a URL as a person writes it.

    A password made by ``openssl rand -base64`` holds ``/`` (and sometimes users
    paste ``?``, ``#`` or ``@``); redis-py splits with urlsplit and would take the
    ``/`` for the start of the path. Split at the last ``@`` the meaning is
    unambiguous, so the userinfo is percent-encoded first (see
    :func:`requeue.redact.encode_userinfo`) and the URL connects as meant.

    redis-py hands query options it does not parse itself (``?ssl_cert_reqs=none``
    on ``redis://``, a typo) to the connection class, which only refuses them with a
    ``TypeError`` at the first command. So one connection object is built here, before
    anything is sent: a bad option is a :class:`RedisUrlInvalid` naming it, never a
    traceback and never "Redis unreachable".

    A ``redis+sentinel://`` URL gives a client on the primary its Sentinels name (see
    :mod:`requeue.queues.sentinel`).

    :raises RedisUrlInvalid: the URL or one of its query options cannot be used (the
        message shows the URL redacted and the option's name, never its value).
    """
    if is_sentinel_url(url):
        return sentinel_client(url, **kwargs)
    try:
        client = _build(url, kwargs)
    except (TypeError, ValueError, rx.RedisError) as exc:
        problem = _url_problem(url, exc, kwargs)
        raise RedisUrlInvalid(f"{redact_url(url)} is not a valid Redis URL: {problem}") from None
    return client


#: The URL forms requeue connects with, for messages (written so that redaction leaves them alone).
URL_FORMS = (
    "redis://, rediss:// or unix:// followed by [user:password@]host[:port][/db], or "
    "redis+sentinel:// followed by [user:password@]host[:port][,host[:port]...]/<master-name>[/<db>]"
)


def _url_problem(url: str, exc: BaseException, kwargs: dict[str, Any]) -> str:
    """What is wrong with ``url``: the query option at fault, found by trying each alone, by
    name (a name that looks like one) but never with its value, as query values may be tokens."""
    parts = split_url(url)
    if parts is None or not parts.query or _unusable(url[: url.rfind("?" + parts.query)], kwargs) is not None:
        return f"{redact_text(str(exc), sensitive_parts(url))} (expected {URL_FORMS})"
    bare = url[: url.rfind("?" + parts.query)]
    for pair in parts.query.split("&"):
        failure = _unusable(f"{bare}?{pair}", kwargs)
        if failure is None:
            continue
        name, has_value, _ = pair.partition("=")
        if not has_value or not _OPTION_NAME.match(name):
            return "a query option is not one redis-py takes (options are name=value); remove it"
        if name.startswith("ssl_") and parts.scheme.lower() != "rediss":
            return f"the option {name!r} is for TLS, and this URL is {parts.scheme}:// (TLS is rediss://)"
        if isinstance(failure, TypeError):
            return f"redis-py takes no option {name!r} in a Redis URL; remove it"
        return f"the option {name!r} has a value redis-py cannot use; fix or remove it"
    return "its query options together are not usable by redis-py"


#: A query option's name as redis-py's keyword arguments are spelled (anything else is not shown).
_OPTION_NAME = re2.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _build(url: str, kwargs: dict[str, Any]) -> aioredis.Redis:
    """A client for ``url``, and one connection object built (not connected) to prove its options."""
    client = aioredis.Redis.from_url(encode_userinfo(url), **kwargs)
    client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    return client


def _unusable(url: str, kwargs: dict[str, Any]) -> BaseException | None:
    """The error building a client and one connection object for ``url`` raises, or None."""
    try:
        _build(url, kwargs)
    except (TypeError, ValueError, rx.RedisError) as exc:
        return exc
    return None


def map_redis_error(
    exc: BaseException, *, url: str | None = None, queue: str | None = None, replay: str | None = None
) -> AuthFailed | RedisUnavailable:
    """Turn a redis-py error into requeue's error tree; the message is redacted."""
    where = f" at {redact_url(url)}" if url else ""
    detail = redact_text(f"{type(exc).__name__}: {exc}", sensitive_parts(url) if url else [])
    named = named_sentinel_error(exc, where=where, detail=detail, queue=queue, replay=replay)
    if named is not None:
        return named
    refused = forbidden_what(exc)
    if refused is not None:
        return Forbidden(
            f"Redis{where} accepted the credentials, but its ACL user may not use {refused} "
            f"({detail}); grant it (README, 'Redis ACL users', lists the exact ACL SETUSER lines)",
            queue=queue,
            replay=replay,
        )
    if is_auth_error(exc):
        return AuthFailed(f"Redis{where} refused the credentials ({detail})", queue=queue, replay=replay)
    if is_certificate_error(exc):
        return RedisCertificateUntrusted(
            f"Redis{where} presents a TLS certificate that does not verify ({detail}): give the CA "
            "that signed it (a PEM bundle) in spec.redis.tls.caSecretRef, or with the CLI as "
            "?ssl_ca_certs=/path/ca.pem in the URL; or check the host name",
            queue=queue,
            replay=replay,
        )
    if is_oom_error(exc):
        return RedisOutOfMemory(
            f"Redis{where} is out of memory and refuses writes ({detail}); nothing more moves until "
            "it has room: raise maxmemory or free memory, and the replay goes on by itself",
            queue=queue,
            replay=replay,
        )
    return RedisUnavailable(f"Redis{where} unavailable ({detail})", queue=queue, replay=replay)


def _client_kwargs(url: str, db: int | None, tls: TlsOptions, timeout_s: float) -> dict[str, Any]:
    """What redis-py gets for every client of :func:`connect` (and each primary of a cluster)."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
    }
    if db is not None:
        kwargs["db"] = db
    kwargs.update(tls.client_kwargs(url))
    return kwargs


async def connect_each_primary(url: str, *, timeout_s: float = DEFAULT_TIMEOUT) -> list[aioredis.Redis]:
    """A client per primary that answered PING: every primary of a ``redis+cluster://`` URL (for
    what lives in every slot, e.g. the replays of all queues), else the one server of ``url``.

    :raises RedisUrlInvalid: the URL cannot be parsed.
    :raises AuthFailed: credentials refused.
    :raises RedisUnavailable: a primary (or every seed) cannot be reached.
    """
    if not url.partition("://")[0].lower().endswith("+cluster"):
        return [await connect(url, timeout_s=timeout_s)]
    from requeue.queues.cluster import connect_primaries  # it builds on this module

    kwargs = _client_kwargs(url, None, TlsOptions(), timeout_s)
    clients: list[aioredis.Redis] = []
    try:
        clients = await connect_primaries(url, kwargs)
        for client in clients:
            await client.ping()
    except (rx.RedisError, OSError) as exc:
        for client in clients:
            await client.aclose()
        raise map_redis_error(exc, url=url) from None
    return clients


async def connect(
    url: str,
    *,
    db: int | None = None,
    tls_ca_pem: str | None = None,
    tls_insecure_skip_verify: bool = False,
    tls_cert_pem: str | None = None,
    tls_key_pem: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT,
    queues: Sequence[QueueKeys] = (),
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` (decoded responses) that answered PING.

    A ``redis+cluster://`` URL gives a client to the primary that serves the slot of
    ``queues`` (see :mod:`requeue.queues.cluster`); they must share one hash tag.

    :param db: overrides the database number in the URL.
    :param tls_ca_pem: PEM CA bundle to verify a ``rediss://`` server with.
    :param tls_cert_pem: PEM client certificate (with ``tls_key_pem``), for a server that asks.
    :raises AuthFailed: credentials refused.
    :raises RedisUrlInvalid: the URL cannot be parsed.
    :raises RedisUnavailable: cannot connect; the message carries the redacted URL.
    :raises HashTagRequired: a cluster URL, and the queues' keys would not share one slot.
    """
    kwargs = _client_kwargs(
        url,
        db,
        TlsOptions(
            ca_pem=tls_ca_pem,
            insecure_skip_verify=tls_insecure_skip_verify,
            cert_pem=tls_cert_pem,
            key_pem=tls_key_pem,
        ),
        timeout_s,
    )
    if url.partition("://")[0].lower().endswith("+cluster"):
        from requeue.queues.cluster import connect_slot_owner  # it builds on this module

        client: aioredis.Redis = await connect_slot_owner(url, queues, kwargs)
    else:
        client = client_from_url(url, **kwargs)
    try:
        await client.ping()
    except (rx.RedisError, OSError) as exc:
        await client.aclose()
        error = map_redis_error(exc, url=url)
        if type(error) is RedisUnavailable and (mismatch := await scheme_mismatch(url)):
            raise RedisUrlInvalid(f"Redis at {redact_url(url)}: {mismatch}") from None
        raise error from None
    return client
