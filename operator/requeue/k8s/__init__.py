"""requeue.k8s."""
