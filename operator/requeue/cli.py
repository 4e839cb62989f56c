"""The ``requeue`` command: thin wrappers that parse arguments and call the core."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from requeue.api.crd import write_crds


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
    """Write crds/*.yaml from the API models (the only way they change)."""
    targets = [directory]
    chart_crds = directory.parent / "charts" / "requeue" / "crds"
    if chart_crds.parent.is_dir():
        targets.append(chart_crds)
    stale = [f"{d}/{name}" for d in targets for name in write_crds(d, check=check)]
    if check and stale:
        click.echo(f"stale: {', '.join(stale)}; run `requeue crds` and commit", err=True)
        sys.exit(1)
    for name in stale:
        click.echo(f"wrote {name}")
