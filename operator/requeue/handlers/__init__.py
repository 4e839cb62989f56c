"""requeue.handlers."""
