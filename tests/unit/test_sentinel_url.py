"""``redis+sentinel://`` URLs taken apart: forms, defaults, passwords of any character, hostile input."""

from __future__ import annotations

import pytest

from requeue.errors import RedisUrlInvalid
from requeue.queues.sentinel import DEFAULT_SENTINEL_PORT, is_sentinel_url, parse_sentinel_url
from requeue.redact import redact_text, redact_url, sensitive_parts


def test_sentinels_master_and_db() -> None:
    url = parse_sentinel_url("redis+sentinel://default:pw@s1:26380,s2,[::1]:5000/mymaster/3")
    assert url.sentinels == (("s1", 26380), ("s2", DEFAULT_SENTINEL_PORT), ("::1", 5000))
    assert url.master == "mymaster"
    assert url.node_url == "redis://default:pw@s1:26380/3"
    assert url.sentinel_password is None


def test_a_percent_encoded_master_name_and_tls() -> None:
    url = parse_sentinel_url("rediss+sentinel://s1/my%2Fmaster%3F")
    assert url.master == "my/master?" and url.node_url == "rediss://s1:26379/0"


def test_the_sentinels_own_credentials_stay_out_of_the_data_nodes_options() -> None:
    url = parse_sentinel_url(
        "redis+sentinel://:data@s1/m?sentinel_username=sen&sentinel_password=a%26b%23c&socket_keepalive=true"
    )
    assert (url.sentinel_username, url.sentinel_password) == ("sen", "a&b#c")
    assert url.node_url == "redis://:data@s1:26379/0?socket_keepalive=true"


@pytest.mark.parametrize("password", ['p/w?x#y@z:q"\\-end', "Ab/Cd+Ef==", "@@@", "a:b:c", "ünï/cødé#"])
def test_a_raw_password_of_any_character_is_the_data_nodes_and_never_shown(password: str) -> None:
    raw = f"redis+sentinel://default:{password}@s1:26379,s2:26379/mymaster/0"
    url = parse_sentinel_url(raw)
    assert url.sentinels == (("s1", 26379), ("s2", 26379)) and url.master == "mymaster"
    assert url.node_url == f"redis://default:{password}@s1:26379/0"
    assert redact_url(raw) == "redis+sentinel://default:***@s1:26379,s2:26379/mymaster/0"
    shown = redact_text(f"error at {raw}: {password}", sensitive_parts(raw))
    assert password not in shown


def test_the_sentinel_password_in_the_query_is_never_shown() -> None:
    raw = "redis+sentinel://s1/m?sentinel_password=S3cret%2Fvalue"
    assert "S3cret" not in redact_url(raw)
    assert "S3cret" not in redact_text(f"refused S3cret/value at {raw}", sensitive_parts(raw))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:0/m", "port"),
        ("redis+sentinel://s1:99999999999999999999/m", "port"),
        ("redis+sentinel://s1:２６/m", "port"),
        ("redis+sentinel://,s1/m", "port"),
        ("redis+sentinel://s1", "names no master"),
        ("redis+sentinel://s1/m/x", "database"),
        ("redis+sentinel://" + ",".join(f"h{i}" for i in range(100)) + "/m", "more than"),
    ],
)
def test_malformed_urls_are_redis_url_invalid(url: str, says: str) -> None:
    with pytest.raises(RedisUrlInvalid) as caught:
        parse_sentinel_url(url)
    assert says in caught.value.message


def test_scheme_detection() -> None:
    assert is_sentinel_url("redis+sentinel://s1/m") and is_sentinel_url("REDISS+SENTINEL://s1/m")
    assert not is_sentinel_url("redis://s1/m") and not is_sentinel_url("redis+sentinel:s1")


def test_hostile_lengths_are_refused_or_parsed() -> None:
    """Megabyte-long parts (name, ports, hosts, passwords) are refused or parsed: the parser is
    plain splitting (no regex of its own; :func:`requeue.redact.split_url` is linear, see
    test_hostile_input.py), a port longer than 5 digits is never given to ``int``, and at most
    MAX_SENTINELS + 1 hosts are split off. (No timing: the per-test timeout stops a stall.)"""
    for url in (
        "redis+sentinel://s1/" + "m" * 1_000_000,
        "redis+sentinel://s1:" + "9" * 1_000_000 + "/m",
        "redis+sentinel://" + "@" * 100_000 + "s1/m",
        "redis+sentinel://" + "," * 1_000_000 + "/m",
        "redis+sentinel://:" + "p@" * 100_000 + "s1/m",
    ):
        try:
            parse_sentinel_url(url)
        except RedisUrlInvalid as exc:
            assert len(exc.message) < 2000, "a message repeats hostile input at length"
