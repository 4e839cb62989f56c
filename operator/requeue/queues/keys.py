"""Every Redis key requeue reads or writes, in one place (like arq's ``constants.py``).

BullMQ's layout (measured on BullMQ 5/6 and Python bullmq 3.4): ``{prefix}:{queue}:``
followed by ``wait``/``active``/``paused`` (lists), ``failed``/``completed``/``delayed``/
``prioritized``/``marker`` (sorted sets; failed and completed scored by finish time in
ms), ``meta`` (hash; ``paused`` field), ``events`` (stream), ``pc`` (priority counter),
``{id}`` (the job hash) and ``{id}:logs`` (the job's log lines, a list: ``job.log()`` RPUSHes,
``keepLogs`` trims from the head; BullMQ's ``removeJob`` deletes it with the hash).

requeue's own keys live under ``requeue:`` and carry the replay's UID, so two
replays never share state and a replay's state survives the process that wrote it.

This module is the declaration of that state: every key requeue owns is built here
(:class:`QueueKeys`, :class:`ReplayKeys`, :class:`PolicyKeys`) and described in
:data:`OWNED_KEYS`; every field of the replay's progress hash is a member of
:class:`Progress` and every stage a member of :class:`Stage`, each with a one-line
meaning. Python writes these names through the enums; requeue's Lua gets them rendered
into its text when it is loaded (:func:`requeue.queues.lua.render`), so the two cannot
drift apart. The *stored* names (the enum values) are what a running replay has in Redis:
changing one strands every replay started by the previous version
(``tests/unit/test_redis_state.py`` pins them). The Redis-state section of
``docs/architecture.md`` is generated from here by ``requeue crds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Self

#: Root of every key requeue owns.
REQUEUE_PREFIX = "requeue"
#: How long a finished replay's snapshot and progress are kept (seconds): 3 days.
REPLAY_RETENTION_SECONDS = 3 * 24 * 3600


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one BullMQ queue."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        """``bull:default:`` — job hashes are ``base + id``."""
        return f"{self.prefix}:{self.queue}:"

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.queue}:{suffix}"

    def job(self, job_id: str) -> str:
        """The job hash."""
        return self.base + job_id

    def logs(self, job_id: str) -> str:
        """The job's log lines (a list, oldest first): what ``job.log(line)`` appends (BullMQ's
        ``addLog`` script RPUSHes, then LTRIMs to ``keepLogs``); read by export and the archive."""
        return self.base + job_id + ":logs"

    def lock(self, job_id: str) -> str:
        """The job's lock (a string held by the worker processing it; it expires if the worker dies)."""
        return self.base + job_id + ":lock"

    @property
    def wait(self) -> str:
        return self.key("wait")

    @property
    def paused(self) -> str:
        """Pre-BullMQ-5 paused list; BullMQ 5+ keeps paused jobs in ``wait``."""
        return self.key("paused")

    @property
    def active(self) -> str:
        return self.key("active")

    @property
    def failed(self) -> str:
        return self.key("failed")

    @property
    def completed(self) -> str:
        return self.key("completed")

    @property
    def delayed(self) -> str:
        return self.key("delayed")

    @property
    def prioritized(self) -> str:
        return self.key("prioritized")

    @property
    def marker(self) -> str:
        return self.key("marker")

    @property
    def meta(self) -> str:
        return self.key("meta")

    @property
    def events(self) -> str:
        return self.key("events")

    @property
    def priority_counter(self) -> str:
        return self.key("pc")

    @property
    def repeat(self) -> str:
        return self.key("repeat")

    @property
    def stalled(self) -> str:
        return self.key("stalled")

    @property
    def lease(self) -> str:
        """requeue's per-queue replay lease (one replay works a queue at a time)."""
        return f"{REQUEUE_PREFIX}:lease:{self.prefix}:{self.queue}"


