"""A throw-away ``redis-server`` per test session: :mod:`requeue.devcluster.redis_server`, re-exported.

It lives in the package because ``requeue demo`` starts one too.
"""

from requeue.devcluster.redis_server import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "find_redis_server", "free_port"]
