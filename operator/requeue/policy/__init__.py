"""requeue.policy."""
