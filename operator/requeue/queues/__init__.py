"""The BullMQ adapter: the only module that knows BullMQ's key names and scripts."""

from requeue.queues.adapter import (
    DEFAULT_PAGE_SIZE,
    BullQueue,
    Cursor,
    FailedJob,
    FailedPage,
    ReprocessResult,
    glob_to_lua,
)
from requeue.queues.connection import TRANSIENT_ERRORS, TlsOptions, connect, is_auth_error, map_redis_error
from requeue.queues.existence import QueueListing, list_queues, redis_location, require_queue
from requeue.queues.keys import REPLAY_RETENTION_SECONDS, QueueKeys, ReplayKeys

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "REPLAY_RETENTION_SECONDS",
    "TRANSIENT_ERRORS",
    "BullQueue",
    "Cursor",
    "FailedJob",
    "FailedPage",
    "QueueKeys",
    "QueueListing",
    "ReplayKeys",
    "ReprocessResult",
    "TlsOptions",
    "connect",
    "glob_to_lua",
    "is_auth_error",
    "list_queues",
    "map_redis_error",
    "redis_location",
    "require_queue",
]
