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
