"""Redis gate: PING round trip and memory headroom (the runbook's ``redis-cli ping`` and ``info memory``)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from requeue.api.base import parse_duration
from requeue.api.gates import RedisGate
from requeue.errors import RequeueError
from requeue.gates.result import GateResult, describe_network_error, format_bytes, format_ms
from requeue.queues.connection import TlsOptions
from requeue.redact import redact_url
from requeue.secrets import SecretSource

__all__ = ["check_redis"]

#: PINGs per check; the median is compared with maxLatency so one scheduling hiccup does not flap the gate.
PINGS = 3


async def check_redis(spec: RedisGate, secrets: SecretSource, *, default_url: str | None,
                      default_tls: TlsOptions | None = None) -> GateResult:
    """PING (median of three) against ``maxLatency`` and ``used_memory`` against ``maxMemoryPercent``.

    The URL comes from ``urlSecretRef``, else ``default_url`` (the resource's own Redis,
    verified with ``default_tls``: its ``spec.redis.tls`` CA bundle / insecureSkipVerify).
    The caller bounds the whole check with ``spec.timeout``; this function bounds each
    socket operation with it as well, so a dead server is reported as such, not hung on.
    """
    started = time.monotonic()
    tls = TlsOptions()
    if spec.url_secret_ref is not None:
        try:
            url = (await secrets.get(spec.url_secret_ref)).strip()
        except RequeueError as exc:  # secret missing or unreadable: secret-free message
            return GateResult.fail(exc.message, time.monotonic() - started)
    elif default_url:
        url = default_url
        tls = default_tls or tls
    else:
        return GateResult.fail("no Redis to check: set urlSecretRef", time.monotonic() - started)

    shown = redact_url(url)
    timeout = parse_duration(spec.timeout).total_seconds()
    max_latency = parse_duration(spec.max_latency).total_seconds()
    try:
        client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            health_check_interval=0,
            client_name="requeue-gate",
            **tls.client_kwargs(url),
        )
    except ValueError:
        return GateResult.fail(
            f"{shown}: not a valid Redis URL (expected redis://, rediss:// or unix://)",
            time.monotonic() - started,
        )

    connected = False
    try:
        async with asyncio.timeout(timeout):
            await client.initialize()  # connect, AUTH, HELLO: failures here are connection failures
            connected = True
            pings = []
            for _ in range(PINGS):
                t0 = time.monotonic()
                await client.ping()
                pings.append(time.monotonic() - t0)
            ping = statistics.median(pings)
            memory = await client.info("memory") if spec.max_memory_percent is not None else {}
    except AuthenticationError as exc:
        return GateResult.fail(f"{shown}: {_auth_message(exc)}", time.monotonic() - started)
    except (RedisTimeoutError, TimeoutError):
        hint = ""
        if not connected and url.startswith("rediss://"):
            hint = "; no TLS handshake: does the server speak TLS on that port?"
        return GateResult.fail(
            f"{shown}: no answer within {spec.timeout} (timeout){hint}", time.monotonic() - started
        )
    except RedisConnectionError as exc:
        cause = describe_network_error(exc) or _first_line(exc) or "connection failed"
        return GateResult.fail(f"{shown}: {cause}", time.monotonic() - started)
    except ResponseError as exc:
        return GateResult.fail(
            f"{shown}: Redis answered an error: {_first_line(exc)}", time.monotonic() - started
        )
    except (RedisError, OSError) as exc:
        cause = describe_network_error(exc) or f"{type(exc).__name__}: {_first_line(exc)}"
        return GateResult.fail(f"{shown}: {cause}", time.monotonic() - started)
    finally:
        await _close(client)

    latency = time.monotonic() - started
    if ping > max_latency:
        return GateResult.fail(f"PING took {format_ms(ping)} (maxLatency {spec.max_latency})", latency)
    parts = [f"PING {format_ms(ping)}"]
    if spec.max_memory_percent is not None:
        used = float(memory.get("used_memory", 0))
        limit = float(memory.get("maxmemory", 0))
        if limit <= 0:
            parts.append("maxmemory not set, memory not checked")
        else:
            percent = 100.0 * used / limit
            summary = f"memory {format_bytes(used)} of {format_bytes(limit)} ({percent:.1f}%)"
            if percent > spec.max_memory_percent:
                return GateResult.fail(
                    f"{summary}, above maxMemoryPercent {spec.max_memory_percent:g}", latency
                )
            parts.append(summary)
    return GateResult.ok("; ".join(parts), latency)


def _auth_message(exc: AuthenticationError) -> str:
    """WRONGPASS / NOAUTH / no password configured, in words (the server's text carries no secret)."""
    text = f"{exc.status_code or ''} {exc}"
    if "WRONGPASS" in text or "invalid username-password" in text or "invalid password" in text:
        return "authentication failed: wrong user name or password (WRONGPASS)"
    if "NOAUTH" in text or "Authentication required" in text or "already authenticated" in text:
        return "authentication required (NOAUTH): the URL has no password"
    if "no password is set" in text or "without any password configured" in text:
        return "authentication failed: the URL has a password but the server requires none"
    return "authentication failed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _close(client: aioredis.Redis) -> None:
    """Close without letting a broken socket mask the result."""
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()
