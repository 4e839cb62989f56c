"""``requeue replay -f FILE``: the operator's replay engine, one-shot, without Kubernetes.

FILE is the DLQReplay manifest you would ``kubectl apply -f`` (a multi-document
file may hold other objects, e.g. Secrets; exactly one DLQReplay is used). It is
validated with the same models as the operator (exit 2 naming the field).

**Redis URL**: ``--redis-url`` or ``REQUEUE_REDIS_URL``; else the spec's
``redis.urlSecretRef`` from ``--secret NAME/KEY=VALUE`` or the environment
(``REQUEUE_SECRET_<NAME>_<KEY>``, see :mod:`requeue.secrets`). Gates resolve
their Secrets the same way. URLs are redacted in everything printed.

**Resume**: the replay id names the snapshot and progress keys in Redis. It
defaults to ``metadata.uid`` when the manifest has one, else to
``cli-<hash of namespace/name>``, so rerunning the same command after a crash,
a SIGKILL or Ctrl-C continues the same snapshot: every selected job is moved
exactly once. ``--replay-id ID`` sets it explicitly (to resume under a renamed
manifest, or to run a manifest again as a new replay once the first finished).
A replay that finished is not run again: rerunning prints its outcome. The
selection (queue, prefix, selector, targetQueue, mode) is recorded with the
replay's state when it starts; a rerun whose manifest selects differently is
refused (exit 2, ``SelectionChanged``), as resuming would move the old selection.

**Named jobs** (``--job ID``, repeatable, with ``--queue`` and ``--redis-url``): no manifest;
the replay is the one a DLQReplay with ``selector.jobIds`` would run (the default rate and
checks, no gates). Its replay id is derived from the prefix, queue and ids, so rerunning the
same command resumes it, or prints its outcome once it finished: each job moves once. Ids
not in the failed set (completed, waiting, removed, a typo) are left alone, counted and
listed in the result (``notFailedIds`` with ``-o json``); the exit code stays 0.

**Dry run** (``--dry-run`` or ``spec.dryRun``): selection only, under a
throw-away replay id whose keys are deleted afterwards; prints the count, the
breakdown and the first ids; moves nothing and leaves Redis as it was.

**Ctrl-C / SIGTERM**: the current step finishes, then the replay is suspended
the engine's way (the queue is resumed if this replay paused it, the queue's
lease released); where it stopped and how to resume is printed; exit 130. A
second signal aborts at once (still safe: the state is in Redis).

**Output**: a live progress bar on a terminal (stderr), one line per phase and
event otherwise; the result on stdout: a summary, or with ``-o json`` exactly
the object the operator writes to ``.status``.

Exit codes: 0 done, 1 failed (verification, gates timed out, snapshot lost),
2 invalid spec, missing secret, queue not found or a misconfigured gate (its Secret, URL or
destination), 3 Redis unreachable or credentials refused,
130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets as pysecrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from requeue.api import (
    API_VERSION,
    DLQReplay,
    DLQReplaySpec,
    DLQReplayStatus,
    ReplayCondition,
    ReplayPhase,
    find_condition,
)
from requeue.api.base import SecretKeyRef
from requeue.api.conditions import Reason
from requeue.api.loading import parse
from requeue.commands.output import (
    EXIT_INTERRUPTED,
    ConnectRetry,
    RedactedValues,
    connect_retrying,
    make_console,
    report_error,
)
from requeue.errors import (
    AuthFailed,
    Forbidden,
    QueueNotFound,
    RedisUnreachable,
    RedisUrlInvalid,
    RequeueError,
    SecretNotFound,
    SelectionChanged,
    SpecInvalid,
)
from requeue.gates import runner_for
from requeue.queues import BullQueue, map_redis_error
from requeue.queues.adapter import MAX_SCORE
from requeue.redact import redact_url
from requeue.redis_target import open_redis, replay_queues
from requeue.replay import ReplayEngine, StepResult
from requeue.replay.gating import current_message
from requeue.replay.state import SELECTION_FIELDS, changed_fields, recorded_selection, spec_values
from requeue.secrets import StaticSecrets, env_name

__all__ = [
    "ReplayOptions",
    "default_replay_id",
    "jobs_manifest",
    "load_manifest",
    "run_replay",
    "status_json",
]

#: Seconds between two progress lines in plain output while the phase stays the same.
PLAIN_PROGRESS_INTERVAL = 5.0
#: Condition reasons that end the CLI with exit code 3 (Redis) or 2 (spec/secret), else 1.
_EXIT_BY_REASON: dict[str, int] = {
    AuthFailed.reason: AuthFailed.exit_code,
    Forbidden.reason: Forbidden.exit_code,
    RedisUnreachable.reason: RedisUnreachable.exit_code,
    SpecInvalid.reason: SpecInvalid.exit_code,
    SecretNotFound.reason: SecretNotFound.exit_code,
    QueueNotFound.reason: QueueNotFound.exit_code,
    # a gate whose check cannot run because of its configuration: the replay fails at once
    RedisUrlInvalid.reason: RedisUrlInvalid.exit_code,
    Reason.GATE_MISCONFIGURED: 2,
    # a gate's or smoke test's host refused by REQUEUE_GATE_ALLOW/DENY: configuration, not an outage
    Reason.DESTINATION_DENIED: 2,
}


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """The command line of ``requeue replay``."""

    file: str
    #: ``--job``: replay exactly these ids of ``queue`` (no manifest; ``file`` is unused).
    job_ids: tuple[str, ...] = ()
    queue: str | None = None
    prefix: str = "bull"
    redis_url: str | None = None
    secrets: tuple[str, ...] = ()
    dry_run: bool = False
    output: Literal["text", "json"] = "text"
    replay_id: str | None = None
    quiet: bool = False
    no_color: bool = False
    #: Seconds to keep retrying an unreachable Redis at the start (``--connect-timeout``).
    connect_timeout: float = 10.0


#: How the interruption message names the signal that stopped the replay.
_SIGNAL_WORDS = {"SIGINT": "Ctrl-C / SIGINT", "SIGTERM": "SIGTERM"}


# ---------------------------------------------------------------- manifest


def load_manifest(file: str) -> DLQReplay:
    """The one DLQReplay in ``file`` (``-`` is stdin), validated; SpecInvalid names the field."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise SpecInvalid(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecInvalid(f"{file}: not valid YAML: {exc}") from None
    replays = [d for d in docs if isinstance(d, dict) and d.get("kind") == "DLQReplay"]
    if len(replays) != 1:
        if len(docs) == 1:  # let the models say what is wrong with the one document
            return parse(DLQReplay, docs[0] if isinstance(docs[0], dict) else text, name=file)
        raise SpecInvalid(f"{file}: expected exactly one DLQReplay document, found {len(replays)}")
    manifest = parse(DLQReplay, replays[0], name=file)
    if not manifest.metadata.get("name") and not manifest.metadata.get("uid"):
        raise SpecInvalid(f"{file}: metadata.name: required (it names the replay, so a rerun resumes it)")
    return manifest


