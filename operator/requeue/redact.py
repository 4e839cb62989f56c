"""Keep secrets out of logs, Events, status and exceptions.

Everything here runs on text requeue does not control (URLs from Secrets, a
driver's or a server's error text), so every pattern is RE2 (linear in its
input, no backtracking) and the rest is plain scanning.

Two rules make a redaction hold whatever path a secret took:

* **A URL is split at the last ``@``** that is followed by a plausible
  ``host[:port][/path]``, not where :func:`urllib.parse.urlsplit` splits it:
  passwords made by ``openssl rand -base64`` hold ``/``, ``+`` and ``=``, and
  users paste ``?``, ``#``, ``@``, ``:``, ``%``, ``"`` and ``\\`` into them
  unencoded. Everything between ``scheme://`` and that ``@`` is the userinfo.
* **A known secret is hidden in every form and every piece**: raw, JSON-escaped,
  percent-encoded, and any run of :data:`PIECE` or more of its characters (so a
  message cut in the middle of a secret, or a driver quoting a part of it,
  shows no recognisable part of it). Two exceptions keep messages readable:
  values with whitespace (a DSN, a PEM bundle, a sentence) and values longer
  than :data:`MAX_PIECEWISE` are hidden whole, not piece by piece; and a piece
  that is a plain lower-case word (``password`` of ``not-the-password-42``)
  is hidden only where the text is cut (at its end or before ``…``), so
  ``wrong user name or password`` still reads as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote

import re2

__all__ = [
    "PIECE",
    "UrlParts",
    "encode_userinfo",
    "redact_text",
    "redact_url",
    "sensitive_parts",
    "split_url",
]

#: Shortest run of a secret's characters that is hidden wherever it appears.
PIECE = 8
#: Secrets shorter than this are not replaced at all (too likely to be ordinary words).
MIN_SECRET = 3
#: Longer secret values (a CA bundle) are hidden whole, not piece by piece.
MAX_PIECEWISE = 4096

_SCHEME = re2.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
#: What may follow the userinfo's ``@`` up to the path, query or fragment: host (name, IPv4 or
#: [IPv6]) and an optional port, or a comma-separated list of them (the seed nodes of a
#: ``redis+cluster://`` URL; without the list, ``p@q/r`` in a password before ``h1:1,h2:2`` ended
#: the userinfo at its own ``@`` and showed ``r``).
_ONE_HOST = r"(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9._~%-]*)(?::[0-9]*)?"
_HOST_PORT = re2.compile(rf"^{_ONE_HOST}(?:,{_ONE_HOST})*$")
_DSN_PASSWORD = re2.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_URL_IN_TEXT = re2.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


@dataclass(frozen=True, slots=True)
class UrlParts:
    """A URL split the way a person means it (see the module docstring)."""

    scheme: str
    #: Everything between ``scheme://`` and the ``@`` before the host; None without one.
    userinfo: str | None
    #: ``host[:port]`` (may be empty, as in ``unix://:pw@/run/redis.sock``).
    hostport: str
    #: Path, without query and fragment.
    path: str
    query: str
    fragment: str

    @property
    def user(self) -> str | None:
        """The user name: the userinfo up to its first ``:`` (a user name cannot hold one)."""
        if self.userinfo is None:
            return None
        user, has_password, _ = self.userinfo.partition(":")
        return user if has_password else None

    @property
    def password(self) -> str | None:
        """The password as written (maybe percent-encoded); a lone ``token@`` counts as one."""
        if self.userinfo is None:
            return None
        _, has_password, password = self.userinfo.partition(":")
        return password if has_password else self.userinfo


def split_url(url: str) -> UrlParts | None:
    """Split ``scheme://[userinfo@]host[:port][/path][?query][#fragment]``; None if not a URL.

    The userinfo ends at the last ``@`` that a plausible host follows, so raw
    ``/ ? # @ :`` in a password stay in the password. With no plausible host
    after any ``@`` the last ``@`` still ends the userinfo: hiding too much is
    the safe mistake.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    rest = url[scheme.end() :]
    at = _userinfo_end(rest)
    userinfo, tail = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    end_host = _first_of(tail, "/?#")
    hostport, after = tail[:end_host], tail[end_host:]
    after, _, fragment = after.partition("#")
    path, _, query = after.partition("?")
    return UrlParts(scheme.group(1), userinfo, hostport, path, query, fragment)


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the userinfo in ``rest`` (the URL after ``scheme://``), or -1.

    The last ``@`` followed by a plausible ``host[:port]`` (up to the next ``/``, ``?`` or ``#``),
    else the last ``@``. Linear: each candidate's host is looked for only up to the next ``@``.
    """
    last = rest.rfind("@")
    candidate, limit = last, len(rest)
    while candidate >= 0:
        end = _first_of(rest, "/?#", candidate + 1, limit)
        if (end < limit or candidate == last) and _HOST_PORT.match(rest[candidate + 1 : end]):
            return candidate
        candidate, limit = rest.rfind("@", 0, candidate), candidate
    return last


def _first_of(text: str, chars: str, start: int = 0, end: int | None = None) -> int:
    """Index of the first of ``chars`` in ``text[start:end]``, or ``end`` (default ``len(text)``)."""
    stop = len(text) if end is None else end
    found = [i for i in (text.find(c, start, stop) for c in chars) if i >= 0]
    return min(found) if found else stop


def redact_url(url: str) -> str:
    """``rediss://default:s3cret@host:6379/0`` -> ``rediss://default:***@host:6379/0``.

    A user name is kept (it helps diagnose "wrong user"); a password never is,
    whatever it holds. Query strings are dropped as they may carry tokens, and so
    are fragments. Text that is not a URL is returned unchanged.
    """
    parts = split_url(url)
    if parts is None:
        return url
    if parts.userinfo is None:
        netloc = parts.hostport
    else:
        # a lone "token@host" may be a password, so only "user:password" keeps the user
        netloc = f"{parts.user}:***@{parts.hostport}" if parts.user else f"***@{parts.hostport}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def encode_userinfo(url: str) -> str:
    """``url`` with its user name and password percent-encoded, for drivers that split with urlsplit.

    ``redis://default:Ab/Cd@host/0`` becomes ``redis://default:Ab%2FCd@host/0``:
    split at the last ``@`` the user's meaning is unambiguous, and redis-py (like
    libpq) decodes the userinfo again. Percent-escapes already in the password
    are kept (``%2F`` stays ``%2F``); a ``%`` not followed by two hex digits is
    encoded. A URL without userinfo is returned unchanged.
    """
    parts = split_url(url)
    if parts is None or parts.userinfo is None:
        return url
    user, has_password, password = parts.userinfo.partition(":")
    encoded = _encode_part(user) + (":" + _encode_part(password) if has_password else "")
    if encoded == parts.userinfo:
        return url
    tail = url[len(parts.scheme) + 3 + len(parts.userinfo) + 1 :]
    return f"{parts.scheme}://{encoded}@{tail}"


def _encode_part(text: str) -> str:
    """Percent-encode what urlsplit would misread; keep valid ``%XX`` escapes (already encoded)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and _is_hex(text[i + 1 : i + 3]):
            out.append(text[i : i + 3])
            i += 3
            continue
        out.append(quote(ch, safe="!$&'()*+,;=-._~"))
        i += 1
    return "".join(out)


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every URL in ``text`` and every known secret value, in every form and piece.

    ``secrets`` are values that must never show (see :func:`sensitive_parts`):
    each is hidden raw, JSON-escaped and percent-encoded; secrets of at least
    :data:`PIECE` characters also wherever :data:`PIECE` or more of their
    characters appear in a row.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    forms = _forms(secrets)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    pieces = {f[i : i + PIECE] for f in forms if _piecewise(f) for i in range(len(f) - PIECE + 1)}
    return _hide_pieces(text, pieces) if pieces else text


def _piecewise(form: str) -> bool:
    """Whether ``form`` is hidden piece by piece: a machine-made value, not a text or a bundle."""
    return PIECE <= len(form) <= MAX_PIECEWISE and not any(c.isspace() for c in form)


def _is_word(text: str) -> bool:
    return text.isascii() and text.isalpha() and text.islower()


def _forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as it may appear in text: raw, JSON-escaped, percent-encoded, repr-escaped."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET:
            continue
        forms.update(
            (
                secret,
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                repr(secret)[1:-1],
                quote(secret, safe=""),
                quote(secret),
                quote_plus(secret),
                _encode_part(secret),
            )
        )
    return {f for f in forms if len(f) >= MIN_SECRET}


def _hide_pieces(text: str, pieces: set[str]) -> str:
    """Replace every run of text covered by some :data:`PIECE`-long piece with one ``***``.

    One pass over ``text`` with a set lookup per position: O(len(text) * PIECE).
    """
    covered_until = -1
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - PIECE + 1):
        if text[i : i + PIECE] in pieces:
            if spans and i <= covered_until:
                spans[-1] = (spans[-1][0], i + PIECE)
            else:
                spans.append((i, i + PIECE))
            covered_until = i + PIECE
    # a lower-case word in the middle of the text is language, not a leak (see the module docstring)
    spans = [(a, b) for a, b in spans if not _is_word(text[a:b]) or b == len(text) or text.startswith("…", b)]
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append("***")
        last = end
    out.append(text[last:])
    return "".join(out)


def sensitive_parts(value: str) -> list[str]:
    """What of a secret value must never be shown.

    A URL (``redis://user:pw@host/0?token=x``) may be shown redacted, so only its
    password (as written and percent-decoded) and its query values (not the option names) count; a libpq
    ``key=value`` DSN likewise only its password; anything else (a header value,
    a token) counts whole.
    """
    value = value.strip()
    if not value:
        return []
    parts = split_url(value)
    if parts is not None:
        found: list[str] = []
        if parts.password:
            found += [unquote(parts.password), parts.password]
        for pair in parts.query.split("&") if parts.query else []:
            # an option's name is not secret (a message may name the one at fault); its value
            # may be a token, and a pair without "=" may be one whole
            _, has_value, v = pair.partition("=")
            if not has_value:
                found.append(pair)
            elif v:
                found += [v, unquote(v.replace("+", " "))]
        if parts.fragment:
            found.append(parts.fragment)
        return list(dict.fromkeys(f for f in found if f))
    if _DSN_PASSWORD.search(value):
        return [m.group(1).strip("'") for m in _DSN_PASSWORD.finditer(value)]
    return [value]
