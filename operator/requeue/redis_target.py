"""One way to open a resource's Redis: ``spec.redis`` (Secret -> URL, CA PEM, insecureSkipVerify) -> client.

The operator (:mod:`requeue.handlers`) resolves the Secrets from Kubernetes,
the CLI (:mod:`requeue.commands`) from flags and the environment; both go
through :func:`open_redis`, so TLS works the same in both. Core level: knows
nothing of kopf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from requeue.api.common import RedisConnection
from requeue.api.policy import QueuePolicySpec
from requeue.api.replay import DLQReplaySpec
from requeue.queues import QueueKeys, TlsOptions, connect
from requeue.secrets import SecretSource

__all__ = ["RedisTarget", "open_redis", "policy_queues", "replay_queues", "resolve_redis"]


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """A resource's Redis with its Secrets resolved: the URL (with any password) and how to verify TLS."""

    url: str
    db: int | None = None
    tls: TlsOptions = field(default_factory=TlsOptions)


async def resolve_redis(
    secrets: SecretSource, conn: RedisConnection, *, url: str | None = None
) -> RedisTarget:
    """Read the URL (unless ``url`` is given) and the CA bundle of ``conn`` from ``secrets``.

    :raises SecretNotFound: the Secret or key does not exist.
    """
    if url is None:
        url = await secrets.get(conn.url_secret_ref)
    tls = conn.tls
    ca = await secrets.get(tls.ca_secret_ref) if tls is not None and tls.ca_secret_ref is not None else None
    cert = key = None
    if tls is not None and tls.cert_secret_ref is not None and tls.key_secret_ref is not None:
        cert, key = await secrets.get(tls.cert_secret_ref), await secrets.get(tls.key_secret_ref)
    return RedisTarget(
        url=url,
        db=conn.db,
        tls=TlsOptions(
            ca_pem=ca, insecure_skip_verify=bool(tls and tls.insecure_skip_verify), cert_pem=cert, key_pem=key
        ),
    )


def replay_queues(spec: DLQReplaySpec) -> tuple[QueueKeys, ...]:
    """The queues a replay touches (its queue, its targetQueue, the queue its smoke test waits
    on): on a Redis Cluster they must share one slot (else ``HashTagRequired`` up front), and
    the client goes to the primary serving it."""
    target = () if spec.target_queue is None else (QueueKeys(spec.prefix, spec.target_queue),)
    smoke = spec.verify.smoke_test if spec.verify is not None else None
    waited = (
        ()
        if smoke is None or smoke.wait_for_job is None
        else (QueueKeys(spec.prefix, smoke.wait_for_job.queue),)
    )
    return tuple(dict.fromkeys((QueueKeys(spec.prefix, spec.queue), *target, *waited)))


def policy_queues(spec: QueuePolicySpec) -> tuple[QueueKeys, ...]:
    """The queues a QueuePolicy watches: on a Redis Cluster they must share one slot (its
    prefix carries the hash tag, as BullMQ on a cluster needs), and the policy's client (its
    pauses, cleans, memory and budget) goes to the primary serving it."""
    return tuple(QueueKeys(spec.prefix, q) for q in dict.fromkeys(spec.queues))


async def open_redis(
    secrets: SecretSource,
    conn: RedisConnection,
    *,
    url: str | None = None,
    queues: Sequence[QueueKeys] = (),
) -> tuple[Redis, RedisTarget]:
    """Connect to the Redis of ``conn`` with the URL (and CA) from ``secrets``; ``url`` overrides
    ``conn.urlSecretRef`` (the CLI's ``--redis-url``). ``queues``: the ones the client is for,
    which a Redis Cluster URL needs (:func:`replay_queues`).

    :raises SecretNotFound: the Secret or key does not exist.
    :raises AuthFailed: Redis refused the credentials.
    :raises RedisUnreachable: Redis cannot be reached.
    :raises HashTagRequired: a Redis Cluster, and the queues do not share a hash-tagged slot.
    """
    target = await resolve_redis(secrets, conn, url=url)
    redis = await connect(
        target.url,
        db=target.db,
        tls_ca_pem=target.tls.ca_pem,
        tls_insecure_skip_verify=target.tls.insecure_skip_verify,
        tls_cert_pem=target.tls.cert_pem,
        tls_key_pem=target.tls.key_pem,
        queues=queues,
    )
    return redis, target
