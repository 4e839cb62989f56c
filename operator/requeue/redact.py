"""Keep secrets out of logs, Events, status and exceptions."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_DSN_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``rediss://default:s3cret@host:6379/0`` -> ``rediss://default:***@host:6379/0``.

    A user name is kept (it helps diagnose "wrong user"); a password never is.
    Query strings are dropped as they may carry tokens.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    if "@" not in parts.netloc:
        netloc = host
    else:
        user, has_password, _ = parts.netloc.rsplit("@", 1)[0].partition(":")
        # a lone "token@host" may be a password, so only "user:password" keeps the user
        netloc = f"{user}:***@{host}" if has_password and user else f"***@{host}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact every URL in ``text`` and every known secret value."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def sensitive_parts(value: str) -> list[str]:
    """What of a secret value must never be shown.

    A URL (``redis://user:pw@host/0?token=x``) may be shown redacted, so only its
    password and query count; a libpq ``key=value`` DSN likewise only its
    password; anything else (a header value, a token) counts whole.
    """
    value = value.strip()
    if not value:
        return []
    if _URL.match(value):
        try:
            parts = urlsplit(value)
        except ValueError:
            return [value]
        found = [unquote(parts.password)] if parts.password else []
        if parts.password and unquote(parts.password) != parts.password:
            found.append(parts.password)
        if parts.query:
            found.append(parts.query)
            found.extend(v for _, v in parse_qsl(parts.query) if v)
        return found
    if _DSN_PASSWORD.search(value):
        return [m.group(1).strip("'") for m in _DSN_PASSWORD.finditer(value)]
    return [value]
