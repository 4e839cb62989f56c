"""requeue.api."""
