"""Tell "unreachable" from "the other protocol on this port" when a first connection fails.

``rediss://`` to a port where Redis speaks plain RESP hangs in the TLS handshake until the
connect timeout, and ``redis://`` to a TLS port is closed at the first byte: both looked like
"Redis unreachable", retried for the whole ``--connect-timeout`` while the fix is one letter
of the URL. After such a failure one bounded probe (a plain ``PING``, or a TLS handshake that
verifies nothing and sends nothing) tells which, and the error says what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

__all__ = ["PROBE_TIMEOUT", "scheme_mismatch"]

#: Seconds one probe may take (it runs only after a connection already failed).
PROBE_TIMEOUT = 2.0


async def scheme_mismatch(url: str, *, timeout_s: float = PROBE_TIMEOUT) -> str | None:
    """What to change when the server at ``url``'s host and port speaks the other protocol than
    its scheme says; None when it does not (or cannot be told: down, firewalled, a unix socket)."""
    try:
        parts = urlsplit(url)
        host, port, scheme = parts.hostname, parts.port or 6379, parts.scheme.lower()
    except ValueError:
        return None
    if not host or scheme not in ("redis", "rediss"):
        return None
    where = f"{host}:{port}"
    if scheme == "rediss" and await _speaks_plain_resp(host, port, timeout_s):
        return (
            f"{where} answers Redis without TLS, but the URL is rediss://: use redis:// for this "
            "port, or the server's TLS port (tls-port) with rediss://"
        )
    if scheme == "redis" and await _speaks_tls(host, port, timeout_s):
        return f"{where} speaks TLS, but the URL is redis://: use rediss:// (and its CA) for this port"
    return None


async def _speaks_plain_resp(host: str, port: int, timeout_s: float) -> bool:
    """A plain ``PING`` gets a RESP line back (``+PONG``, or an error such as ``-NOAUTH``)."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"PING\r\n")
            await writer.drain()
            first = await reader.read(1)
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return first in (b"+", b"-")


async def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """A TLS handshake completes (nothing verified, nothing sent after it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    return True
