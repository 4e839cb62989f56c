"""Every failure requeue names, in one tree.

::

    RequeueError
    ├── PermanentError              waiting will not help; fix the spec or the data
    │   ├── SpecInvalid             the resource or file does not validate
    │   ├── SecretNotFound          a referenced Secret or key does not exist
    │   ├── QueueNotFound           the queue has no BullMQ key under the prefix (a typo?)
    │   ├── JobNotFound             no job with that id in the queue (CLI ``inspect --job``)
    │   ├── ReplayNotFound          no replay state with that id in Redis (CLI ``replays forget``)
    │   ├── ReplayRunning           the replay has not finished: its keys stay (CLI ``replays forget``)
    │   ├── SelectionChanged        a resumed replay's manifest selects other jobs than at its start
    │   ├── RedisUrlInvalid         the Redis URL (from a Secret or a flag) cannot be parsed
    │   ├── HashTagRequired         on a Redis Cluster, the queue's keys would not share one hash slot
    │   ├── AuthFailed              Redis/Postgres/HTTP refused the credentials
    │   │   └── Forbidden           Redis's ACL user lacks a command or key requeue needs
    │   ├── VerificationFailed      replayed jobs did not succeed well enough
    │   ├── ArchiveFailed           a clean could not archive its jobs to Postgres (nothing removed)
    │   └── GatesTimedOut           gates did not pass within gatePolicy.timeout
    └── TransientError              may pass on its own; retry with backoff
        ├── RedisUnreachable        cannot reach Redis, or it errored
        │   ├── RedisOutOfMemory    Redis is at maxmemory and refuses writes
        │   ├── RedisCertificateUntrusted  the rediss:// server's certificate fails verification
        │   └── SentinelMasterUnknown  the Sentinels monitor no master of the URL's name
        └── QueueLocked             another replay holds the queue's lease

Each carries a ``reason`` (a :class:`~requeue.api.conditions.Reason`, written to
conditions and Events; a class and its reason have the same name) and a message
a person on call can act on. Messages never contain secrets:
build them with :func:`requeue.redact.redact_url`.
"""

from __future__ import annotations

from typing import ClassVar

from requeue.api.conditions import Reason


class RequeueError(Exception):
    """Base of all requeue errors."""

    #: CamelCase reason for status conditions and Events.
    reason: ClassVar[Reason] = Reason.ERROR
    #: Exit code of the CLI when this error ends a command.
    exit_code: int = 1

    def __init__(self, message: str, *, queue: str | None = None, replay: str | None = None):
        super().__init__(message)
        self.message = message
        self.queue = queue
        self.replay = replay


class PermanentError(RequeueError):
    """Retrying will not help until a person changes something."""

    reason = Reason.PERMANENT_ERROR


class TransientError(RequeueError):
    """May pass by itself; the caller retries after ``delay`` seconds."""

    reason = Reason.TRANSIENT_ERROR

    def __init__(self, message: str, *, delay: float = 10.0, **kwargs: str | None):
        super().__init__(message, **kwargs)
        self.delay = delay


class SpecInvalid(PermanentError):
    """The spec does not validate; the message names the field."""

    reason = Reason.SPEC_INVALID
    exit_code = 2


class SecretNotFound(PermanentError):
    """A Secret or key referenced by the spec does not exist."""

    reason = Reason.SECRET_NOT_FOUND
    exit_code = 2


class SelectionChanged(PermanentError):
    """The manifest of a replay being resumed selects other jobs (queue, prefix, selector,
    targetQueue, mode) than the replay started with; resuming would move the old selection."""

    reason = Reason.SELECTION_CHANGED
    exit_code = 2


class RedisUrlInvalid(PermanentError):
    """The Redis URL cannot be used (unknown scheme, a port that is not a number, ...).

    Permanent: retrying the same URL cannot help; fixing the Secret (or flag) does.
    The message carries the URL redacted, never its password.
    """

    reason = Reason.REDIS_URL_INVALID
    exit_code = 2


class HashTagRequired(PermanentError):
    """On a Redis Cluster, the queue's keys would not all live in one hash slot.

    BullMQ's scripts touch many keys of a queue at once, and so do requeue's transactions;
    a cluster runs those only when every key hashes to one slot, which a hash tag in the
    prefix (``{bull}``) makes so. Without one, BullMQ itself cannot run on the cluster, and a
    replay would fail half-way with CROSSSLOT: refused before anything is sent.
    """

    reason = Reason.HASH_TAG_REQUIRED
    exit_code = 2