@dataclass(frozen=True)
class ReplayKeys:
    """The keys one replay owns; all expire :data:`REPLAY_RETENTION_SECONDS` after it ends.

    On a Redis Cluster they carry the queue's hash tag (``slot_tag``, from
    :func:`requeue.queues.cluster.slot_tag`): ``requeue:replay:{bull}:<id>:progress`` lives in
    the slot of ``{bull}:<queue>:failed``, so the scripts and transactions that touch both
    never cross slots. Off a cluster the tag is empty and the names are what they always were
    (a replay started before the tag existed resumes).
    """

    replay_id: str
    slot_tag: str = ""

    def _key(self, suffix: str) -> str:
        return f"{REQUEUE_PREFIX}:replay:{tagged(self.slot_tag)}{self.replay_id}:{suffix}"

    @property
    def snapshot(self) -> str:
        """List of selected job ids, in failure order; replay walks it with a cursor."""
        return self._key("snapshot")

    @property
    def progress(self) -> str:
        """Hash: stage, selection cursor, replay cursor, counters (see ``replay.state``)."""
        return self._key("progress")

    @property
    def replayed(self) -> str:
        """List of the ids actually moved (verify watches these)."""
        return self._key("replayed")

    @property
    def lifo(self) -> str:
        """Set of selected ids whose opts say ``lifo`` (reprocessJob pushes them right)."""
        return self._key("lifo")

    @property
    def slow(self) -> str:
        """Sorted set: selected ids that need BullMQ's ``reprocessJob`` (a priority, or lifo),
        scored by their position in the snapshot; the bulk path (``moveJobsToWait``) skips them."""
        return self._key("slow")

    @property
    def names(self) -> str:
        """Hash: matched jobs per job name."""
        return self._key("names")

    @property
    def reasons(self) -> str:
        """Hash: matched jobs per normalised failure reason."""
        return self._key("reasons")

    @property
    def corrupt(self) -> str:
        """List: the first corrupt job ids."""
        return self._key("corrupt")

    @property
    def not_failed(self) -> str:
        """List: the first ids of ``selector.jobIds`` that were not in the failed set at selection."""
        return self._key("not_failed")

    @property
    def legacy_copied(self) -> str:
        """List: ids a targetQueue batch of requeue <= 0.1 had copied but not yet removed
        (its two-step copy); read and deleted by the next batch, never written any more."""
        return self._key("progress:copied")

    def all(self) -> list[str]:
        return [
            self.snapshot,
            self.progress,
            self.replayed,
            self.lifo,
            self.slow,
            self.names,
            self.reasons,
            self.corrupt,
            self.not_failed,
            self.dedupe,
            self.duplicates,
        ]

    @property
    def dedupe(self) -> str:
        """Hash: ``selector.dedupeBy`` value -> id of the newest matching failed job with it (the one
        kept), written by the selection's first pass; its second pass snapshots only those ids."""
        return self._key("dedupe")

    @property
    def duplicates(self) -> str:
        """Hash: ``selector.dedupeBy`` value -> failed jobs left failed as its duplicates (the first
        :data:`DUPLICATE_KEYS` values seen; all are counted in ``Progress.DUPLICATES``)."""
        return self._key("duplicates")


#: How many distinct ``dedupeBy`` values :attr:`ReplayKeys.duplicates` counts duplicates for.
DUPLICATE_KEYS = 1000
#: Field of :attr:`ReplayKeys.reasons` that counts the reasons past the cap on distinct ones.
REASONS_OTHER = "\0other"
#: Root of a QueuePolicy's keys (a budget key read from annotations must start with it).
POLICY_KEY_PREFIX = f"{REQUEUE_PREFIX}:policy:"


def tagged(slot_tag: str) -> str:
    """``{tag}:`` to put before an id in one of requeue's keys on a Redis Cluster; "" off one."""
    return f"{{{slot_tag}}}:" if slot_tag else ""


