"""Fixtures for the Node.js BullMQ interop tests.

The Redis fixtures (``redis_server``, ``redis_url``, ``redis_client``) belong to
the shared ``tests/conftest.py``; the fallbacks below exist only while that file
does not, and disappear by themselves once it lands.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:  # the shared conftest makes ``support`` importable too
    sys.path.insert(0, str(TESTS_DIR))

from support.node import node_available  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _node_interop_installed() -> str:
    """Fail (never skip) every interop test when Node or the npm packages are missing."""
    return node_available()


if not (TESTS_DIR / "conftest.py").exists():

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[RedisServer]:
        with RedisServer() as server:
            yield server

    @pytest.fixture
    def redis_url(redis_server: RedisServer) -> str:
        client = redis.Redis.from_url(redis_server.url)
        try:
            client.flushall()
        finally:
            client.close()
        return redis_server.url

    @pytest.fixture
    async def redis_client(redis_url: str) -> AsyncIterator[aredis.Redis]:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            yield client
        finally:
            await client.aclose()
