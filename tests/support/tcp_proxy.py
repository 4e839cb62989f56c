"""An asyncio TCP proxy whose behaviour the test switches at run time (fault injection).

Put it between the code under test and Redis or Postgres, then flip ``mode``:
``PASS`` forwards, ``DELAY`` holds every chunk for ``delay_ms`` in each
direction, ``DROP`` accepts new connections and closes them at once (and kills
live ones), ``REFUSE`` stops listening (connection refused). ``close_all()``
cuts the live connections without changing the mode, like a network blip.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from types import TracebackType

__all__ = ["ProxyMode", "TcpProxy"]


class ProxyMode(enum.StrEnum):
    #: Forward bytes as they come.
    PASS = "pass"
    #: Forward each chunk after ``delay_ms`` milliseconds.
    DELAY = "delay"
    #: Accept and immediately close new connections; live ones are cut too.
    DROP = "drop"
    #: Not listening: connects fail with ECONNREFUSED.
    REFUSE = "refuse"


class TcpProxy:
    """Listen on a free 127.0.0.1 port and forward to ``target_host:target_port``.

    Use as ``async with TcpProxy("127.0.0.1", 5432) as proxy: ... proxy.url_port``.
    The listening port stays the same across ``REFUSE`` and back.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = port
        self.mode = ProxyMode.PASS
        self.delay_ms = 0
        #: Connections accepted so far (including dropped ones), for assertions.
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def set_mode(self, mode: ProxyMode | str, *, delay_ms: int | None = None) -> None:
        """Switch behaviour; DROP also cuts live connections, REFUSE stops listening."""
        self.mode = ProxyMode(mode)
        if delay_ms is not None:
            self.delay_ms = delay_ms
        if self.mode is ProxyMode.DELAY and self.delay_ms <= 0:
            raise ValueError("DELAY needs delay_ms > 0")
        if self.mode in (ProxyMode.DROP, ProxyMode.REFUSE):
            await self.close_all()
        if self.mode is ProxyMode.REFUSE:
            await self._stop_listening()
        else:
            await self.start()

    async def passthrough(self) -> None:
        await self.set_mode(ProxyMode.PASS)

    async def delay(self, ms: int) -> None:
        await self.set_mode(ProxyMode.DELAY, delay_ms=ms)

    async def drop(self) -> None:
        await self.set_mode(ProxyMode.DROP)

    async def refuse(self) -> None:
        await self.set_mode(ProxyMode.REFUSE)

    async def close_all(self) -> None:
        """Cut every live connection (both sides see a reset/EOF)."""
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.close_all()
        await self._stop_listening()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        if self.mode is not ProxyMode.PASS and self.mode is not ProxyMode.DELAY:
            writer.close()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pump(reader, upstream_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                if self.mode is ProxyMode.DELAY:
                    await asyncio.sleep(self.delay_ms / 1000)
                if self.mode is ProxyMode.DROP:
                    break
                dst.write(chunk)
                await dst.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.write_eof() if dst.can_write_eof() else dst.close()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (
            f"TcpProxy(127.0.0.1:{self.port} -> {self.target_host}:{self.target_port}, "
            f"mode={self.mode.value}, delay_ms={self.delay_ms})"
        )