def untag(text: str) -> tuple[str, str]:
    """``{tag}:rest`` -> (tag, rest); text without a leading tag -> ("", text). Reads the id back
    out of a key :func:`tagged` built (``requeue:replay:{bull}:<id>:progress`` on a cluster)."""
    if text.startswith("{"):
        end = text.find("}:")
        if end > 1:
            return text[1:end], text[end + 2 :]
    return "", text


@dataclass(frozen=True)
class PolicyKeys:
    """The keys of one QueuePolicy (by UID).

    On a Redis Cluster they carry the hash tag of the policy's queues, as :class:`ReplayKeys`
    do (``requeue:policy:{bull}:<uid>:memory``): the memory, the auto-replay budget and the
    budget's per-replay sets live in the slot of ``{bull}:<queue>:...``, on the node that the
    policy's client talks to, and the budget script (both keys) never crosses slots. Off a
    cluster the tag is empty and the names are what they always were.
    """

    policy_uid: str
    slot_tag: str = ""

    @property
    def memory(self) -> str:
        """Hash: queue name -> JSON of what the policy remembers of it (``policy.memory``)."""
        return f"{POLICY_KEY_PREFIX}{tagged(self.slot_tag)}{self.policy_uid}:memory"

    @property
    def replays(self) -> str:
        """Hash: job id -> times the policy's auto replays took it (``policy.budget``)."""
        return f"{POLICY_KEY_PREFIX}{tagged(self.slot_tag)}{self.policy_uid}:replays"


def budget_taken_key(budget_key: str, replay_id: str) -> str:
    """Set: the job ids one replay already charged to the budget hash ``budget_key``
    (a retried selection page is not charged twice)."""
    return f"{budget_key}:{replay_id}"


class Declared(StrEnum):
    """A name stored in Redis, with a one-line meaning (``Progress.CURSOR.meaning``).

    A member *is* its stored string, so it goes straight into a command or a dict lookup.
    """

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class Stage(Declared):
    """The replay engine's stage, as stored in :attr:`Progress.STAGE`; the phase follows from it."""

    GATES = "gates", "waiting for the gates; nothing selected yet"
    SELECTING = "selecting", "appending matching failed jobs to the snapshot, a page at a time"
    REPLAYING = "replaying", "the snapshot is complete; moving its jobs, a batch at a time"
    VERIFYING = "verifying", "every snapshot id handled; watching the moved jobs"
    DONE = "done", "finished (see outcome); nothing more will be moved"


