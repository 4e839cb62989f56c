"""How the replay engine paces and chunks its work: one frozen value given to the engine.

The defaults are the production values (``bench/`` measured them). A test that needs a
step to move one batch, or pages small enough to cross with few jobs, passes its own
:class:`EngineTuning` to :class:`~requeue.replay.ReplayEngine` instead of patching
module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_TUNING", "EngineTuning"]


@dataclass(frozen=True)
class EngineTuning:
    """The engine's pace and chunk sizes; none of them changes what a replay moves."""

    #: A step moves batch after batch while the token bucket has a full batch ready, up to
    #: this long (s): at a high rate the status, the lease and the spec are read once per
    #: step, not once per batch, and Redis does not idle between batches. 0: one batch a step.
    step_budget_s: float = 0.05
    #: Failed-set members scanned per selection step at most (several pages, each committed alone).
    select_step_members: int = 20_000
    #: Failed-set members per call of the in-Redis selection of a pure time window
    #: (``SELECT_WINDOW``: ~3-4 µs of Redis time each, so a call stays under ~1.5 ms).
    select_window_page: int = 500
    #: Jobs per sub-transaction of a replay batch with BullMQ's ``moveJobsToWait`` (~6-7 µs
    #: each with the bookkeeping and the attempts reset).
    move_chunk: int = 200
    #: Jobs per ``moveJobsToWait`` call of mode Bulk at most (a batch is split into equal
    #: chunks): ~5 µs of Redis time each with the bookkeeping, so a chunk stays around
    #: 2.5-3.5 ms (BullMQ's own ``retryJobs`` takes 1000 at a time: ~6-15 ms).
    bulk_chunk: int = 500
    #: Tolerated clock skew between requeue and the workers (ms) when the selection's upper
    #: bound is fixed (see :func:`requeue.replay.selection.selection_upper`).
    clock_skew_ms: int = 1000


#: Today's values: what the operator and the CLI run with.
DEFAULT_TUNING = EngineTuning()
