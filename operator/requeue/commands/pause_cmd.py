"""``requeue pause`` and ``requeue resume``: BullMQ's own ``pause`` script, from a shell.

Runbook step 4, method 1 ("pause the queue") for services not on Kubernetes.
``resume`` resumes only a paused queue, and says who paused it when requeue knows:
a replay that paused it for a red gate (``we_paused`` in its progress hash) or a
QueuePolicy (``paused_by_policy`` in its memory hash). A pause by an app or a
person leaves no trace requeue can read; then it says so. Such a holder may pause
the queue again (a replay whose gate is still red, a policy still in breach).

``-o json`` (``schemaVersion`` 1)::

    {"schemaVersion": 1, "queue": "default", "prefix": "bull", "dryRun": false,
     "action": "paused" | "alreadyPaused" | "resumed" | "notPaused",
     "wasPaused": true, "pausedBy": ["replay cli-ops-replay-1 (ops/replay-1)", "QueuePolicy 1234-..."]}
"""

from __future__ import annotations

import json
from typing import Any

from requeue.commands.job_cmd import run_on_queue
from requeue.commands.output import print_json
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.keys import PolicyKeys, Progress, untag

__all__ = ["pause_holders", "run_pause"]

#: Keys one holders scan may make Redis visit (SCAN COUNT pages of 1000).
_SCAN_BUDGET = 100_000


async def _scan(bull: BullQueue, pattern: str) -> list[str]:
    out: list[str] = []
    cursor, visited = 0, 0
    while True:
        cursor, batch = await bull.redis.scan(cursor=cursor, match=pattern, count=1000)
        visited += 1000
        out += [k.decode() if isinstance(k, bytes) else str(k) for k in batch]
        if int(cursor) == 0 or visited >= _SCAN_BUDGET:
            return out


def _s(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def pause_holders(bull: BullQueue) -> list[str]:
    """Who requeue knows to hold this queue paused: replays (by id and owner) and QueuePolicies (by UID)."""
    holders: list[str] = []
    progress_pattern = ReplayKeys("*").progress
    head, tail = progress_pattern.split("*")
    for key in sorted(await _scan(bull, progress_pattern)):
        queue, we_paused, owner = (
            _s(v) for v in await bull.redis.hmget(key, [Progress.QUEUE, Progress.WE_PAUSED, Progress.OWNER])
        )
        if queue == bull.name and we_paused == "1":
            replay_id = untag(key[len(head) : -len(tail)])[1]  # on a cluster: {tag}:<id>
            holders.append(f"replay {replay_id}" + (f" ({owner})" if owner else ""))
    memory_pattern = PolicyKeys("*").memory
    head, tail = memory_pattern.split("*")
    for key in sorted(await _scan(bull, memory_pattern)):
        raw = _s(await bull.redis.hget(key, bull.name))
        try:
            held = raw is not None and json.loads(raw).get("p") == 1
        except (ValueError, AttributeError):
            held = False
        if held:
            holders.append(f"QueuePolicy {untag(key[len(head) : -len(tail)])[1]}")
    return holders


def run_pause(
    *,
    pause: bool,
    redis_url: str,
    queue: str,
    prefix: str,
    dry_run: bool,
    output: str,
    connect_timeout: float,
) -> int:
    """Pause (``pause=True``) or resume the queue; 0 done (or nothing to do), 2 queue not found,
    3 Redis unreachable."""

    async def act(bull: BullQueue) -> dict[str, Any]:
        was = await bull.is_paused()
        holders = await pause_holders(bull) if was else []
        if pause:
            action = "alreadyPaused" if was else "paused"
            if not was and not dry_run:
                await bull.pause()
        else:
            action = "resumed" if was else "notPaused"
            if was and not dry_run:
                await bull.resume()
        return {
            "schemaVersion": 1,
            "queue": queue,
            "prefix": prefix,
            "dryRun": dry_run,
            "action": action,
            "wasPaused": was,
            "pausedBy": holders,
        }

    result = run_on_queue(redis_url, output == "json", connect_timeout, act, queue, prefix)
    if isinstance(result, int):
        return result
    report, secrets = result
    if output == "json":
        print_json(secrets.redact_json(report))
        return 0
    print(secrets.redact(render_text(report)), flush=True)
    return 0


def render_text(r: dict[str, Any]) -> str:
    """One or two lines saying what was done and who had paused the queue."""
    q = f"queue {r['queue']} (prefix {r['prefix']})"
    would = "would be " if r["dryRun"] else ""
    # Only replays and policies leave a trace of their pause; `requeue pause` leaves none, so an
    # untraced pause may still be requeue's own CLI: never claim it was not.
    by = (
        "by " + ", ".join(r["pausedBy"])
        if r["pausedBy"]
        else "not by a requeue replay or QueuePolicy: by an app, a person or `requeue pause`"
    )
    if r["action"] == "paused":
        return f"{q} {would or 'is now '}paused" + ("" if would else "; workers finish their active jobs")
    if r["action"] == "alreadyPaused":
        return f"{q} was already paused ({by}); nothing done"
    if r["action"] == "notPaused":
        return f"{q} is not paused; nothing done"
    line = f"{q} {would or ''}resumed; it had been paused {by}"
    if r["pausedBy"]:
        line += "\nnote: they may pause it again (a replay whose gate is still red, a policy still in breach)"
    return line
