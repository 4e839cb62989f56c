"""A one-route HTTP endpoint on 127.0.0.1 for gate tests: the test decides what it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["Handler", "endpoint"]


@asynccontextmanager
async def endpoint(handler: Handler, *, path: str = "/health", method: str = "GET") -> AsyncIterator[str]:
    """Serve ``method path`` with ``handler`` on a free loopback port; yields the URL."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()
