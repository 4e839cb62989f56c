"""Connect to Redis with errors that name the server (redacted) and never the password."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx

from requeue.errors import AuthFailed, RedisOutOfMemory, RedisUnavailable, RedisUrlInvalid
from requeue.redact import encode_userinfo, redact_text, redact_url, sensitive_parts

#: Seconds to wait for connecting and for each command.
DEFAULT_TIMEOUT = 10.0

#: Redis errors that mean "try again later".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, ConnectionError, TimeoutError, OSError,
)


@dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """How to verify a ``rediss://`` server: a PEM CA bundle, or not at all (testing only)."""

    ca_pem: str | None = None
    insecure_skip_verify: bool = False

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis.from_url(url, ...)``; none unless ``rediss://``."""
        kwargs: dict[str, Any] = {}
        if url.startswith("rediss://"):
            if self.ca_pem:
                kwargs["ssl_ca_data"] = self.ca_pem
            if self.insecure_skip_verify:
                kwargs["ssl_cert_reqs"] = ssl.CERT_NONE
                kwargs["ssl_check_hostname"] = False
        return kwargs


def is_auth_error(exc: BaseException) -> bool:
    """Redis refused the credentials (or demands some)."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return True
    msg = str(exc)
    return isinstance(exc, rx.ResponseError) and any(
        m in msg for m in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password")
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

    :raises RedisUrlInvalid: the URL still cannot be parsed (the message is redacted).
    """
    try:
        return aioredis.Redis.from_url(encode_userinfo(url), **kwargs)
    except ValueError as exc:
        detail = redact_text(str(exc), sensitive_parts(url))
        raise RedisUrlInvalid(
            f"invalid Redis URL {redact_url(url)}: {detail} (expected "
            "redis://[user:password@]host[:port][/db], rediss://... or unix://[:password@]/path)"
        ) from None


def map_redis_error(exc: BaseException, *, url: str | None = None, queue: str | None = None,
                    replay: str | None = None) -> AuthFailed | RedisUnavailable:
    """Turn a redis-py error into requeue's error tree; the message is redacted."""
    where = f" at {redact_url(url)}" if url else ""
    detail = redact_text(f"{type(exc).__name__}: {exc}", sensitive_parts(url) if url else [])
    if is_auth_error(exc):
        return AuthFailed(f"Redis{where} refused the credentials ({detail})", queue=queue, replay=replay)
    if is_oom_error(exc):
        return RedisOutOfMemory(
            f"Redis{where} is out of memory and refuses writes ({detail}); nothing more moves until "
            "it has room: raise maxmemory or free memory, and the replay goes on by itself",
            queue=queue, replay=replay)
    return RedisUnavailable(f"Redis{where} unavailable ({detail})", queue=queue, replay=replay)


async def connect(
    url: str,
    *,
    db: int | None = None,
    tls_ca_pem: str | None = None,
    tls_insecure_skip_verify: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` (decoded responses) that answered PING.

    :param db: overrides the database number in the URL.
    :param tls_ca_pem: PEM CA bundle to verify a ``rediss://`` server with.
    :raises AuthFailed: credentials refused.
    :raises RedisUrlInvalid: the URL cannot be parsed.
    :raises RedisUnavailable: cannot connect; the message carries the redacted URL.
    """
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
    }
    if db is not None:
        kwargs["db"] = db
    kwargs.update(TlsOptions(ca_pem=tls_ca_pem, insecure_skip_verify=tls_insecure_skip_verify)
                  .client_kwargs(url))
    client = client_from_url(url, **kwargs)
    try:
        await client.ping()
    except (rx.RedisError, OSError) as exc:
        await client.aclose()
        raise map_redis_error(exc, url=url) from None
    return client
