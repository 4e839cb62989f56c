"""Start the operator: kopf settings, logging, the /metrics server, then ``kopf.run``.

``requeue run`` (cli.py) parses flags and calls :func:`run_operator`; the
handlers register themselves with kopf's default registry when
:mod:`requeue.handlers` is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kopf

from requeue.api.resources import GROUP
from requeue.k8s import client as kube
from requeue.malloc import limit_arenas

__all__ = [
    "FINALIZER",
    "close_api_session",
    "configure",
    "connection_info",
    "login",
    "run_operator",
    "start_metrics_server",
]

logger = logging.getLogger(__name__)

#: The finalizer kopf puts on every DLQReplay so deletion can resume the queue and release the lease.
FINALIZER = f"{GROUP}/finalizer"
#: Prefix of kopf's bookkeeping annotations (handler progress, last handled spec).
ANNOTATIONS_PREFIX = GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings for every requeue operator process."""
    settings.persistence.finalizer = FINALIZER
    # Bookkeeping in annotations only: .status stays exactly the API model (no status.kopf).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    settings.watching.connect_timeout = 10
    settings.watching.server_timeout = 300
    # A daemon asked to stop (deletion, shutdown) gets this long to leave on its own before kopf
    # schedules the next check; ours wake up on the stop flag, so this is rarely waited in full.
    settings.background.instant_exit_timeout = 2.0
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "requeue"  # the "From" column of `kubectl describe`


#: kopf runs its own fallback logins only when no login handler is registered, as here; the
#: priority matters only beside another login handler an embedding application adds.
LOGIN_PRIORITY = 100


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf logs in with the credentials requeue's own requests use (:mod:`requeue.k8s.config`):
    one reader of the kubeconfig or service account, exec plugins included. Called again when
    the API answers 401, so a rotated token or an expired plugin credential is picked up."""
    return await connection_info()


async def connection_info() -> kopf.ConnectionInfo:
    """The process's API connection (:func:`requeue.k8s.client.connection`) as kopf's credentials,
    with a fresh token."""
    conn = kube.connection()
    conn.forget_credentials()
    auth = await conn.authorization()
    scheme, _sep, token = (auth or "").partition(" ")
    return kopf.ConnectionInfo(
        server=conn.server,
        default_namespace=conn.namespace,
        ca_path=conn.ca_file,
        ca_data=None if conn.ca_file else conn.ca_data,
        insecure=conn.insecure or None,
        certificate_path=None if conn.cert_data else conn.cert_file,
        private_key_path=None if conn.key_data else conn.key_file,
        certificate_data=conn.cert_data,
        private_key_data=conn.key_data,
        scheme=scheme if scheme == "Bearer" else None,
        token=token if scheme == "Bearer" else None,
        username=conn.username if scheme == "Basic" else None,
        password=conn.password if scheme == "Basic" else None,
        proxy_url=conn.proxy_url,
        trust_env=True,
        expiration=conn.expires,
        priority=LOGIN_PRIORITY,
    )


@kopf.on.cleanup()
async def close_api_session(**_: Any) -> None:
    """Close requeue's API connections as the operator stops."""
    await kube.close()


def start_metrics_server(port: int, address: str = "0.0.0.0") -> bool:
    """Serve prometheus-client's registry on ``http://address:port/metrics`` (a daemon thread).

    Port 0 disables it. A port that is taken is logged as an error and the
    operator keeps running: reconciling matters more than scraping.
    """
    if port <= 0:
        return False
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=address)
    except OSError as exc:
        logger.error("metrics: cannot listen on %s:%d (%s); /metrics is not served", address, port, exc)
        return False
    logger.info("metrics: serving /metrics on %s:%d", address, port)
    return True


def run_operator(
    *,
    standalone: bool,
    clusterwide: bool,
    namespaces: Sequence[str],
    liveness_endpoint: str | None,
    metrics_port: int,
    metrics_address: str = "0.0.0.0",
    verbose: bool = False,
    log_format: str = "text",
    log_level: str = "info",
) -> None:
    """Run the operator until SIGTERM/SIGINT (blocking)."""
    limit_arenas()  # before any thread starts (requeue.malloc says why)
    fmt = kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    level = "debug" if verbose else log_level.lower()
    kopf.configure(
        debug=level == "debug",
        verbose=level == "debug",
        quiet=level in ("warning", "error"),
        log_format=fmt,
    )
    import requeue.handlers  # noqa: F401  (registers every handler)

    kube.load_config()  # a kubeconfig or service account that cannot be read fails here, at once
    start_metrics_server(metrics_port, metrics_address)
    kopf.run(
        standalone=standalone,
        clusterwide=clusterwide,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
    )
