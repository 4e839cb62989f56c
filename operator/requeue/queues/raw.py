"""Commands packed by hand, and a WATCH/MULTI/EXEC transaction over one pooled connection.

The replay batch is the hot path: a few hundred ``EVALSHA reprocessJob`` calls
per transaction, whose keys differ only in the job id. Building them through
redis-py's pipeline costs ~50 µs of Python per job (coroutines, key lists,
encoding), more than Redis needs to run the script. Here the constant part of
each command is encoded once and the batch is one ``bytes`` join; replies are
parsed by redis-py's own parser (hiredis when installed) on the same connection.

A :class:`RawTransaction` is two round trips: ``WATCH`` plus the reads the batch
depends on (pipelined), then ``MULTI ... EXEC``. Anything unexpected (an error,
a cancellation) disconnects the connection before it goes back to the pool, so
no WATCH or half-read reply leaks into the next user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript

try:  # hiredis's own "incomplete" marker (public: hiredis.Reader.gets returns False; some
    # versions return this sentinel); absent without hiredis, and the fast path then never runs
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _INCOMPLETE
except ImportError:  # pragma: no cover
    _INCOMPLETE = object()

Arg = str | bytes | int


def bulk(value: Arg) -> bytes:
    """One RESP bulk string."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int):
        data = str(value).encode()
    else:
        data = value
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(*args: Arg) -> bytes:
    """One command as RESP bytes."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def script_text(script: AsyncScript) -> str | bytes:
    """A registered script's Lua, for an ``EVAL`` that cannot fail with NOSCRIPT inside a MULTI."""
    body = script.script
    return body if isinstance(body, str | bytes) else bytes(body)


def raise_errors(replies: Sequence[Any]) -> None:
    """A pipelined reply that is an error fails the whole step (after what EXEC committed)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def buffered_reader(conn: AbstractConnection) -> Any | None:
    """The ``hiredis.Reader`` behind ``conn``, or None when there is none to be had.

    redis-py keeps it in private attributes (``_parser._reader``), which a release may
    rename: then this returns None and every reply goes through the public
    ``read_response``. Only an object with hiredis's public ``gets`` is used.
    """
    reader = getattr(getattr(conn, "_parser", None), "_reader", None)
    return reader if callable(getattr(reader, "gets", None)) else None


MULTI = pack("MULTI")
EXEC = pack("EXEC")


class RawTransaction:
    """``async with RawTransaction(redis) as tx:`` then ``await tx.call([...])`` (reads after WATCH)
    and ``await tx.exec([...])`` (MULTI/EXEC; None when a WATCHed key changed)."""

    def __init__(self, redis: Redis, *, fast_replies: bool = True) -> None:
        """:param fast_replies: take replies hiredis already buffered straight from its reader
        (redis-py internals, looked up defensively); False reads every reply through the
        public ``read_response``. Both are tested; the results are the same."""
        self.redis = redis
        self.conn: AbstractConnection | None = None
        self._clean = True
        self._fast = fast_replies

    async def __aenter__(self) -> RawTransaction:
        self.conn = await self.redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if exc is not None or not self._clean:
                await conn.disconnect()
        finally:
            await self.redis.connection_pool.release(conn)

    async def _reply(self) -> Any:
        """The next reply; errors are returned, not raised.

        Replies already buffered by hiredis are taken straight from its reader: redis-py's
        ``read_response`` costs ~10 µs per reply (a timeout context per call), which for a
        few hundred ``QUEUED`` replies per transaction is more than Redis spends on them.
        Anything unusual (no hiredis, more bytes needed) goes through ``read_response``.
        """
        assert self.conn is not None
        reader = buffered_reader(self.conn) if self._fast else None
        if reader is not None:
            reply = reader.gets()
            if reply is not _INCOMPLETE and reply is not False:
                if isinstance(reply, ConnectionError):
                    raise reply
                return reply
        try:
            return await self.conn.read_response()
        except rx.ResponseError as exc:
            return exc

    async def call(self, commands: Sequence[bytes]) -> list[Any]:
        """Send packed commands in one round trip; one reply each (errors as exception objects)."""
        assert self.conn is not None
        self._clean = False
        await self.conn.send_packed_command(list(commands), check_health=False)
        replies = [await self._reply() for _ in commands]
        self._clean = True
        return replies

    async def exec(self, commands: Iterable[bytes]) -> list[Any] | None:
        """``MULTI``, the commands, ``EXEC``: the EXEC reply, or None when WATCH aborted it.

        :raises redis.exceptions.ResponseError: a command was refused while queueing
            (then nothing ran: Redis answers EXECABORT).
        """
        assert self.conn is not None
        body = list(commands)
        self._clean = False
        await self.conn.send_packed_command([MULTI, *body, EXEC], check_health=False)
        queue_error: Exception | None = None
        for _ in range(len(body) + 1):  # +OK, then +QUEUED or an error per command
            reply = await self._reply()
            if isinstance(reply, Exception):
                queue_error = queue_error or reply
        result = await self._reply()
        self._clean = True
        if isinstance(result, Exception):  # EXECABORT: nothing ran
            raise queue_error or result
        if result is None:
            return None
        return list(result)

    async def guarded_exec(
        self, before: Sequence[bytes], commands: Iterable[bytes]
    ) -> tuple[list[Any], list[Any] | None]:
        """``before`` (e.g. ``WATCH`` and a check that may touch a WATCHed key to veto), then
        ``MULTI``, the commands, ``EXEC``, all in ONE write: one round trip, and Redis runs
        it back to back. Returns the replies to ``before`` and the EXEC reply (None: aborted).

        :raises redis.exceptions.ResponseError: a command was refused while queueing.
        """
        assert self.conn is not None
        body = list(commands)
        self._clean = False
        await self.conn.send_packed_command([*before, MULTI, *body, EXEC], check_health=False)
        first = [await self._reply() for _ in before]
        queue_error: Exception | None = None
        for _ in range(len(body) + 1):
            reply = await self._reply()
            if isinstance(reply, Exception):
                queue_error = queue_error or reply
        result = await self._reply()
        self._clean = True
        if isinstance(result, Exception):
            raise queue_error or result
        return first, (None if result is None else list(result))
