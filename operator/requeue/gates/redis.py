"""Redis gate: PING round trip and memory headroom (the runbook's ``redis-cli ping`` and ``info memory``).

A ``redis+cluster://`` URL checks the whole cluster, since a replay or policy may use any slot:
the first seed that answers must report ``cluster_state:ok`` (``CLUSTER INFO``), and then every
primary its ``CLUSTER SLOTS`` names is PINGed (the slowest median is judged against
``maxLatency``) and, with ``maxMemoryPercent``, its ``INFO memory`` read (the fullest is judged).
A primary that does not answer fails the gate with its address.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from requeue.api.base import parse_duration
from requeue.api.conditions import Reason
from requeue.api.gates import RedisGate
from requeue.errors import RedisUrlInvalid
from requeue.gates.destinations import DestinationDenied, DestinationPolicy, check_url, current_policy
from requeue.gates.result import (
    CheckFailed,
    GateResult,
    describe_network_error,
    first_line,
    format_bytes,
    format_ms,
    read_secret,
)
from requeue.queues.cluster import NodeOpener, is_cluster_url, node_opener, primaries_of
from requeue.queues.connection import TlsOptions, client_from_url
from requeue.queues.sentinel import AddressCheck, is_sentinel_url
from requeue.redact import redact_url
from requeue.secrets import SecretSource

__all__ = ["check_redis"]

#: PINGs per check; the median is compared with maxLatency so one scheduling hiccup does not flap the gate.
PINGS = 3


async def check_redis(
    spec: RedisGate,
    secrets: SecretSource,
    *,
    default_url: str | None,
    default_tls: TlsOptions | None = None,
    policy: DestinationPolicy | None = None,
) -> GateResult:
    """PING (median of three) against ``maxLatency`` and ``used_memory`` against ``maxMemoryPercent``.

    The URL comes from ``urlSecretRef``, else ``default_url`` (the resource's own Redis,
    verified with ``default_tls``: its ``spec.redis.tls`` CA bundle / insecureSkipVerify).
    The caller bounds the whole check with ``spec.timeout``; this function bounds each
    socket operation with it as well, so a dead server is reported as such, not hung on.
    """
    started = time.monotonic()
    try:
        url, tls = await _redis_to_check(spec, secrets, default_url, default_tls)
        if spec.url_secret_ref is not None:  # the resource's own Redis is no gate destination
            await _allowed(url, policy or current_policy())
        timeout = parse_duration(spec.timeout).total_seconds()
        max_latency = parse_duration(spec.max_latency).total_seconds()
        # a gate's own Sentinels choose the primary's address: it must pass the policy too
        check = (policy or current_policy()).resolve if spec.url_secret_ref is not None else None
        if is_cluster_url(url):
            ping, memory, where = await _measure_cluster(url, tls, spec, timeout, check)
        else:
            client = _client_for(url, tls, timeout, check)
            ping, memory = await _measure(client, spec, url, timeout)
            where = ""
    except CheckFailed as failure:
        return failure.result(started)
    return _judge(spec, ping, memory, max_latency, time.monotonic() - started, where=where)


async def _allowed(url: str, policy: DestinationPolicy) -> None:
    """The operator's gate policy lets ``url``'s host through (after DNS; the connection
    resolves it again, so unlike HTTP gates a rebinding name is checked, not pinned)."""
    try:
        await check_url(policy, url, 6379)
    except DestinationDenied as exc:
        raise CheckFailed(
            f"{redact_url(url)}: {exc.message}", misconfigured=Reason.DESTINATION_DENIED
        ) from None
    except OSError:
        pass  # not resolvable: connecting says so in its own words


async def _redis_to_check(
    spec: RedisGate, secrets: SecretSource, default_url: str | None, default_tls: TlsOptions | None
) -> tuple[str, TlsOptions]:
    """The URL and TLS options: from ``urlSecretRef``, else the resource's own Redis."""
    if spec.url_secret_ref is not None:
        return (await read_secret(secrets, spec.url_secret_ref)).strip(), TlsOptions()
    if default_url:
        return default_url, default_tls or TlsOptions()
    raise CheckFailed("no Redis to check: set urlSecretRef", misconfigured=Reason.GATE_MISCONFIGURED)


