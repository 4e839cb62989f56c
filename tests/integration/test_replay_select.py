"""Selection filters, alone and combined, against jobs failed by real workers.

The expected id sets are computed from what the test created (names, reasons,
data, which batch) — not from what is in Redis — and compared with the
snapshot a dry run wrote.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from requeue.api import DLQReplaySpec, ReplayPhase
from requeue.queues import ReplayKeys
from requeue.replay import ReplayEngine
from support.bullmq_jobs import JobSpec, make_failed_jobs, next_millisecond

Q = "default"
NAMES = ["whatsapp.send", "whatsapp.status", "pdf.generate", "email.send"]
REASONS = ["429 Too Many Requests", "timeout after {n}ms", "ECONNRESET", "rate limit exceeded"]


@dataclass(frozen=True)
class Made:
    id: str
    spec: JobSpec
    batch: int


@dataclass(frozen=True)
class World:
    jobs: list[Made]
    #: A moment between the two batches' failures.
    between: datetime


@pytest.fixture
async def world(redis_url: str) -> World:
    def batch(offset: int) -> list[JobSpec]:
        out = []
        for i in range(offset, offset + 48):
            out.append(
                JobSpec(
                    NAMES[i % 4],
                    {
                        "tenant": "acme" if i % 3 == 0 else "globex",
                        "order": {"region": "eu" if i % 2 else "us"},
                        "i": i,
                    },
                    REASONS[(i // 4) % 4].format(n=4900 + i),
                )
            )
        return out

    first = batch(0)
    ids1 = await make_failed_jobs(redis_url, Q, first)
    await next_millisecond()
    between = datetime.now(UTC)
    await next_millisecond()
    second = batch(48)
    ids2 = await make_failed_jobs(redis_url, Q, second)
    made = [Made(i, s, 1) for i, s in zip(ids1, first, strict=True)]
    made += [Made(i, s, 2) for i, s in zip(ids2, second, strict=True)]
    return World(made, between)


def subset(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    return all(
        k in actual and (subset(v, actual[k]) if isinstance(v, dict) else actual[k] == v)
        for k, v in expected.items()
    )


Pred = Callable[[Made], bool]
CASES: list[tuple[str, dict[str, Any], Pred]] = [
    ("all", {}, lambda m: True),
    ("exact name", {"jobNames": ["pdf.generate"]}, lambda m: m.spec.name == "pdf.generate"),
    ("glob", {"jobNames": ["whatsapp.*"]}, lambda m: m.spec.name.startswith("whatsapp.")),
    (
        "two names",
        {"jobNames": ["email.send", "pdf.*"]},
        lambda m: m.spec.name in ("email.send", "pdf.generate"),
    ),
    ("class glob", {"jobNames": ["*.s[et]*"]}, lambda m: fnmatch.fnmatchcase(m.spec.name, "*.s[et]*")),
    (
        "reason",
        {"failedReasonPattern": "429|rate limit"},
        lambda m: bool(re.search("429|rate limit", m.spec.reason)),
    ),
    ("data", {"dataMatch": {"tenant": "acme"}}, lambda m: m.spec.data["tenant"] == "acme"),
    (
        "nested data",
        {"dataMatch": {"order": {"region": "eu"}}},
        lambda m: m.spec.data["order"]["region"] == "eu",
    ),
    ("after", {"failedAfter": "BETWEEN"}, lambda m: m.batch == 2),
    ("before", {"failedBefore": "BETWEEN"}, lambda m: m.batch == 1),
    (
        "combined",
        {
            "jobNames": ["whatsapp.*"],
            "failedReasonPattern": "^timeout",
            "dataMatch": {"tenant": "globex"},
            "failedAfter": "BETWEEN",
        },
        lambda m: (
            m.spec.name.startswith("whatsapp.")
            and m.spec.reason.startswith("timeout")
            and m.spec.data["tenant"] == "globex"
            and m.batch == 2
        ),
    ),
]


@pytest.mark.parametrize(("label", "selector", "pred"), CASES, ids=[c[0] for c in CASES])
async def test_filter_selects_exactly_the_expected_ids(
    world: World, r: aioredis.Redis, label: str, selector: dict[str, Any], pred: Pred
) -> None:
    selector = {k: (world.between.isoformat() if v == "BETWEEN" else v) for k, v in selector.items()}
    spec = DLQReplaySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "r", "key": "url"}},
            "queue": Q,
            "selector": selector,
            "dryRun": True,
        }
    )
    uid = f"sel-{label.replace(' ', '-')}"
    st = await ReplayEngine(r, replay_id=uid, owner="ns/sel").run(spec)
    expected = {m.id for m in world.jobs if pred(m)}
    assert expected, "the case must match something"
    snapshot = await r.lrange(ReplayKeys(uid).snapshot, 0, -1)
    assert len(snapshot) == len(set(snapshot))
    assert set(snapshot) == expected
    assert st.phase == ReplayPhase.SUCCEEDED and st.matched == len(expected) and st.replayed == 0
    assert st.breakdown is not None
    assert sum(st.breakdown.by_name.values()) == len(expected)


async def test_max_jobs_takes_the_oldest_failures(world: World, r: aioredis.Redis) -> None:
    spec = DLQReplaySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "r", "key": "url"}},
            "queue": Q,
            "selector": {"jobNames": ["email.send"], "maxJobs": 5},
            "rate": {"jobsPerSecond": 100000},
        }
    )
    scores = {m.id: float(await r.zscore("bull:default:failed", m.id) or 0) for m in world.jobs}
    st = await ReplayEngine(r, replay_id="max", owner="ns/max").run(spec)
    assert (st.matched, st.replayed) == (5, 5)
    moved = set(cast(list[str], await r.lrange("bull:default:wait", 0, -1)))
    left = [m.id for m in world.jobs if m.spec.name == "email.send" and m.id not in moved]
    assert len(moved) == 5 and len(left) == 19
    # the failed set is ordered by failure time: the moved ones failed no later than any other email.send
    assert max(scores[i] for i in moved) <= min(scores[i] for i in left)


def test_selection_pages_are_bounded() -> None:
    from requeue.replay.selection import SELECT_PAGE_SIZE
    from requeue.replay.verify import VERIFY_CHUNK

    assert SELECT_PAGE_SIZE <= 1000 and VERIFY_CHUNK <= 1000
