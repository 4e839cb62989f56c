"""Redis Cluster routing without a cluster: URLs, hash tags, the slot's owner (requeue.queues.cluster).

The real cluster (six redis-server processes) is in tests/interop/test_cluster.py; here are the
rules that decide where requeue connects and what it refuses, on every input shape.
"""

from __future__ import annotations

import string
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from requeue.errors import HashTagRequired, RedisUrlInvalid
from requeue.policy.budget import ReplayBudget
from requeue.queues.cluster import (
    MAX_SEEDS,
    hash_tag,
    is_cluster_url,
    owner_of,
    parse_cluster_url,
    primaries_of,
    queue_slot,
)
from requeue.queues.keys import PolicyKeys, QueueKeys, ReplayKeys, budget_taken_key, untag
from requeue.redact import redact_url, sensitive_parts

PASSWORDS = st.text(
    string.ascii_letters + string.digits + "/+=?#@:%\"\\!$&'()*,;~-._ ", min_size=8, max_size=60
).filter(lambda p: sum(c.isalnum() for c in p) >= 4)


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("{bull}:default:failed", "bull"),
        ("bull:{default}:failed", "default"),
        ("bull:default:failed", None),
        ("{}:default:{x}", None),  # an empty tag hashes the whole key (Redis's rule)
        ("{bull:default:failed", None),
        ("{{a}:q:", "{a"),
        ("requeue:lease:{bull}:default", "bull"),
    ],
)
def test_hash_tag_is_redis_rule(key: str, tag: str | None) -> None:
    assert hash_tag(key) == tag
    if tag is not None:
        assert key_slot(key.encode()) == key_slot(tag.encode())


def test_every_key_requeue_owns_for_a_queue_shares_its_slot() -> None:
    q = QueueKeys("{bull}", "whatsapp")
    tag, slot = queue_slot([q])
    replay = ReplayKeys("6f1c-uid", tag)
    policy = PolicyKeys("9a2e-uid", tag)
    budget = ReplayBudget.for_policy("9a2e-uid", 1, slot_tag=tag)
    mine = [q.lease, *replay.all(), replay.legacy_copied, policy.memory, policy.replays]
    mine += [budget.key, budget_taken_key(budget.key, "6f1c-uid")]
    bullmq = [q.failed, q.wait, q.meta, q.events, q.job("42"), q.job("odd}{id"), q.lock("7")]
    assert {key_slot(k.encode()) for k in mine + bullmq} == {slot}
    assert replay.progress == "requeue:replay:{bull}:6f1c-uid:progress"


def test_off_a_cluster_replay_keys_keep_their_names() -> None:
    assert ReplayKeys("abc").progress == "requeue:replay:abc:progress"
    assert PolicyKeys("u-1").memory == "requeue:policy:u-1:memory"
    assert ReplayBudget.for_policy("u-1", 2).key == "requeue:policy:u-1:replays"


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("{bull}:cli-ops-1", ("bull", "cli-ops-1")),
        ("cli-ops-1", ("", "cli-ops-1")),
        ("{}:x", ("", "{}:x")),  # no tag: as written
        ("{a}b", ("", "{a}b")),
    ],
)
def test_an_id_is_read_back_out_of_a_tagged_key(text: str, split: tuple[str, str]) -> None:
    assert untag(text) == split
    tag, replay_id = untag(
        ReplayKeys("r-9", "bull").progress.removeprefix("requeue:replay:")[: -len(":progress")]
    )
    assert (tag, replay_id) == ("bull", "r-9")


def test_every_primary_comes_from_cluster_slots() -> None:
    reply = [
        [0, 5460, ["127.0.0.1", 7000, "id0"], ["127.0.0.1", 7003, "id3"]],
        [5461, 10922, ["", 7001, "id1"]],
        [10923, 12000, ["127.0.0.1", 7002, "id2"]],
        [12001, 16383, ["127.0.0.1", 7002, "id2"]],  # one primary, two ranges: named once
    ]
    assert primaries_of(reply, asked="seed") == [("127.0.0.1", 7000), ("seed", 7001), ("127.0.0.1", 7002)]


