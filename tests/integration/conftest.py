"""Fixtures the integration tests share (the services themselves come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from requeue.queues import connect
from support.gates import ControlledHttp


@pytest_asyncio.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client from :func:`requeue.queues.connect` (as the engine gets it) on ``redis_url``."""
    client = await connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ControlledHttp]:
    """A local HTTP API whose answers the test controls (for HTTP gates)."""
    server = await ControlledHttp().start()
    try:
        yield server
    finally:
        await server.stop()
