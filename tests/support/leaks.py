"""Find a secret in what requeue showed: whole, escaped, or any piece of :data:`PIECE` characters."""

from __future__ import annotations

import json
from urllib.parse import quote

__all__ = ["PIECE", "leaks"]

#: Shortest run of a secret's characters that counts as a leak.
PIECE = 8


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