class Progress(Declared):
    """Every field of a replay's progress hash (:attr:`ReplayKeys.progress`).

    Counters change in the same MULTI/EXEC (or script) as the moves they count, so the
    status rebuilt from them after a crash is exact. "ms" values are Unix milliseconds.
    """

    # the first step (ReplayEngine._begin)
    STAGE = "stage", "the engine's stage (one of the stages below)"
    PAUSED_BEFORE = "paused_before", '"1" when the queue was paused before the replay began (left paused)'
    QUEUE = "queue", "the replayed queue's name (for a person reading Redis)"
    OWNER = "owner", "namespace/name of the DLQReplay (or of the CLI's manifest)"
    SELECTION = (
        "selection",
        (
            "JSON of the spec's selection fields the snapshot is taken with "
            "(a rerun selecting otherwise is refused: SelectionChanged)"
        ),
    )
    SLOW_POS = (
        "slow_pos",
        (
            '"1": the slow set holds the snapshot position of every job that needs '
            "reprocessJob (absent: selected by an older requeue)"
        ),
    )
    # gates passed: selection starts
    UPPER = "upper", "the selection's upper bound (ms, exclusive), fixed when selection starts"
    STARTED_MS = "started_ms", "when selection started (ms)"
    # selection
    SEL_SCORE = "sel_score", "selection cursor: score of the last failed-set member scanned"
    SEL_ID = "sel_id", "selection cursor: id of the last failed-set member scanned (jobIds: ids read so far)"
    MATCHED = "matched", "jobs in the snapshot"
    SCANNED = "scanned", "failed-set members scanned by the selection"
    CORRUPT = "corrupt", "unreadable failed jobs seen by the selection (never selected)"
    OVER_BUDGET = "over_budget", "matching jobs left out, over their auto-replay budget"
    NOT_FAILED = "not_failed", "ids of `selector.jobIds` not in the failed set when selected (left alone)"
    LIFO_COUNT = "lifo_count", "selected jobs whose opts say lifo"
    PRIO_COUNT = (
        "prio_count",
        (
            "selected jobs with a priority (absent: selected by an older "
            "requeue, which then never takes the moveJobsToWait path)"
        ),
    )
    REASONS_FOLDED = "reasons_folded", '"1": the reasons hash was counted in Redis, digits folded to 0'
    BULK_MIN = "bulk_min", "mode Bulk: the window's lower bound (ms, inclusive)"
    BULK_MAX = "bulk_max", "mode Bulk: the window's upper bound (ms, inclusive)"
    # replay
    CURSOR = "cursor", "snapshot ids handled (moved, skipped or missing)"
    REPLAYED = "replayed", "jobs moved back to wait (or copied to targetQueue)"
    SKIPPED = "skipped", "snapshot ids no longer failed when their turn came"
    MISSING = "missing", "snapshot ids whose job hash was gone when their turn came"
    BULK_MOVED = "bulk_moved", "jobs of those moved with BullMQ's moveJobsToWait"
    FAST_MISS = "fast_miss", "moveJobsToWait chunks vetoed by their guard (the bump aborts their EXEC)"
    COPIED_UPTO = (
        "copied_upto",
        (
            "requeue <= 0.1's two-step targetQueue copy: snapshot ids copied up to "
            "here (read, never written any more)"
        ),
    )
    WE_PAUSED = "we_paused", '"1" while this replay holds the queue paused for a red gate'
    REPLAYED_MS = "replayed_ms", "when the last snapshot id was handled (ms)"
    # verification
    V_POS = "v_pos", "the running verification pass's position in the replayed list"
    PASS_COMPLETED = "p_c", "the running pass: replayed jobs completed (or removed) so far"
    PASS_FAILED = "p_f", "the running pass: replayed jobs failed again so far"
    PASS_PENDING = "p_p", "the running pass: replayed jobs still pending so far"
    VERIFIED_COMPLETED = "vc", "the last whole pass: replayed jobs completed (or removed)"
    VERIFIED_FAILED = "vf", "the last whole pass: replayed jobs failed again"
    VERIFIED_PENDING = "vp", "the last whole pass: replayed jobs still pending"
    # the smoke test (replay/smoke.py), after verification passed
    SMOKE = "smoke", 'the smoke test\'s state: "sending", "waiting" (for the triggered job) or "passed"'
    SMOKE_ATTEMPTS = "smoke_attempts", "smoke test requests started (counted before each is sent)"
    SMOKE_NEXT_MS = "smoke_next_ms", "not before this time the next smoke test request (ms; retryDelay)"
    SMOKE_SENT_MS = "smoke_sent_ms", "when the request that passed was sent (ms); the job must be newer"
    SMOKE_VERIFIED = "smoke_verified", "verification's summary, for the final message"
    SMOKE_ANSWER = "smoke_answer", "the last answer to the smoke request (redacted)"
    SMOKE_COMPLETED_FROM = "smoke_c", "waitForJob: completed-set score to look on from (ms)"
    SMOKE_FAILED_FROM = "smoke_f", "waitForJob: failed-set score to look on from (ms)"
    # the end
    OUTCOME = "outcome", "the final phase (Succeeded, Failed)"
    OUTCOME_REASON = "outcome_reason", "the final phase's reason"
    OUTCOME_MESSAGE = "outcome_message", "the final phase's message"
    FINISHED_MS = "finished_ms", "when the replay ended (ms)"
    # selector.dedupeBy (the selection's first pass, then what its second pass left out)
    DEDUPE_SCORE = "dd_score", "dedupeBy's first pass: score of the last failed-set member scanned"
    DEDUPE_ID = "dd_id", "dedupeBy's first pass: id of the last failed-set member scanned"
    DEDUPE_SCANNED = "dd_scanned", "dedupeBy's first pass: failed-set members scanned"
    DEDUPE_DONE = "dd_done", '"1": the first pass is complete; the dedupe hash holds the job kept per value'
    DUPLICATES = "duplicates", "matching jobs left failed: a newer failed job has the same dedupeBy value"
    NO_DEDUPE_KEY = "no_dedupe_key", "selected jobs without a dedupeBy value (not deduplicated)"