def jobs_manifest(job_ids: Sequence[str], queue: str, prefix: str) -> DLQReplay:
    """The DLQReplay ``requeue replay --job`` runs: ``selector.jobIds`` (each id once, in the order
    first given), named after a hash of prefix, queue and ids, so the same command resumes it."""
    ids = list(dict.fromkeys(job_ids))
    digest = hashlib.sha256(json.dumps([prefix, queue, ids]).encode()).hexdigest()[:12]
    body = {
        "apiVersion": API_VERSION,
        "kind": "DLQReplay",
        "metadata": {"name": f"jobs-{digest}", "namespace": "default"},
        "spec": {
            # never read: --job requires --redis-url (the spec needs some reference)
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queue": queue,
            "prefix": prefix,
            "selector": {"jobIds": ids},
        },
    }
    return parse(DLQReplay, body, name="--job")


def owner_of(manifest: DLQReplay) -> str:
    """``namespace/name`` as the operator shows it (namespace ``default`` when unset)."""
    meta = manifest.metadata
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or meta.get('uid')}"


def default_replay_id(manifest: DLQReplay) -> str:
    """``metadata.uid`` if present, else ``cli-`` + a hash of ``namespace/name``: stable across reruns."""
    uid = manifest.metadata.get("uid")
    if uid:
        return str(uid)
    return "cli-" + hashlib.sha256(owner_of(manifest).encode()).hexdigest()[:16]


