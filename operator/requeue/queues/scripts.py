"""BullMQ's own Lua scripts, as shipped in the ``bullmq`` package, registered on our client.

We never copy BullMQ's Lua: the text is read from the installed package
(``bullmq.redis_connection.SCRIPT_DEFINITIONS``), so BullMQ keeps owning the
correctness of its state machine. requeue's own read-only/bookkeeping Lua is in
:mod:`requeue.queues.lua`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from bullmq.redis_connection import SCRIPT_DEFINITIONS, loadScript
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from requeue.queues import lua

#: BullMQ scripts requeue calls.
BULLMQ_SCRIPTS = (
    "reprocessJob",
    "moveJobsToWait",
    "pause",
    "getCounts",
    "cleanJobsInSet",
    "removeJob",
    "addStandardJob",
    "addPrioritizedJob",
    "addDelayedJob",
    "getStateV2",
)


@dataclass(frozen=True)
class Scripts:
    """The scripts, bound to one client (``script(keys=, args=, client=pipeline)`` queues them)."""

    reprocess_job: AsyncScript
    move_jobs_to_wait: AsyncScript
    pause: AsyncScript
    get_counts: AsyncScript
    clean_jobs_in_set: AsyncScript
    remove_job: AsyncScript
    add_standard_job: AsyncScript
    add_prioritized_job: AsyncScript
    add_delayed_job: AsyncScript
    select_page: AsyncScript
    select_window: AsyncScript
    plan_moves: AsyncScript
    fast_guard: AsyncScript
    fast_tally: AsyncScript
    bulk_guard: AsyncScript
    bulk_tally: AsyncScript
    tally_batch: AsyncScript
    batch_head: AsyncScript
    acquire_lease: AsyncScript
    release_lease: AsyncScript
    get_state: AsyncScript


_CACHE: dict[str, str] = {}


def _bullmq(name: str) -> str:
    if name not in _CACHE:
        _CACHE[name] = loadScript(SCRIPT_DEFINITIONS[name])
    return _CACHE[name]


def register(redis: Redis) -> Scripts:
    """Register every script on ``redis`` (no round trip; loaded on first use)."""

    def reg(text: str) -> AsyncScript:
        return redis.register_script(text)

    return Scripts(
        reprocess_job=reg(_bullmq("reprocessJob")),
        move_jobs_to_wait=reg(_bullmq("moveJobsToWait")),
        pause=reg(_bullmq("pause")),
        get_counts=reg(_bullmq("getCounts")),
        clean_jobs_in_set=reg(_bullmq("cleanJobsInSet")),
        remove_job=reg(_bullmq("removeJob")),
        add_standard_job=reg(_bullmq("addStandardJob")),
        add_prioritized_job=reg(_bullmq("addPrioritizedJob")),
        add_delayed_job=reg(_bullmq("addDelayedJob")),
        select_page=reg(lua.SELECT_PAGE),
        select_window=reg(lua.SELECT_WINDOW),
        plan_moves=reg(lua.PLAN_MOVES),
        fast_guard=reg(lua.FAST_GUARD),
        fast_tally=reg(lua.FAST_TALLY),
        bulk_guard=reg(lua.BULK_GUARD),
        bulk_tally=reg(lua.BULK_TALLY),
        tally_batch=reg(lua.TALLY_BATCH),
        batch_head=reg(lua.BATCH_HEAD),
        acquire_lease=reg(lua.ACQUIRE_LEASE),
        release_lease=reg(lua.RELEASE_LEASE),
        get_state=reg(_bullmq("getStateV2")),
    )


#: A Redis command a Lua script calls: ``redis.call("HSET", ...)``, BullMQ's ``rcall("HSET", ...)``.
_CALLED = re.compile(r"""(?:rcall|redis\.p?call)\(\s*["']([A-Za-z]+)["']""")


def script_by_sha(sha: str) -> tuple[str, tuple[str, ...]] | None:
    """The name of requeue's or BullMQ's Lua script with this SHA1, and the commands it calls.

    Redis's NOPERM reply from inside a script names neither the command nor the key (it
    names the script's SHA), so :class:`~requeue.errors.Forbidden` names the script and the
    commands it may need instead: enough to find the missing one in the ACL.
    """
    from requeue.queues import by_id  # it imports this module (through the adapter)

    texts = {name: _bullmq(name) for name in BULLMQ_SCRIPTS}
    texts.update(
        {
            name: value
            for module in (lua, by_id)
            for name, value in vars(module).items()
            if name.isupper() and isinstance(value, str) and _CALLED.search(value)
        }
    )
    for name, text in texts.items():
        if hashlib.sha1(text.encode()).hexdigest() == sha:  # Redis names scripts by SHA1
            return name, tuple(sorted({c.upper() for c in _CALLED.findall(text)}))
    return None
