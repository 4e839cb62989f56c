"""Shared by the CLI commands: how errors are printed and with which exit code, TTY detection,
and the one place that decides about colour (:func:`make_console`).

Everything a command prints goes through :func:`redact_text` with the secret
values it knows (the Redis URL, ``--secret`` values), so a password can never
reach a terminal or a CI log, even inside a library's error message.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console

from requeue.errors import (
    AuthFailed,
    RedisUnavailable,
    RequeueError,
    SecretNotFound,
    SelectionChanged,
    SpecInvalid,
)
from requeue.redact import redact_text, sensitive_parts

__all__ = ["EXIT_INTERRUPTED", "Secrets", "color_wanted", "error_label", "is_tty", "make_console",
           "report_error"]

#: Exit status after Ctrl-C / SIGTERM: 128 + the signal number, as shells do.
EXIT_INTERRUPTED = 130


class Secrets:
    """Values that must never be printed, collected as a command learns them."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and value not in self.values:
                self.values.append(value)

    def add_url(self, url: str | None) -> None:
        """A URL's password (URLs themselves are redacted wherever they appear in text)."""
        if url:
            self.add(*sensitive_parts(url))

    def redact(self, text: str) -> str:
        return redact_text(text, self.values)

    def redact_json(self, value: Any) -> Any:
        """``value`` (parsed JSON) with every string redacted: ``-o json`` stays valid JSON, and
        a secret is hidden before it is escaped, not after."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_json(v) for k, v in value.items()}
        return value


def error_label(exc: RequeueError) -> str:
    """A few words saying what kind of failure it is, for the start of the error line."""
    if isinstance(exc, AuthFailed):
        return "authentication failed"
    if isinstance(exc, RedisUnavailable):
        return "Redis unreachable"
    if isinstance(exc, SpecInvalid):
        return "invalid spec"
    if isinstance(exc, SecretNotFound):
        return "missing secret"
    if isinstance(exc, SelectionChanged):
        return "selection changed"
    return exc.reason


def report_error(exc: RequeueError, secrets: Secrets, stream: TextIO | None = None) -> int:
    """Print ``requeue: <label>: <message>`` (redacted) and return the exit code."""
    out = stream or sys.stderr
    print(f"requeue: {error_label(exc)}: {secrets.redact(exc.message)}", file=out)
    return exc.exit_code


def color_wanted(no_color: bool = False) -> bool:
    """Whether output may be coloured: not with ``--no-color``, not when ``NO_COLOR`` holds any
    non-empty value (https://no-color.org; an empty ``NO_COLOR`` counts as unset)."""
    return not no_color and not os.environ.get("NO_COLOR")


def make_console(*, no_color: bool = False, stderr: bool = False, **kwargs: Any) -> Console:
    """The rich Console every command prints through.

    Without colour there are no styles at all (``color_system=None``): rich's own
    ``no_color`` drops colours but still writes bold and dim as ANSI escapes. Whether
    the stream is a terminal stays rich's to decide (``force_terminal``, ``FORCE_COLOR``).
    """
    if not color_wanted(no_color):
        kwargs.update(color_system=None, no_color=True, highlight=False)
    return Console(stderr=stderr, **kwargs)


def is_tty(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
