"""requeue.gates."""
