"""requeue.replay."""
