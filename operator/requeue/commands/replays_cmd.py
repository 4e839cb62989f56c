"""``requeue replays list`` and ``requeue replays forget ID``: the replays whose state lives in a Redis.

Every replay (the operator's and the CLI's ``cli-*``) keeps its progress and
snapshot under ``requeue:replay:<id>:`` (:class:`requeue.queues.keys.ReplayKeys`)
for 3 days after it ends. ``list`` shows them; ``forget`` deletes a finished one's
keys at once. A replay runs only while its queue's lease (:attr:`QueueKeys.lease`)
names it: such a one is never touched, its keys are its progress (``ReplayRunning``,
exit 2). On a Redis Cluster (``redis+cluster://``) a replay's keys live in its queue's
slot (``requeue:replay:{bull}:<id>:``, with the lease): both commands look on every primary.
One that has not finished and that no lease names was abandoned (its CLI
was stopped, e.g. while waiting for gates): its keys have no TTL, so ``list`` shows
it ``Abandoned`` and ``forget`` may delete them (rerunning its command would resume).

``list -o json`` (``schemaVersion`` 1)::

    {"schemaVersion": 1, "replays": [{"id": "cli-ops-replay-1", "queue": "default",
      "owner": "ops/replay-1", "stage": "done", "phase": "Succeeded", "finished": true,
      "matched": 25, "replayed": 25, "skipped": 0, "missing": 0,
      "running": false, "startedAt": "...Z", "finishedAt": "...Z", "ageSeconds": 3600,
      "expiresInSeconds": 255600}]}
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis

from requeue.commands.output import RedactedValues, print_json, run_on_redis
from requeue.errors import ReplayNotFound, ReplayRunning
from requeue.queues import ReplayKeys
from requeue.queues.connection import connect_each_primary
from requeue.queues.keys import Progress, QueueKeys, Stage, untag
from requeue.replay.lease import LeaseHolder

__all__ = ["run_replays_forget", "run_replays_list"]

T = TypeVar("T")

#: Keys a listing may make Redis visit (SCAN pages of 1000).
_SCAN_BUDGET = 200_000
_FIELDS = (
    Progress.STAGE,
    Progress.QUEUE,
    Progress.OWNER,
    Progress.OUTCOME,
    Progress.MATCHED,
    Progress.REPLAYED,
    Progress.SKIPPED,
    Progress.MISSING,
    Progress.STARTED_MS,
    Progress.FINISHED_MS,
)


def _s(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _iso(ms: str | None) -> str | None:
    try:
        return datetime.fromtimestamp(int(ms or "") / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


async def _scan(redis: Redis, pattern: str) -> list[str]:
    """The keys matching ``pattern``, from a ``SCAN`` bounded by :data:`_SCAN_BUDGET`."""
    found: list[str] = []
    cursor, visited = 0, 0
    while True:
        cursor, batch = await redis.scan(cursor=cursor, match=pattern, count=1000)
        visited += 1000
        found.extend(_s(raw) or "" for raw in batch)
        if int(cursor) == 0 or visited >= _SCAN_BUDGET:
            return found


async def _driven(redis: Redis) -> set[str]:
    """The ids of the replays some queue's lease names: only those are running (a lease
    expires when its driver dies, so a stopped CLI's replay is named by none)."""
    ids: set[str] = set()
    for key in await _scan(redis, QueueKeys("*", "*").lease):
        value = _s(await redis.get(key))
        if value:
            ids.add(LeaseHolder.parse(value).replay_id)
    return ids


async def _describe(redis: Redis, keys: ReplayKeys, now_ms: int, driven: set[str]) -> dict[str, Any] | None:
    replay_id = keys.replay_id
    values = [_s(v) for v in await redis.hmget(keys.progress, list(_FIELDS))]
    if all(v is None for v in values):
        return None
    p = dict(zip(_FIELDS, values, strict=True))
    finished = p[Progress.STAGE] == Stage.DONE

    def count(f: Progress) -> int:
        try:
            return int(p[f] or 0)
        except ValueError:
            return 0

    started = p[Progress.STARTED_MS]
    ttl = int(await redis.ttl(keys.progress))
    running = not finished and replay_id in driven
    if started and started.isdigit():
        age: int | None = (now_ms - int(started)) // 1000
    else:  # stopped before selection (e.g. waiting for gates): the hash's last write
        idle = await redis.object("idletime", keys.progress)
        age = int(idle) if idle is not None else None
    phase = (p[Progress.OUTCOME] or "Finished") if finished else ("Running" if running else "Abandoned")
    return {
        "id": replay_id,
        "queue": p[Progress.QUEUE],
        "owner": p[Progress.OWNER],
        "stage": p[Progress.STAGE],
        "phase": phase,
        "finished": finished,
        "running": running,
        "matched": count(Progress.MATCHED),
        "replayed": count(Progress.REPLAYED),
        "skipped": count(Progress.SKIPPED),
        "missing": count(Progress.MISSING),
        "startedAt": _iso(started),
        "finishedAt": _iso(p[Progress.FINISHED_MS]),
        "ageSeconds": age,
        "expiresInSeconds": ttl if ttl >= 0 else None,
    }


