"""Find a secret in what requeue showed: whole, escaped, or any piece of :data:`PIECE` characters."""

from __future__ import annotations

import json
from urllib.parse import quote

__all__ = ["PIECE", "SESSION_PASSWORD", "SLACK_TOKEN", "assert_no_session_leak", "leaks"]

#: Shortest run of a secret's characters that counts as a leak.
PIECE = 8

#: The password of the test session's own redis-server, so every test that uses ``redis_url``
#: (the whole CLI, interop and e2e suites) carries a secret with each character urlsplit misreads;
#: fixtures scan what requeue showed for it (:func:`assert_no_session_leak`).
#: The token in the path of every test Slack webhook (:class:`support.queuepolicy.SlackSink`):
#: a webhook URL is a secret too.
SLACK_TOKEN = "SlackT0ken-9xQ2-sessionleak"
SESSION_PASSWORD = 'Sess/Pw?k#9@x:%2F"q\\Zr-sessionleak'


def _forms(secret: str) -> set[str]:
    return {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote(secret)}


def leaks(text: str, *secrets: str) -> list[str]:
    """Every piece (:data:`PIECE`+ characters, of the raw, JSON-escaped or percent-encoded form) of
    any of ``secrets`` found in ``text``; empty when nothing leaked."""
    found = []
    for secret in secrets:
        for form in _forms(secret):
            for i in range(len(form) - PIECE + 1):
                piece = form[i : i + PIECE]
                if piece in text:
                    found.append(piece)
    return sorted(set(found))


def assert_no_session_leak(text: str, where: str) -> None:
    """Fail, naming ``where`` (an operator log, the CLI's output, Events), if any piece of
    :data:`SESSION_PASSWORD` or :data:`SLACK_TOKEN` shows in ``text``."""
    found = leaks(text, SESSION_PASSWORD, SLACK_TOKEN)
    assert not found, f"a session secret (Redis password, Slack webhook) leaked into {where}: pieces {found}"
