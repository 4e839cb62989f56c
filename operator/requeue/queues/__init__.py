"""requeue.queues."""
