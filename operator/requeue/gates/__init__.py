"""Health gates: Redis, Postgres and HTTP checks that must pass before (and during) a replay.

Each check returns a :class:`GateResult` ("unreachable" is a result, not an
exception); :class:`GateRunner` checks a resource's gates concurrently, bounds
each by its timeout and folds the results into ``.status.gates`` with the
success/failure thresholds of ``gatePolicy``.
"""

from requeue.gates.http import check_http
from requeue.gates.postgres import check_postgres
from requeue.gates.redis import check_redis
from requeue.gates.result import GateResult
from requeue.gates.runner import GateRunner, run_check, runner_for

__all__ = [
    "GateResult",
    "GateRunner",
    "check_http",
    "check_postgres",
    "check_redis",
    "run_check",
    "runner_for",
]
