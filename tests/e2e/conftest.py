"""Fixtures of the end-to-end tests that more than one file needs (the rest: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from support.queuepolicy import SlackSink


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackSink]:
    """A local Slack webhook that records every message the operator posts."""
    sink = await SlackSink().start()
    try:
        yield sink
    finally:
        await sink.stop()
