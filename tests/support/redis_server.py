"""A throw-away ``redis-server`` per test session: :mod:`devcluster.redis_server`, re-exported.

It lives in the devcluster package because ``requeue demo`` starts one too.
"""

from devcluster.errors import RedisServerError, RedisServerNotFoundError
from devcluster.redis_server import REDIS_SERVER_ENV, RedisServer, find_redis_server, free_port

__all__ = [
    "REDIS_SERVER_ENV",
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFoundError",
    "find_redis_server",
    "free_port",
]
