"""Input requeue does not control (failure reasons, URLs from Secrets, server text) cannot stall it
or leak through it.

No timing: the work bound is shown structurally. Every pattern on such input is RE2 (linear by
construction) or passes :func:`support.linear_regex.assert_linear` (no choice a backtracking
engine could undo), and the normaliser looks at a bounded prefix only, which is checked by
comparing results. Hypothesis generates the adversarial inputs: long runs of hex-ish characters,
nested repetitions, 100,000-character strings.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import hypothesis.strategies as st
import pytest
import re2
import redis.asyncio as aioredis
from hypothesis import given, settings

from requeue import redact
from requeue.gates import postgres
from requeue.redact import encode_userinfo, redact_text, redact_url, sensitive_parts, split_url
from requeue.replay import reasons
from requeue.replay.reasons import MAX_REASON_INPUT, MAX_REASON_LENGTH, normalize_reason
from support.leaks import leaks
from support.linear_regex import NotLinear, assert_linear

# ---------------------------------------------------------------- the reason normaliser

# The normaliser as it was (cubic on long hex-ish words): the reference for ordinary reasons.
_OLD_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OLD_HEX = re.compile(
    r"\b(?:0x[0-9a-fA-F]+|[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*|"
    r"[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*)\b"
)
_OLD_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OLD_SPACES = re.compile(r"\s+")


def old_normalize(reason: str) -> str:
    if not reason:
        return "<none>"
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    text = _OLD_UUID.sub("<uuid>", first)
    text = _OLD_HEX.sub(lambda m: "<id>" if len(m.group(0)) >= 6 else m.group(0), text)
    text = _OLD_NUMBER.sub("<n>", text)
    text = _OLD_SPACES.sub(" ", text).strip()
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 1] + "…"
    return text or "<none>"


HEXISH = "0123456789abcdefABCDEFx"
#: Words and separators real reasons are made of, plus some that test the edges (Unicode, _).
PIECES = st.one_of(
    st.text(HEXISH, min_size=1, max_size=14),
    st.uuids().map(str),
    st.sampled_from(
        [
            " ",
            "  ",
            "\t",
            "-",
            ":",
            ".",
            "/",
            "_",
            "é",
            "٣",
            "\u00a0",
            "\n",
            "ms",
            "0x",
            "timeout",
            "ECONNREFUSED",
            "job",
            "failed",
            "1.5",
            "(",
            ")",
            "'",
        ]
    ),
    st.text(string.printable, max_size=6),
)
ORDINARY = st.lists(PIECES, max_size=16).map("".join)
HOSTILE = st.builds(
    lambda unit, times, tail: unit * times + tail,
    st.text(HEXISH + " .-_", min_size=1, max_size=6),
    st.integers(min_value=MAX_REASON_INPUT, max_value=100_000 // 2),
    st.text(HEXISH + " g.", max_size=3),
)


def test_the_normaliser_has_no_backtracking_pattern() -> None:
    for pattern in reasons.PATTERNS:
        assert_linear(pattern)
    with pytest.raises(NotLinear):
        assert_linear(_OLD_HEX)  # the check does refuse the pattern that stalled the loop


@given(ORDINARY)
def test_ordinary_reasons_fold_as_before(reason: str) -> None:
    assert normalize_reason(reason) == old_normalize(reason)


@settings(max_examples=30)
@given(HOSTILE)
def test_hostile_reasons_are_cut_before_any_work(reason: str) -> None:
    folded = normalize_reason(reason)
    assert len(folded) <= MAX_REASON_LENGTH
    # only the first MAX_REASON_INPUT characters are looked at, whatever follows
    assert (
        folded
        == normalize_reason(reason[:MAX_REASON_INPUT])
        == normalize_reason(reason[:MAX_REASON_INPUT] + "x" * 100_000)
    )
    assert normalize_reason.__wrapped__(reason) == folded  # stable, cache or not


def test_the_reason_from_the_issue() -> None:
    for size in (1_000, 10_000, 100_000):
        assert normalize_reason("a1" * (size // 2)) == "<id>"
        assert normalize_reason(("ab12cd " * size)[:size]).startswith("<id> <id>")


# ---------------------------------------------------------------- redaction


def _all_patterns(module: Any) -> list[Any]:
    return [v for v in vars(module).values() if isinstance(v, re.Pattern | re2._Regexp)]


def test_every_pattern_on_secrets_and_server_text_is_re2() -> None:
    found = _all_patterns(redact) + [p for p, _ in postgres._CONNECT_FAILURES]
    assert len(found) >= 12
    assert all(isinstance(p, re2._Regexp) for p in found), [p.pattern for p in found]


#: Passwords as people make them: base64 (/ + =) and pasted ones with every character urlsplit misreads.
PASSWORDS = st.text(
    string.ascii_letters + string.digits + "/+=?#@:%\"\\!$&'()*,;~-._", min_size=8, max_size=60
).filter(lambda p: sum(c.isalnum() for c in p) >= 4)
HOSTS = st.sampled_from(["127.0.0.1", "redis", "redis.ns.svc.cluster.local", "[::1]", ""])


@given(
    PASSWORDS,
    HOSTS,
    st.sampled_from(["", ":6379", ":7402"]),
    st.sampled_from(["", "/0", "/12"]),
    st.sampled_from(["default", "app", ""]),
)
def test_a_url_is_split_at_the_last_at(password: str, host: str, port: str, path: str, user: str) -> None:
    url = f"rediss://{user}:{password}@{host}{port}{path}"
    parts = split_url(url)
    assert parts is not None and parts.password == password and parts.hostport == host + port
    assert redact_url(url) == f"rediss://{user + ':' if user else ''}***@{host}{port}{path}"
    assert password in sensitive_parts(url) and unquote(password) in sensitive_parts(url)
    assert leaks(redact_url(url), password) == []
    # ... and connects as meant: urlsplit (redis-py, libpq) reads the encoded URL back
    encoded = urlsplit(encode_userinfo(url))
    assert unquote(encoded.password or "") == unquote(password)
    assert encoded.hostname == (host.strip("[]") or None) or host == ""


@given(PASSWORDS)
def test_redis_py_gets_the_password_the_user_wrote(password: str) -> None:
    url = encode_userinfo(f"redis://default:{password}@127.0.0.1:7402/3")
    kwargs = aioredis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["port"], kwargs["db"]) == (unquote(password), 7402, 3)


@given(PASSWORDS.filter(lambda p: len(p) >= 12), st.integers(0, 200), st.data())
def test_no_form_or_piece_of_a_secret_survives(password: str, cut: int, data: st.DataObject) -> None:
    """Echoed raw, JSON-escaped or percent-encoded, cut anywhere: nothing of 8+ characters shows."""
    url = f"redis://default:{password}@redis:6379/0"
    form = data.draw(
        st.sampled_from(
            [
                password,
                json.dumps(password)[1:-1],
                quote(password, safe=""),
                url,
                json.dumps({"token": password}),
            ]
        )
    )
    text = (f"server said: {form} and more" * 2)[:cut] + "…"
    redacted = redact_text(text, sensitive_parts(url))
    assert leaks(redacted, password) == [], (text, redacted)


@settings(max_examples=20)
@given(
    st.sampled_from(["@", "a@", "/@", ":", "%", "redis://", "a" * 7 + "/", "@:/?#"]),
    st.integers(10_000, 100_000),
)
def test_hostile_urls_and_texts_are_handled(unit: str, times: int) -> None:
    text = "redis://" + unit * (times // len(unit))
    secret = "S3cr/t#Pw@long"
    assert leaks(redact_text(text + secret, [secret]), secret) == []
    assert redact_url(text) is not None and sensitive_parts(text) is not None


def test_lower_case_words_in_a_message_stay_readable() -> None:
    """A secret's plain word does not blank the same word in the middle of a message."""
    assert redact_text("wrong user name or password (WRONGPASS)", ["not-the-password-42"]) == (
        "wrong user name or password (WRONGPASS)"
    )
    assert redact_text("token was not-the-passw…", ["not-the-password-42"]) == "token was ***…"