#: What the lease (:attr:`QueueKeys.lease`) holds: who drives a replay of the queue
#: (``requeue.replay.lease``; ``"<replay id> <owner>"`` from requeue before the token).
LEASE_VALUE = "<replay id> <owner> <driver token> <host>:<pid>"


@dataclass(frozen=True)
class OwnedKey:
    """One kind of key requeue owns, for the docs: built by the key builders above."""

    pattern: str
    type: str
    holds: str
    lifetime: str


def owned_keys() -> list[OwnedKey]:
    """Every key requeue owns, with placeholders for the ids (docs/architecture.md's table)."""
    q, r, p = QueueKeys("{prefix}", "{queue}"), ReplayKeys("{id}"), PolicyKeys("{uid}")
    kept = "3 days after the replay ends"
    return [
        OwnedKey(
            q.lease,
            "string",
            f"the replay that works this queue now: `{LEASE_VALUE}`",
            "renewed while the replay runs; expires if its driver dies",
        ),
        OwnedKey(r.progress, "hash", "stage, cursors, counters, pinned window bounds (fields below)", kept),
        OwnedKey(r.snapshot, "list", "selected job ids, in failure order", kept),
        OwnedKey(r.replayed, "list", "ids actually moved (verification watches these)", kept),
        OwnedKey(r.lifo, "set", "selected ids whose opts say lifo", kept),
        OwnedKey(
            r.slow,
            "sorted set",
            "selected ids that need `reprocessJob` (priority, lifo), scored by snapshot position",
            kept,
        ),
        OwnedKey(r.names, "hash", "job name -> matched jobs", kept),
        OwnedKey(r.reasons, "hash", "normalised failure reason -> matched jobs (`\\0other`: the rest)", kept),
        OwnedKey(r.corrupt, "list", "the first corrupt job ids", kept),
        OwnedKey(r.not_failed, "list", "the first ids of `selector.jobIds` not in the failed set", kept),
        OwnedKey(r.dedupe, "hash", "`selector.dedupeBy` value -> id of the newest matching failed job", kept),
        OwnedKey(
            r.duplicates,
            "hash",
            f"`selector.dedupeBy` value -> duplicates left failed (first {DUPLICATE_KEYS} values)",
            kept,
        ),
        OwnedKey(
            r.legacy_copied,
            "list",
            "requeue <= 0.1's copied-not-removed ids; read and deleted only",
            "deleted by the next targetQueue batch",
        ),
        OwnedKey(
            p.memory,
            "hash",
            "queue name -> JSON of what a QueuePolicy remembers between evaluations",
            "deleted with the policy; else 7 days after the last evaluation",
        ),
        OwnedKey(
            p.replays,
            "hash",
            "job id -> times auto-replayed, for `autoReplay.maxReplaysPerJob`",
            "30 days after the last use",
        ),
        OwnedKey(
            budget_taken_key(p.replays, "{id}"),
            "set",
            "the job ids one auto replay charged to that budget",
            "same",
        ),
    ]