class QueueNotFound(PermanentError):
    """The queue has no BullMQ key under the prefix: most likely a typo in the queue or prefix.

    Reading such a queue looks like reading an empty one, so without this a replay
    would "succeed with 0 of 0". The message lists the queues that do exist there
    (see :mod:`requeue.queues.existence`).
    """

    reason = Reason.QUEUE_NOT_FOUND
    exit_code = 2


class JobNotFound(PermanentError):
    """No job with that id in the queue: no job hash and in none of BullMQ's sets."""

    reason = Reason.JOB_NOT_FOUND
    exit_code = 2


class ReplayNotFound(PermanentError):
    """No replay state with that id in this Redis."""

    reason = Reason.REPLAY_NOT_FOUND
    exit_code = 2


class ReplayRunning(PermanentError):
    """The replay has not finished; removing its keys would lose its progress."""

    reason = Reason.REPLAY_RUNNING
    exit_code = 2


class AuthFailed(PermanentError):
    """Credentials were refused."""

    reason = Reason.AUTH_FAILED
    exit_code = 3


class Forbidden(AuthFailed):
    """Redis accepted the credentials, but the ACL user may not run a command or touch a key.

    A subclass of :class:`AuthFailed` because everything that ends a replay on refused
    credentials must end it here too (retrying cannot grant a right); its own reason tells
    the person on call to fix the ACL, not the password.
    """

    reason = Reason.FORBIDDEN
    exit_code = 3


class VerificationFailed(PermanentError):
    """The replayed jobs did not meet spec.verify."""

    reason = Reason.VERIFICATION_FAILED
    exit_code = 1


class ArchiveFailed(PermanentError):
    """A clean with ``archive`` could not write its jobs to Postgres; it removed none of them."""

    reason = Reason.ARCHIVE_FAILED
    exit_code = 1


class SmokeTestFailed(PermanentError):
    """spec.verify.smokeTest did not pass after its retries."""

    reason = Reason.SMOKE_TEST_FAILED
    exit_code = 1


class GatesTimedOut(PermanentError):
    """Gates stayed red past gatePolicy.timeout."""

    reason = Reason.GATES_TIMED_OUT
    exit_code = 1


class RedisUnreachable(TransientError):
    """Redis is unreachable or answered with an error."""

    reason = Reason.REDIS_UNREACHABLE
    exit_code = 3


class RedisCertificateUntrusted(RedisUnreachable):
    """The ``rediss://`` server's certificate does not verify: another CA signed it (a wrong or
    missing ``spec.redis.tls.caSecretRef``), or it names another host.

    Transient like an outage, so the operator keeps retrying and picks up a fixed CA
    Secret by itself; named apart because the fix is the CA, not the network.
    """

    reason = Reason.REDIS_CERTIFICATE_UNTRUSTED


class RedisOutOfMemory(RedisUnreachable):
    """Redis is at ``maxmemory`` (with ``noeviction``) and refuses writes: "OOM command not allowed".

    Transient, and held like an outage (nothing is moved or counted until writes
    pass again), but named apart: Redis answers and reads work, so the fix is
    memory (raise ``maxmemory``, free or evict keys), not the network.
    """

    reason = Reason.REDIS_OUT_OF_MEMORY


class SentinelMasterUnknown(RedisUnreachable):
    """The Sentinels of a ``redis+sentinel://`` URL answer, but none monitors a master of the
    name in the URL's path (a typo, or another release's Sentinels).

    Transient like an outage, so the operator picks up a fixed Secret by itself; named
    apart because the fix is the name, not the network.
    """

    reason = Reason.SENTINEL_MASTER_UNKNOWN


class QueueLocked(TransientError):
    """Another replay holds this queue; ``holder`` names it."""

    reason = Reason.QUEUE_LOCKED
    exit_code = 1

    def __init__(self, message: str, *, holder: str, delay: float = 5.0, **kwargs: str | None):
        super().__init__(message, delay=delay, **kwargs)
        self.holder = holder


#: The former name of :class:`RedisUnreachable` (deprecated): its reason was always
#: ``RedisUnreachable``, which alerts and runbooks match on, so the class took the reason's name.
RedisUnavailable = RedisUnreachable