def status_json(status: DLQReplayStatus) -> dict[str, Any]:
    """Exactly the object the operator writes to ``.status``."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def secret_refs(model: BaseModel, path: str = "spec") -> list[tuple[str, SecretKeyRef]]:
    """Every Secret reference in ``model`` with its field path (``spec.gates[0].postgres.dsnSecretRef``).

    Walks the models rather than listing the ``*SecretRef`` fields, so a Secret field added to the
    API is checked too (one source of truth: the models)."""
    found: list[tuple[str, SecretKeyRef]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, SecretKeyRef):
            found.append((where, value))
        elif isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                walk(getattr(value, name), f"{where}.{field.alias or name}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(model, path)
    return found


async def require_secrets(spec: DLQReplaySpec, static: StaticSecrets, *, redis_url_given: bool) -> None:
    """SecretNotFound naming every Secret the spec refers to that was not given.

    The CLI's secrets are fixed when it starts (flags and environment), so a missing one never
    appears: without this check a gate would stay red until gatePolicy.timeout. (The operator
    waits instead, as a Kubernetes Secret may be created later.)"""
    missing: list[str] = []
    for where, ref in secret_refs(spec):
        if redis_url_given and where == "spec.redis.urlSecretRef":
            continue
        try:
            await static.get(ref)
        except SecretNotFound:
            missing.append(
                f"{ref.name}/{ref.key} ({where}): pass --secret {ref.name}/{ref.key}=VALUE "
                f"or set {env_name(ref)}"
            )
    if missing:
        hint = (
            ""
            if redis_url_given
            else " (instead of spec.redis.urlSecretRef: --redis-url URL or REQUEUE_REDIS_URL)"
        )
        raise SecretNotFound(
            f"{len(missing)} secret(s) the manifest refers to not given{hint}: " + "; ".join(missing)
        )


def _rfc3339(when: datetime) -> str:
    """``2025-07-16T10:00:00Z`` as the manifest spells it (UTC)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def exit_code_for(status: DLQReplayStatus) -> int:
    """0 succeeded (or suspended or cancelled by the spec), 3 Redis/auth, 2 spec/secret, 1 any other
    failure."""
    if status.phase in (ReplayPhase.SUCCEEDED, ReplayPhase.SUSPENDED, ReplayPhase.CANCELLED):
        return 0
    cond = find_condition(status.conditions, ReplayCondition.SUCCEEDED)
    return _EXIT_BY_REASON.get(cond.reason if cond else "", 1)


# ---------------------------------------------------------------- progress display


class Reporter:
    """Plain lines: one per phase change and per engine event, a progress line now and then."""

    def __init__(self, stream: TextIO, secrets: RedactedValues) -> None:
        self.stream = stream
        self.secrets = secrets
        self.phase: ReplayPhase | None = None
        self.last_line = 0.0
        self.last_progress = ""

    def note(self, text: str) -> None:
        print(self.secrets.redact(text), file=self.stream, flush=True)

    def step(self, result: StepResult) -> None:
        st = result.status
        for event in result.events:
            self.note(f"{event.type.lower()}: {event.reason}: {event.message}")
        now = time.monotonic()
        if st.phase != self.phase:
            self.phase = st.phase
            message = current_message(st.phase.value, st.message or "")
            self.note(f"phase {st.phase.value}: {message or 'starting'}")
            self.last_line, self.last_progress = now, st.progress
        elif now - self.last_line >= PLAIN_PROGRESS_INTERVAL and st.progress != self.last_progress:
            self.note(f"{st.phase.value}: {st.message or st.progress}")
            self.last_line, self.last_progress = now, st.progress

    def close(self) -> None:
        pass