def _client_for(url: str, tls: TlsOptions, timeout: float, check: AddressCheck | None) -> aioredis.Redis:
    """A one-connection client that does not retry: a gate reports a failure, it does not mask it.

    Nothing is sent yet; only the URL is parsed. ``check`` vets the primary's address that the
    Sentinels of a ``redis+sentinel://`` URL name.
    """
    try:
        return client_from_url(
            url,
            **({"check_address": check} if check is not None and is_sentinel_url(url) else {}),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            health_check_interval=0,
            client_name="requeue-gate",
            **tls.client_kwargs(url),
        )
    except RedisUrlInvalid as exc:  # names the query option at fault; redacted
        raise CheckFailed(exc.message, misconfigured=exc.reason) from None


async def _measure(
    client: aioredis.Redis, spec: RedisGate, url: str, seconds: float
) -> tuple[float, dict[str, Any]]:
    """Connect, PING :data:`PINGS` times and (with ``maxMemoryPercent``) read ``INFO memory``.

    One deadline of ``seconds`` for all of it; the client is closed whatever happens.
    Returns the median PING round trip (seconds) and the memory section (empty if not read).
    """
    connected = False
    try:
        async with asyncio.timeout(seconds):
            await client.initialize()  # connect, AUTH, HELLO: failures here are connection failures
            connected = True
            ping = await _median_ping(client)
            memory = await client.info("memory") if spec.max_memory_percent is not None else {}
    except (RedisError, OSError) as exc:
        cause = _failure_text(exc, spec, tls_handshake_pending=not connected and url.startswith("rediss://"))
        raise CheckFailed(f"{redact_url(url)}: {cause}") from exc
    finally:
        await _close(client)
    return ping, memory


async def _median_ping(client: aioredis.Redis) -> float:
    """The median of :data:`PINGS` round trips, so one scheduling hiccup does not flap the gate."""
    pings = []
    for _ in range(PINGS):
        t0 = time.monotonic()
        await client.ping()
        pings.append(time.monotonic() - t0)
    return statistics.median(pings)


def _failure_text(exc: RedisError | OSError, spec: RedisGate, *, tls_handshake_pending: bool) -> str:
    """What went wrong, for the person on call.

    The order matters: :class:`AuthenticationError` is a ``ConnectionError`` and
    the builtin ``TimeoutError`` an ``OSError``.
    """
    if isinstance(exc, AuthenticationError):
        return _auth_message(exc)
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        hint = "; no TLS handshake: does the server speak TLS on that port?" if tls_handshake_pending else ""
        return f"no answer within {spec.timeout} (timeout){hint}"
    if isinstance(exc, RedisConnectionError):
        return describe_network_error(exc) or first_line(exc) or "connection failed"
    if isinstance(exc, ResponseError):
        return f"Redis answered an error: {first_line(exc)}"
    return describe_network_error(exc) or f"{type(exc).__name__}: {first_line(exc)}"


def _judge(
    spec: RedisGate,
    ping: float,
    memory: Mapping[str, Any],
    max_latency: float,
    latency: float,
    *,
    where: str = "",
) -> GateResult:
    """PING against ``maxLatency``, then memory against ``maxMemoryPercent``; the message lists both
    (``where``: what was measured, on a cluster)."""
    lead = f"{where}: " if where else ""
    if ping > max_latency:
        return GateResult.fail(f"{lead}PING took {format_ms(ping)} (maxLatency {spec.max_latency})", latency)
    parts = [f"{lead}PING {format_ms(ping)}"]
    if spec.max_memory_percent is not None:
        healthy, summary = _memory_use(memory, spec.max_memory_percent)
        if not healthy:
            return GateResult.fail(summary, latency)
        parts.append(summary)
    return GateResult.ok("; ".join(parts), latency)


