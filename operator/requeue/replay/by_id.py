"""Selection by job id (``selector.jobIds``): the pages the selection reads, and what it says of the
ids it could not take.

Named jobs go through the same selection as filtered ones (:mod:`requeue.replay.selection`):
each page of ids is read in one bounded script (:func:`requeue.queues.by_id.failed_by_id`) and
committed with the snapshot, the counters and the cursor (here: how many ids were read) in one
MULTI/EXEC, so exactly-once and resume after a crash hold as for any replay. What differs:
an id the user named that is not in the failed set is not silently dropped. It is counted
(``.status.notFailed``), named (``.status.notFailedIds``, the first :data:`NOT_FAILED_IDS`)
and announced in one Warning Event (``JobsNotFailed``), and the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.api import DLQReplayStatus
from requeue.api.conditions import Reason
from requeue.queues import BullQueue, Cursor, FailedPage, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.by_id import failed_by_id
from requeue.queues.keys import Progress
from requeue.replay.state import StepContext

__all__ = ["NOT_FAILED_IDS", "id_page", "not_failed_note", "not_failed_writes", "read_not_failed", "report"]

#: How many of the ids not in the failed set the status names (all are counted).
NOT_FAILED_IDS = 100
#: How many the Event and the messages name.
NAMED_IN_MESSAGES = 10


async def id_page(q: BullQueue, job_ids: Sequence[str], cursor: Cursor) -> FailedPage:
    """The next page of named ids after ``cursor`` (its ``job_id`` holds how many were read)."""
    try:
        start = int(cursor.job_id or 0)
    except ValueError:
        start = 0
    return await failed_by_id(q, job_ids, start)


def not_failed_writes(pipe: Pipeline, keys: ReplayKeys, page: FailedPage) -> None:
    """Queue the writes that record the page's ids not in the failed set (in the page's MULTI)."""
    if not page.not_failed:
        return
    pipe.rpush(keys.not_failed, *page.not_failed)
    pipe.ltrim(keys.not_failed, 0, NOT_FAILED_IDS - 1)
    pipe.hincrby(keys.progress, Progress.NOT_FAILED, len(page.not_failed))


async def read_not_failed(redis: Redis, keys: ReplayKeys, st: DLQReplayStatus) -> None:
    """Put the named ids not in the failed set into the status (the count comes with the progress)."""
    st.not_failed_ids = [text(x) or "" for x in await redis.lrange(keys.not_failed, 0, NOT_FAILED_IDS - 1)]


def not_failed_note(st: DLQReplayStatus) -> str:
    """``"; 2 of the ids are not in the failed set: 7, 9"``, or "" when every id was failed."""
    if not st.not_failed:
        return ""
    named = ", ".join(st.not_failed_ids[:NAMED_IN_MESSAGES])
    more = f" and {st.not_failed - NAMED_IN_MESSAGES} more" if st.not_failed > NAMED_IN_MESSAGES else ""
    return f"; {st.not_failed} of the ids are not in the failed set (left alone): {named}{more}"


def report(ctx: StepContext) -> None:
    """The one Warning Event of a selection by id that could not take every id."""
    st = ctx.status
    if st.not_failed:
        ctx.event(
            "Warning",
            Reason.JOBS_NOT_FAILED,
            not_failed_note(st).removeprefix("; ") + " (already replayed, completed, waiting, removed, "
            "or a typo: `requeue inspect --job ID` shows one)",
        )