async def _found(redis: Redis) -> list[ReplayKeys]:
    """The replays whose progress hash is on this node (on a cluster: with their slot's tag)."""
    pattern = ReplayKeys("*").progress
    head, tail = pattern.split("*")
    found: set[ReplayKeys] = set()
    for key in await _scan(redis, pattern):
        tag, replay_id = untag(key[len(head) : -len(tail)])
        if replay_id and ":" not in replay_id:
            found.add(ReplayKeys(replay_id, tag))
    return sorted(found, key=lambda k: (k.replay_id, k.slot_tag))


async def _list(nodes: list[Redis]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    now_ms = round(time.time() * 1000)
    for redis in nodes:  # a cluster's primaries: each holds the replays of the queues in its slots
        driven = await _driven(redis)
        for keys in await _found(redis):
            described = await _describe(redis, keys, now_ms, driven)
            if described is not None:
                out.append(described)
    return sorted(out, key=lambda d: d["startedAt"] or "", reverse=True)


def _on_every_primary(
    redis_url: str, output: str, connect_timeout: float, work: Callable[[list[Redis]], Awaitable[T]]
) -> tuple[T, RedactedValues] | int:
    """:func:`~requeue.commands.output.run_on_redis` with a client per primary (one off a
    cluster): a replay's keys live on the primary serving its queue's slot."""
    return run_on_redis(
        redis_url, output == "json", connect_timeout, work, opener=lambda: connect_each_primary(redis_url)
    )


def run_replays_list(*, redis_url: str, output: str, connect_timeout: float) -> int:
    """Print the replays in this Redis, newest first; 0, or 3 when Redis is unreachable."""
    result = _on_every_primary(redis_url, output, connect_timeout, _list)
    if isinstance(result, int):
        return result
    replays, secrets = result
    if output == "json":
        print_json(secrets.redact_json({"schemaVersion": 1, "replays": replays}))
        return 0
    lines = [
        f"{'ID':<36}  {'QUEUE':<16}  {'PHASE':<10}  {'STAGE':<10}  {'MATCHED':>8}  {'REPLAYED':>8}  "
        f"{'AGE':>8}  EXPIRES IN"
    ]
    for r in replays:
        secs, ttl = r["ageSeconds"], r["expiresInSeconds"]
        age = f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs is not None else "-"
        expires = (
            f"{ttl // 3600}h"
            if ttl is not None
            else ("never (running)" if r["running"] else "never (abandoned: forget it)")
        )
        lines.append(
            f"{r['id']:<36}  {r['queue'] or '-':<16}  {r['phase']:<10}  {r['stage'] or '-':<10}  "
            f"{r['matched']:>8}  {r['replayed']:>8}  {age:>8}  {expires}"
        )
    if not replays:
        lines = ["no replay state in this Redis"]
    print(secrets.redact("\n".join(lines)), flush=True)
    return 0


def run_replays_forget(*, redis_url: str, replay_id: str, output: str, connect_timeout: float) -> int:
    """Delete a finished or abandoned replay's keys; 0, 2 when there is no such replay or a lease
    names it (it runs), 3 when Redis is unreachable."""

    async def forget(nodes: list[Redis]) -> dict[str, Any]:
        redis, keys = nodes[0], ReplayKeys(replay_id)
        found = False
        for node in nodes:  # on a cluster: the primary of the replay's queue, with its slot's tag
            here = [k for k in await _found(node) if k.replay_id == replay_id]
            if here:
                redis, keys, found = node, here[0], True
                break
        described = (
            await _describe(redis, keys, round(time.time() * 1000), await _driven(redis))
            if found or len(nodes) == 1  # one Redis: ask for the key, however many keys SCAN visits
            else None
        )
        if described is None:
            raise ReplayNotFound(
                f'no replay "{replay_id}" in this Redis (no key '
                f"{ReplayKeys(replay_id).progress}); `requeue replays list` shows the "
                "replays there are",
                replay=replay_id,
            )
        if described["running"]:
            raise ReplayRunning(
                f'replay "{replay_id}" of queue "{described["queue"]}" is running (stage '
                f"{described['stage']}; its queue's lease names it); its keys are its progress and "
                "stay. Let it finish (or stop its command, or delete the DLQReplay), then forget it",
                replay=replay_id,
            )
        async with redis.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.progress)  # a replay that starts again meanwhile aborts the delete
            done = _s(await pipe.hget(keys.progress, Progress.STAGE)) == Stage.DONE
            if not done and replay_id in await _driven(pipe):
                raise ReplayRunning(
                    f'replay "{replay_id}" started again while being forgotten; its keys stay',
                    replay=replay_id,
                )
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(*keys.all(), keys.legacy_copied)
            try:
                deleted = int((await pipe.execute())[0])
            except rx.WatchError:
                raise ReplayRunning(
                    f'replay "{replay_id}" changed while being forgotten; its keys stay', replay=replay_id
                ) from None
        return {
            "schemaVersion": 1,
            "id": replay_id,
            "forgotten": True,
            "keysDeleted": deleted,
            "replay": described,
        }

    result = _on_every_primary(redis_url, output, connect_timeout, forget)
    if isinstance(result, int):
        return result
    report, secrets = result
    if output == "json":
        print_json(secrets.redact_json(report))
    else:
        done = report["replay"]
        why = "" if done["finished"] else "; was not finished; nothing drives it (no lease)"
        print(
            secrets.redact(
                f"forgot replay {replay_id} ({done['phase']}, queue {done['queue']}{why}): "
                f"{report['keysDeleted']} keys deleted"
            ),
            flush=True,
        )
    return 0
