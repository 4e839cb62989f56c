"""Fixtures for the Node.js BullMQ interop tests (Redis fixtures come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from support.node import node_available


@pytest.fixture(scope="session", autouse=True)
def _node_interop_installed() -> str:
    """Fail (never skip) every interop test when Node or the npm packages are missing."""
    return node_available()