def _gate_kwargs(url: str, tls: TlsOptions, timeout: float) -> dict[str, Any]:
    """What every gate client gets: bounded sockets, no retries (a gate reports, it does not mask)."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": "requeue-gate",
        **tls.client_kwargs(url),
    }


async def _measure_cluster(
    url: str, tls: TlsOptions, spec: RedisGate, seconds: float, check: AddressCheck | None
) -> tuple[float, dict[str, Any], str]:
    """``cluster_state:ok`` from the first seed that answers, then PING (and ``INFO memory``) of
    every primary; the slowest PING, the fullest memory section, and words for what was checked.

    ``check`` vets each primary's address (a gate's own cluster names them, as Sentinels do).
    """
    shown = redact_url(url)
    try:
        parsed, opener = await node_opener(url, _gate_kwargs(url, tls, seconds))
    except RedisUrlInvalid as exc:
        raise CheckFailed(exc.message, misconfigured=exc.reason) from None
    where = ""
    try:
        async with asyncio.timeout(seconds):
            state, nodes, where = await _cluster_state(parsed.seeds, opener)
            if state != "ok":
                raise CheckFailed(f"{shown}: cluster_state:{state} (CLUSTER INFO of {where})")
            if not nodes:
                raise CheckFailed(f"{shown}: no slot is served (CLUSTER SLOTS of {where})")
            worst_ping, fullest = 0.0, dict[str, Any]()
            for host, port in nodes:
                where = f"primary {host}:{port}"
                if check is not None:
                    await check(host, port)
                ping, memory = await _node_measure(opener(host, port), spec)
                worst_ping = max(worst_ping, ping)
                if _fullness(memory) >= _fullness(fullest):
                    fullest = memory
    except DestinationDenied as exc:
        raise CheckFailed(
            f"{shown}: {where}: {exc.message}", misconfigured=Reason.DESTINATION_DENIED
        ) from None
    except (RedisError, OSError) as exc:
        cause = _failure_text(exc, spec, tls_handshake_pending=False)
        raise CheckFailed(f"{shown}: {where or 'no seed answered'}: {cause}") from exc
    return worst_ping, fullest, f"cluster_state:ok, {len(nodes)} primaries (slowest PING)"


async def _cluster_state(
    seeds: Sequence[tuple[str, int]], opener: NodeOpener
) -> tuple[str, list[tuple[str, int]], str]:
    """``cluster_state`` and the primaries, as the first seed that answers says; and which seed."""
    last: BaseException | None = None
    for host, port in seeds:
        client = opener(host, port)
        try:
            info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            slots = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except AuthenticationError:
            raise  # the same credentials go to every node: no other seed would take them
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            last = exc
            continue
        finally:
            await _close(client)
        text = info.decode() if isinstance(info, bytes) else str(info)
        state = next(
            (
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("cluster_state:")
            ),
            "unknown",
        )
        return state, primaries_of(slots, asked=host), f"seed {host}:{port}"
    assert last is not None
    raise last


async def _node_measure(client: aioredis.Redis, spec: RedisGate) -> tuple[float, dict[str, Any]]:
    """One primary: median PING and (with ``maxMemoryPercent``) its memory section."""
    try:
        ping = await _median_ping(client)
        memory = await client.info("memory") if spec.max_memory_percent is not None else {}
    finally:
        await _close(client)
    return ping, memory


def _fullness(memory: Mapping[str, Any]) -> float:
    limit = float(memory.get("maxmemory", 0) or 0)
    return float(memory.get("used_memory", 0) or 0) / limit if limit > 0 else -1.0


def _memory_use(memory: Mapping[str, Any], max_percent: float) -> tuple[bool, str]:
    """Whether ``used_memory`` is within ``max_percent`` of ``maxmemory``, and the words for it.

    Without ``maxmemory`` Redis grows until the host runs out: there is no limit to compare with.
    """
    used = float(memory.get("used_memory", 0))
    limit = float(memory.get("maxmemory", 0))
    if limit <= 0:
        return True, "maxmemory not set, memory not checked"
    percent = 100.0 * used / limit
    summary = f"memory {format_bytes(used)} of {format_bytes(limit)} ({percent:.1f}%)"
    if percent > max_percent:
        return False, f"{summary}, above maxMemoryPercent {max_percent:g}"
    return True, summary


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


async def _close(client: aioredis.Redis) -> None:
    """Close without letting a broken socket mask the result."""
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()
