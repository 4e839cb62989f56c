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
from requeue.malloc import limit_arenas

__all__ = ["FINALIZER", "configure", "run_operator", "start_metrics_server"]

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
    from requeue.k8s.client import load_config

    load_config()  # the kubernetes client (Secrets, status writes) uses the same cluster as kopf
    start_metrics_server(metrics_port, metrics_address)
    kopf.run(
        standalone=standalone,
        clusterwide=clusterwide,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
    )
