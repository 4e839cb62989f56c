"""A throw-away ``redis-server`` per test session: :mod:`devcluster.redis_server`, re-exported.

It lives in the devcluster package because ``requeue demo`` starts one too.
"""

from devcluster.errors import RedisServerError, RedisServerNotFoundError
from devcluster.redis_server import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "RedisServerError", "RedisServerNotFoundError", "find_redis_server", "free_port"]
