"""Where secret values come from: Kubernetes Secrets in the operator, flags or env in the CLI.

The core only sees :class:`SecretSource`; it never knows which one it got.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol

from requeue.api.base import SecretKeyRef
from requeue.errors import SecretNotFound


class SecretSource(Protocol):
    """Resolves a Secret reference of the resource's own namespace to its value."""

    async def get(self, ref: SecretKeyRef) -> str:
        """The value; raises :class:`SecretNotFound` naming the Secret and key."""
        ...


def env_name(ref: SecretKeyRef) -> str:
    """``REQUEUE_SECRET_<NAME>_<KEY>``, upper-cased, other characters as ``_``."""
    return "REQUEUE_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()


class StaticSecrets:
    """Secrets given on the command line (``--secret name/key=value``) or in the environment."""

    def __init__(self, values: Mapping[tuple[str, str], str], *, environ: Mapping[str, str] | None = None):
        self._values = dict(values)
        self._environ = os.environ if environ is None else environ

    @classmethod
    def from_flags(cls, flags: list[str] | tuple[str, ...]) -> StaticSecrets:
        """Parse ``name/key=value`` flags; raises ValueError naming a malformed one (not its value)."""
        values: dict[tuple[str, str], str] = {}
        for flag in flags:
            ref, sep, value = flag.partition("=")
            name, slash, key = ref.partition("/")
            if not sep or not slash or not name or not key:
                raise ValueError(f"--secret {ref!r}: expected NAME/KEY=VALUE")
            values[(name, key)] = value
        return cls(values)

    async def get(self, ref: SecretKeyRef) -> str:
        """The flag's value, else ``REQUEUE_SECRET_<NAME>_<KEY>`` from the environment."""
        if (ref.name, ref.key) in self._values:
            return self._values[(ref.name, ref.key)]
        value = self._environ.get(env_name(ref))
        if value is None:
            raise SecretNotFound(
                f"secret {ref.name}/{ref.key} not given: pass --secret {ref.name}/{ref.key}=VALUE "
                f"or set {env_name(ref)}"
            )
        return value