class RichReporter(Reporter):
    """A live progress bar on a terminal: phase, replayed/matched, rate, gates; events above it."""

    def __init__(self, console: Console, secrets: RedactedValues) -> None:
        super().__init__(sys.stderr, secrets)
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[gates]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("replay", total=None, phase="Pending", rate="", gates="")
        self.samples: list[tuple[float, int]] = []
        self.progress.start()

    def note(self, text: str) -> None:
        self.progress.console.print(self.secrets.redact(text), highlight=False, markup=False)

    def _rate(self, done: int) -> str:
        now = time.monotonic()
        self.samples.append((now, done))
        self.samples = [s for s in self.samples if now - s[0] <= 5.0]
        t0, d0 = self.samples[0]
        return f"{(done - d0) / (now - t0):.0f} jobs/s" if now > t0 and done > d0 else ""

    def step(self, result: StepResult) -> None:
        st = result.status
        for event in result.events:
            self.note(f"{event.type.lower()}: {event.reason}: {event.message}")
        if st.phase != self.phase:
            self.phase = st.phase
            message = current_message(st.phase.value, st.message or "")
            self.note(f"phase {st.phase.value}: {message or 'starting'}")
        gates = ""
        if st.gates:
            ok = sum(1 for g in st.gates if g.healthy)
            red = ", ".join(g.name for g in st.gates if not g.healthy)
            gates = f"gates {ok}/{len(st.gates)} ok" + (f" (waiting: {red})" if red else "")
        done = st.replayed + st.skipped
        self.progress.update(
            self.task,
            completed=done,
            total=st.matched or None,
            phase=st.phase.value,
            rate=self._rate(st.replayed),
            gates=gates,
        )

    def close(self) -> None:
        self.progress.stop()


class Quiet(Reporter):
    def note(self, text: str) -> None:
        pass

    def step(self, result: StepResult) -> None:
        pass


# ---------------------------------------------------------------- the command


def run_replay(opts: ReplayOptions) -> int:
    """Validate, connect, drive the engine to the end (or a signal), print; return the exit code."""
    hidden = RedactedValues()
    hidden.add_url(opts.redis_url)
    as_json = opts.output == "json"
    try:
        static = StaticSecrets.from_flags(opts.secrets)
    except ValueError as exc:
        return report_error(SpecInvalid(str(exc)), hidden, json_output=as_json)
    for flag in opts.secrets:  # a URL is shown redacted, other secret values not at all
        value = flag.partition("=")[2]
        if "://" in value:
            hidden.add_url(value)
        else:
            hidden.add(value)
    replay: _Replay | None = None
    try:
        if opts.job_ids:
            assert opts.queue is not None  # the command line requires it with --job
            manifest = jobs_manifest(opts.job_ids, opts.queue, opts.prefix)
        else:
            manifest = load_manifest(opts.file)
        replay = _Replay(opts, manifest, static, hidden)
        return asyncio.run(replay.main())
    except RequeueError as exc:
        # with -o json, where the replay had got to (the operator's .status) goes with the error
        reached = replay is not None and replay.status != DLQReplayStatus()
        extra = {"status": status_json(replay.status)} if replay is not None and reached else {}
        return report_error(exc, hidden, json_output=as_json, **extra)