@pytest.mark.parametrize("prefix", ["bull", "{bull", "b{}ull", "bull}"])
def test_a_prefix_without_a_hash_tag_is_refused_with_the_fix(prefix: str) -> None:
    with pytest.raises(HashTagRequired) as err:
        queue_slot([QueueKeys(prefix, "default")])
    assert err.value.reason == "HashTagRequired" and "{bull}" in err.value.message
    assert "CROSSSLOT" in err.value.message


def test_a_target_queue_in_another_slot_is_refused() -> None:
    queue_slot([QueueKeys("{bull}", "a"), QueueKeys("{bull}", "b")])  # one tag: fine
    with pytest.raises(HashTagRequired, match="targetQueue"):
        queue_slot([QueueKeys("bull", "{a}"), QueueKeys("bull", "{b}")])


@given(PASSWORDS, st.sampled_from(["", "app"]), st.sampled_from(["", "/0"]))
def test_cluster_urls_keep_any_password_and_never_show_it(password: str, user: str, path: str) -> None:
    url = f"rediss+cluster://{user}:{password}@10.0.0.1:7000,[::1]:7001,redis-2.svc:7002{path}"
    assert is_cluster_url(url)
    parsed = parse_cluster_url(url)
    assert parsed.seeds == (("10.0.0.1", 7000), ("::1", 7001), ("redis-2.svc", 7002))
    node = parsed.node_url("::1", 7001)
    assert node.startswith("rediss://") and node.endswith("@[::1]:7001/0")
    assert parsed.userinfo == f"{user}:{password}"
    shown = redact_url(url)
    assert password not in shown and unquote(password) not in shown.replace("***", "")
    assert shown.endswith("@10.0.0.1:7000,[::1]:7001,redis-2.svc:7002" + path)
    assert password in sensitive_parts(url)
    assert password not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://:pw@",
        "redis+cluster://:pw@host",
        "redis+cluster://:pw@host:port",
        "redis+cluster://:pw@h:1,h2",
        "redis+cluster://:pw@h:1/3",
        "redis+cluster://:pw@h:99999",
        "redis+cluster://:pw@h:",
        "redis+cluster://:pw@[::1]",
        "redis+cluster://:pw@[::1]x:1",
        # a port of more digits than int() converts (4300): refused, not a ValueError
        "redis+cluster://:pw@h:" + "9" * 5000,
        "redis+cluster://:pw@" + ",".join(["h:1"] * (MAX_SEEDS + 1)),
        "redis+cluster://:pw@" + "," * 1_000_000,
    ],
)
def test_unusable_cluster_urls_are_named_without_the_password(url: str) -> None:
    with pytest.raises(RedisUrlInvalid) as err:
        parse_cluster_url(url)
    assert ":pw@" not in err.value.message


def test_seed_list_messages_say_what_is_wrong() -> None:
    """The seed list is parsed as a Sentinel URL's list is (:mod:`requeue.queues.seeds`); the
    messages stay the cluster's own, and a list that is too long is refused before it is read."""
    with pytest.raises(RedisUrlInvalid, match="each seed node is host:port"):
        parse_cluster_url("redis+cluster://h:1,h2")
    with pytest.raises(RedisUrlInvalid, match=f"more than {MAX_SEEDS} seed nodes"):
        parse_cluster_url("redis+cluster://" + ",".join(["bad"] * (MAX_SEEDS + 1)))
    assert parse_cluster_url("redis+cluster://h:1").seeds == (("h", 1),)


def test_the_slot_owner_comes_from_cluster_slots() -> None:
    reply = [
        [0, 5460, ["127.0.0.1", 7000, "id0"], ["127.0.0.1", 7003, "id3"]],
        [5461, 10922, ["", 7001, "id1"], ["127.0.0.1", 7004, "id4"]],
        [10923, 16383, ["127.0.0.1", 7002, "id2"]],
    ]
    assert owner_of(reply, 100, asked="seed")[0] == ("127.0.0.1", 7000)
    owner, known = owner_of(reply, 6000, asked="10.1.1.1")
    assert owner == ("10.1.1.1", 7001)  # "" = the node that was asked
    assert len(known) == 5  # every node named, primaries and replicas
    assert owner_of([[0, 10, ["h", 1]]], 11, asked="x")[0] is None  # slot not served: ask elsewhere
