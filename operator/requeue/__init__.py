"""requeue: keep BullMQ queues healthy from Kubernetes.

The core (``queues``, ``gates``, ``replay``, ``policy``) is plain asyncio with
pydantic models in and out; ``handlers`` adapts it to kopf and ``cli`` to a
terminal.
"""

__version__ = "0.1.0"
