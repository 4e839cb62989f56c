"""Every Redis key requeue reads or writes, in one place (like arq's ``constants.py``).

BullMQ's layout (measured on BullMQ 5/6 and Python bullmq 3.4): ``{prefix}:{queue}:``
followed by ``wait``/``active``/``paused`` (lists), ``failed``/``completed``/``delayed``/
``prioritized``/``marker`` (sorted sets; failed and completed scored by finish time in
ms), ``meta`` (hash; ``paused`` field), ``events`` (stream), ``pc`` (priority counter)
and ``{id}`` (the job hash).

requeue's own keys live under ``requeue:`` and carry the replay's UID, so two
replays never share state and a replay's state survives the process that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """The keys one replay owns; all expire :data:`REPLAY_RETENTION_SECONDS` after it ends."""

    replay_id: str

    def _key(self, suffix: str) -> str:
        return f"{REQUEUE_PREFIX}:replay:{self.replay_id}:{suffix}"

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

    def all(self) -> list[str]:
        return [self.snapshot, self.progress, self.replayed, self.lifo, self.slow, self.names,
                self.reasons, self.corrupt]
