"""kopf wiring only: translate Kubernetes events into calls of the core and write what it returns.

Importing this package registers every handler with kopf's default registry
(``requeue run`` does it); nothing else in requeue imports kopf.
"""

from requeue.handlers import dlqreplay, main, queuepolicy

__all__ = ["dlqreplay", "main", "queuepolicy"]