class _Replay:
    def __init__(
        self, opts: ReplayOptions, manifest: DLQReplay, static: StaticSecrets, hidden: RedactedValues
    ) -> None:
        self.opts = opts
        self.manifest = manifest
        self.static = static
        self.hidden = hidden
        self.spec: DLQReplaySpec = manifest.spec
        self.dry_run = opts.dry_run or manifest.spec.dry_run
        if self.dry_run:
            self.spec = self.spec.model_copy(update={"dry_run": True})
        self.replay_id = opts.replay_id or default_replay_id(manifest)
        self.owner = owner_of(manifest)
        self.stop = asyncio.Event()
        self.signal_name = ""
        self.status = DLQReplayStatus()
        #: Why nothing was selected, when the selector's time window left every failed job out.
        self.window_note = ""

    async def resolve_url(self) -> str:
        if self.opts.redis_url:
            return self.opts.redis_url
        try:
            url = await self.static.get(self.spec.redis.url_secret_ref)
        except SecretNotFound as exc:
            raise SecretNotFound(
                f"no Redis URL: pass --redis-url URL, set REQUEUE_REDIS_URL, or give the "
                f"spec's redis.urlSecretRef: {exc.message}"
            ) from None
        self.hidden.add_url(url)
        return url

    async def main(self) -> int:
        await require_secrets(self.spec, self.static, redis_url_given=bool(self.opts.redis_url))
        url = await self.resolve_url()
        redis, target = await connect_retrying(
            lambda: open_redis(self.static, self.spec.redis, url=url, queues=replay_queues(self.spec)),
            ConnectRetry(self.opts.connect_timeout),
            self._warn,
        )
        replay_id = self.replay_id
        if self.dry_run:  # a throw-away id: never touches (or finishes) the real replay's state
            replay_id = f"{self.replay_id}-dryrun-{pysecrets.token_hex(4)}"
        gates = runner_for(self.spec, self.static, target=target, owner=self.owner)  # target.url is url
        engine = ReplayEngine(redis, replay_id=replay_id, owner=self.owner, gates=gates)
        engine.smoke.secrets = self.static
        reporter = self._reporter()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        installed: list[signal.Signals] = []

        def on_signal(sig: signal.Signals) -> None:
            if self.stop.is_set():
                if main_task is not None:
                    main_task.cancel()
                return
            self.signal_name = sig.name
            self.stop.set()
            reporter.note(f"{sig.name}: stopping after the current step (again to abort at once)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
        try:
            try:  # what it reads first (its stored progress) fails as the steps do, e.g. Forbidden
                await self._announce(engine, url, reporter)
            except RedisError as exc:
                raise map_redis_error(exc, url=url, queue=self.spec.queue) from None
            try:
                code = await self._drive(engine, reporter)
            finally:
                if self.dry_run:
                    with contextlib.suppress(Exception):
                        await engine.cancel(self.spec, self.status)  # drops the throw-away keys
        except asyncio.CancelledError:
            reporter.close()
            self._print_result()
            print(
                f"requeue: aborted at {self.status.progress or '0/0'}; rerun the same command to resume "
                f"(replay id {self.replay_id})",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        finally:
            reporter.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await redis.aclose()
        return code

    def _warn(self, text: str) -> None:
        """A line on stderr (redacted) before the progress display exists, e.g. a retry."""
        print(f"requeue: {self.hidden.redact(text)}", file=sys.stderr, flush=True)

    def _reporter(self) -> Reporter:
        if self.opts.quiet:
            return Quiet(sys.stderr, self.hidden)
        console = make_console(stderr=True, no_color=self.opts.no_color)
        if console.is_terminal:
            return RichReporter(console, self.hidden)
        return Reporter(sys.stderr, self.hidden)

    async def _announce(self, engine: ReplayEngine, url: str, reporter: Reporter) -> None:
        what = "dry run of" if self.dry_run else "replay"
        reporter.note(
            f"{what} {self.owner} (replay id {self.replay_id}): queue {self.spec.queue} "
            f"(prefix {self.spec.prefix}) at {redact_url(url)}"
        )
        if not self.dry_run:
            await self._same_selection(engine)
            progress = await engine.stored_progress()
            if progress is None:
                return
            if progress.finished:
                reporter.note(
                    f"this replay already finished ({progress.outcome}); showing "
                    "its outcome. To run the manifest again, use a new metadata.name or "
                    "--replay-id"
                )
            else:
                reporter.note(
                    f"resuming: {progress.replayed} of {progress.matched} selected jobs "
                    f"already moved (stage {progress.stage or 'start'})"
                )

    async def _same_selection(self, engine: ReplayEngine) -> None:
        """Refuse to resume a replay whose manifest now selects other jobs: the engine would go on
        with the snapshot (or window) of the selection it started with, and say Succeeded."""
        before = await recorded_selection(engine.redis, engine.keys)
        if before is None:
            return
        now = spec_values(self.spec, SELECTION_FIELDS)
        changed = changed_fields(before, now, SELECTION_FIELDS)
        if not changed:
            return
        diffs = "; ".join(
            f"spec.{key} was {json.dumps(before.get(key), sort_keys=True)}, now "
            f"{json.dumps(now.get(key), sort_keys=True)}"
            for key in changed
        )
        raise SelectionChanged(
            f"{self.opts.file or '--job'}: the selection changed since replay {self.owner} (replay id "
            f"{self.replay_id}) started: {diffs}. Resuming would move the jobs it selected then, so "
            f"nothing was done. Either restore the file as it was and rerun to resume, or run the new "
            f"selection as a new replay: --replay-id NEW (or a new metadata.name)",
            queue=self.spec.queue,
            replay=self.owner,
        )

    async def _drive(self, engine: ReplayEngine, reporter: Reporter) -> int:
        """The loop of :meth:`ReplayEngine.run`, plus: stop cleanly between steps on a signal."""
        spec = self.spec
        while True:
            result = await engine.step(spec, self.status)
            self.status = result.status
            if engine.redis_failures >= engine.redis_failure_bound:
                # not reporter.step(result): the engine's Warning says "retrying in", and this gives up
                raise self._give_up(engine, reporter)
            reporter.step(result)
            st = self.status
            if st.phase.finished or st.phase == ReplayPhase.SUSPENDED:
                reporter.close()
                if st.phase == ReplayPhase.SUCCEEDED and st.matched == 0:
                    self.window_note = await self._window_note(engine)
                self._print_result()
                return exit_code_for(st)
            if engine.redis_failures:
                reporter.note(
                    f"Redis unavailable, retrying in {result.delay:g}s (attempt "
                    f"{engine.redis_failures} of {engine.redis_failure_bound})"
                )
            if self.stop.is_set():
                return await self._interrupted(engine, reporter)
            if result.delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), result.delay)

    def _give_up(self, engine: ReplayEngine, reporter: Reporter) -> RedisUnreachable:
        """The error that ends the command after the engine's bound of Redis failures in a row;
        the status printed says so too (the engine's says "retrying in", as the operator does)."""
        st = self.status
        ready = find_condition(st.conditions, ReplayCondition.READY)
        cause = (ready.message if ready else "Redis unavailable").split("; ")[0]
        message = (
            f"{cause}; gave up after {engine.redis_failures} attempts in a row at {st.progress}. "
            f"Rerun the same command to resume (replay id {self.replay_id})"
        )
        st.message = message
        if ready is not None:
            ready.message = message
        reporter.close()
        if self.opts.output != "json":  # with -o json the status goes into the error object
            self._print_result(headline=f"Gave up in phase {st.phase.value}: Redis unavailable")
        return RedisUnreachable(message, queue=self.spec.queue, replay=self.owner)

    async def _interrupted(self, engine: ReplayEngine, reporter: Reporter) -> int:
        before = self.status
        if not self.dry_run:
            # the engine's own suspend: resumes the queue if this replay paused it, releases the lease
            result = await engine.step(self.spec.model_copy(update={"suspend": True}), before)
            self.status = self._as_interrupted(result.status)  # the engine's words say "spec.suspend"
        reporter.close()
        self._print_result(headline=f"Interrupted ({self.signal_name}) in phase {before.phase.value}")
        st = self.status
        if self.dry_run:
            print(f"requeue: {self.signal_name}: dry run stopped; nothing was moved", file=sys.stderr)
            return EXIT_INTERRUPTED
        resumed = " (the queue this replay had paused was resumed)" if before.queue_paused_by_replay else ""
        print(
            f"requeue: {self.signal_name}: stopped in phase {before.phase.value} at {st.progress or '0/0'} "
            f"(replayed {st.replayed}, skipped {st.skipped}, matched {st.matched}){resumed}.\n"
            f"requeue: to resume, rerun the same command (replay id {self.replay_id}; or add "
            f"--replay-id {self.replay_id})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    async def _window_note(self, engine: ReplayEngine) -> str:
        """When nothing was selected and the selector has a time window: how many failed jobs the
        queue holds and how many fall in the window, so a stale window (e.g. an example's dates)
        shows as the reason instead of a silent 0. Best effort: a Redis error leaves it out."""
        sel = self.spec.selector
        if sel.failed_after is None and sel.failed_before is None:
            return ""
        queue = BullQueue(engine.redis, self.spec.queue, prefix=self.spec.prefix)
        low = int(sel.failed_after.timestamp() * 1000) if sel.failed_after else 0
        high = int(sel.failed_before.timestamp() * 1000) if sel.failed_before else MAX_SCORE
        try:
            total = int(await engine.redis.zcard(queue.keys.failed))
            inside = await queue.failed_count(low, high) if total else 0
        except RedisError:
            return ""
        start = _rfc3339(sel.failed_after) if sel.failed_after else "any time"
        end = _rfc3339(sel.failed_before) if sel.failed_before else "now"
        note = (
            f"{inside} of {total} failed jobs fall in the window {start}..{end} "
            f"(spec.selector.failedAfter/failedBefore)"
        )
        if total and not inside:
            note += "; edit the window to the time the jobs failed"
        return note

    def _as_interrupted(self, st: DLQReplayStatus) -> DLQReplayStatus:
        """The engine's suspended status in the CLI's words: spec.suspend was never set, a signal
        stopped it (reason ``Interrupted``); the phase stays Suspended, which is what it is."""
        how = _SIGNAL_WORDS.get(self.signal_name, self.signal_name)
        message = f"interrupted ({how}); rerun the same command to resume"
        st.message = message
        for cond in st.conditions:
            if cond.reason == Reason.SUSPENDED:
                cond.reason, cond.message = Reason.INTERRUPTED, message
        return st

    # -- the result

    def _print_result(self, headline: str | None = None) -> None:
        st = self.status
        if self.opts.output == "json":
            print(json.dumps(self.hidden.redact_json(status_json(st)), indent=2), flush=True)
            if self.window_note:  # stdout is exactly the status object
                print(f"requeue: {self.window_note}", file=sys.stderr, flush=True)
            return
        text = render_summary(st, dry_run=self.dry_run, quiet=self.opts.quiet, headline=headline)
        if self.window_note and not self.opts.quiet:
            text += self.window_note + "\n"
        print(self.hidden.redact(text), end="", flush=True)


def render_summary(
    st: DLQReplayStatus, *, dry_run: bool = False, quiet: bool = False, headline: str | None = None
) -> str:
    """The human result: outcome line, counters, breakdown, first ids."""
    head = headline or (f"{st.phase.value}: {st.message}" if st.message else st.phase.value)
    if quiet:
        return head + "\n"
    lines = [head]
    if dry_run and st.phase == ReplayPhase.FAILED:  # it decided nothing: no count to show
        lines.append("dry run failed: nothing was decided")
    elif dry_run:
        lines.append(f"would replay {st.matched} jobs ({st.corrupt} corrupt, not replayable)")
    else:
        lines.append(
            f"matched {st.matched}, replayed {st.replayed}, skipped {st.skipped}, corrupt "
            f"{st.corrupt}"
            + (
                f", completed {st.completed}, failed again {st.failed_again}"
                if st.completed or st.failed_again
                else ""
            )
        )
    if st.duplicates or st.no_dedupe_key:
        left = "that would stay failed" if dry_run else "left failed"
        lines.append(
            f"duplicates {left} (an older copy of a newer failed job): {st.duplicates}"
            + (f"; without a dedupeBy value (each replayed): {st.no_dedupe_key}" if st.no_dedupe_key else "")
        )
    if st.breakdown is not None:
        for title, groups in (
            ("by name", st.breakdown.by_name),
            ("by reason", st.breakdown.by_reason),
            ("duplicates by dedupeBy value", st.breakdown.duplicates_by_key or {}),
        ):
            if groups:
                lines.append(f"{title}:")
                width = max(len(k) for k in groups)
                lines.extend(f"  {k:<{width}}  {v:>8}" for k, v in groups.items())
    if st.sample_ids:
        lines.append(f"first ids: {', '.join(st.sample_ids)}")
    if st.corrupt_ids:
        lines.append(f"corrupt ids: {', '.join(st.corrupt_ids)}")
    if st.not_failed:
        more = f" (first {len(st.not_failed_ids)})" if st.not_failed > len(st.not_failed_ids) else ""
        lines.append(
            f"not in the failed set, left alone: {st.not_failed}{more}: {', '.join(st.not_failed_ids)}"
        )
    return "\n".join(lines) + "\n"
