"""The ``requeue`` command: thin wrappers that parse arguments and call the core."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from requeue.api.crd import write_crds
from requeue.api.docs import render_reference


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="requeue")
def main() -> None:
    """Keep BullMQ queues healthy: gated, rate-limited, exactly-once DLQ replays."""


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 if the files are stale; write nothing.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Where the CRD files live.",
)
def crds(check: bool, directory: Path) -> None:
    """Write crds/*.yaml (and the chart's copy, and docs/api-reference.md) from the API models."""
    targets = [directory]
    chart_crds = directory.parent / "charts" / "requeue" / "crds"
    if chart_crds.parent.is_dir():
        targets.append(chart_crds)
    stale = [f"{d}/{name}" for d in targets for name in write_crds(d, check=check)]
    reference = directory.parent / "docs" / "api-reference.md"
    text = render_reference()
    if not reference.exists() or reference.read_text() != text:
        stale.append(str(reference))
        if not check:
            reference.parent.mkdir(parents=True, exist_ok=True)
            reference.write_text(text)
    if check and stale:
        click.echo(f"stale: {', '.join(stale)}; run `requeue crds` and commit", err=True)
        sys.exit(1)
    for name in stale:
        click.echo(f"wrote {name}")


@main.command()
@click.option("--standalone", is_flag=True, help="No peering with other replicas (run exactly one).")
@click.option("-A", "--all-namespaces", "clusterwide", is_flag=True, help="Watch every namespace.")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("--liveness", "liveness_endpoint", metavar="URL",
              help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--metrics-port", type=int, default=9090, show_default=True, envvar="REQUEUE_METRICS_PORT",
              help="Port of the Prometheus /metrics endpoint; 0 disables it.")
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="Address /metrics binds to.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              envvar="REQUEUE_LOG_FORMAT")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True, envvar="REQUEUE_LOG_LEVEL")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (same as --log-level debug).")
def run(standalone: bool, clusterwide: bool, namespaces: tuple[str, ...], liveness_endpoint: str | None,
        metrics_port: int, metrics_address: str, log_format: str, log_level: str, verbose: bool) -> None:
    """Run the operator (kopf) against the current kubeconfig or the in-cluster service account."""
    if clusterwide and namespaces:
        raise click.UsageError("use either --all-namespaces or --namespace, not both")
    if not clusterwide and not namespaces:
        raise click.UsageError("say which namespaces to watch: --all-namespaces or --namespace NS")
    from requeue.handlers.main import run_operator

    run_operator(standalone=standalone, clusterwide=clusterwide, namespaces=namespaces,
                 liveness_endpoint=liveness_endpoint, metrics_port=metrics_port,
                 metrics_address=metrics_address, verbose=verbose, log_format=log_format,
                 log_level=log_level)
