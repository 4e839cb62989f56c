"""``kubectl requeue``: the requeue CLI as a kubectl plugin, with the cluster as the source of secrets.

kubectl runs any ``kubectl-requeue`` on PATH for ``kubectl requeue ...``, passing the arguments
after ``requeue`` (installing requeue installs this entry point). It is the requeue CLI, plus
what the current kubeconfig context can supply, read with the user's own credentials:

* ``inspect --from dlqreplay/NAME`` (or ``queuepolicy/NAME``): the Redis URL from the object's
  ``spec.redis.urlSecretRef`` Secret, its ``db``, its ``tls`` CA bundle and client certificate
  from their Secrets, the queue and prefix from its spec (a QueuePolicy of several queues needs
  ``--queue``). They go to the CLI in its environment (``REQUEUE_REDIS_URL``,
  ``REQUEUE_REDIS_TLS_*``, ``REQUEUE_REDIS_DB``: :mod:`requeue.commands.redis_env`), never argv.
* ``replay --from dlqreplay/NAME``: the DLQReplay's spec, read from the cluster, run by the CLI
  as ``replay -f`` runs a manifest (``--dry-run`` to preview); its Secrets (Redis URL, TLS,
  gates, smoke test) read from the object's namespace as for ``replay -f``.
* ``replay -f FILE``: every Secret the manifest refers to and that ``--secret``/the environment do
  not give is read from the cluster (the manifest's namespace, else the context's) and handed to the
  CLI as ``REQUEUE_SECRET_<NAME>_<KEY>``.
* ``cancel NAME``: ``spec.cancel: true`` on a DLQReplay; the operator stops it at its next step and
  leaves it Cancelled with its counts.

kubectl passes no global flags to a plugin, so ``-n/--namespace``, ``--context`` and
``--kubeconfig`` are read here (anywhere on the line); ``KUBECONFIG`` is honoured as kubectl does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import yaml

from requeue.api.common import RedisConnection
from requeue.api.replay import ReplayPhase
from requeue.api.resources import GROUP, VERSION
from requeue.errors import ReplayNotFound, RequeueError, SecretNotFound, SpecInvalid
from requeue.redis_target import RedisTarget
from requeue.secrets import env_name

__all__ = ["KubeContext", "main"]

_T = TypeVar("_T")

PROG = "kubectl requeue"
_KINDS = {
    "dlqreplay": "dlqreplays",
    "dlqreplays": "dlqreplays",
    "queuepolicy": "queuepolicies",
    "queuepolicies": "queuepolicies",
}
_KUBE_FLAGS = {
    "-n": "namespace",
    "--namespace": "namespace",
    "--context": "context",
    "--kubeconfig": "kubeconfig",
}


@dataclass(frozen=True)
class KubeContext:
    """Where the plugin talks to: the kubeconfig file, the context, and the namespace to use."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def load(self) -> str:
        """Use this context's cluster and user; the namespace (flag, context's, ``default``)."""
        from requeue.k8s.client import use_kubeconfig

        conn = use_kubeconfig(self.kubeconfig, self.context)
        return self.namespace or conn.namespace or "default"


def split_kube_flags(args: Sequence[str]) -> tuple[KubeContext, list[str]]:
    """The arguments without kubectl's ``-n``, ``--namespace``, ``--context``, ``--kubeconfig``
    (``--x=v`` or ``--x v``), and those as a :class:`KubeContext`."""
    found: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in _KUBE_FLAGS and (eq or i + 1 < len(args)):
            found[_KUBE_FLAGS[name]] = value if eq else args[i + 1]
            i += 1 if eq else 2
            continue
        rest.append(arg)
        i += 1
    return KubeContext(**found), rest


def _option(args: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` in ``args`` (``--x v`` or ``--x=v``), removed from ``args``."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                del args[i]
                return value
            if i + 1 < len(args):
                value = args[i + 1]
                del args[i : i + 2]
                return value
    return None


def _wants_json(args: Sequence[str]) -> bool:
    return any(a in ("-ojson", "--output=json", "-o=json") for a in args) or any(
        a in ("-o", "--output") and b == "json" for a, b in itertools.pairwise(args)
    )


def _has(args: Sequence[str], *names: str) -> bool:
    return any(a.partition("=")[0] in names for a in args)


async def _read_object(plural: str, namespace: str, name: str) -> dict[str, Any]:
    import aiohttp

    from requeue.k8s.client import ApiStatusError, custom_object_path, request, translate

    try:
        obj = await request("GET", custom_object_path(GROUP, VERSION, namespace, plural, name))
    except ApiStatusError as exc:
        if exc.status == 404:
            raise ReplayNotFound(f"{plural}.{GROUP} {namespace}/{name} not found") from None
        raise translate(exc, f"reading {plural} {namespace}/{name}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise translate(exc, f"reading {plural} {namespace}/{name}") from None
    return obj if isinstance(obj, dict) else {}


async def _from_object(ref: str, kube: KubeContext, args: list[str]) -> None:
    """``--from KIND/NAME``: REQUEUE_REDIS_URL from its Secret; ``--queue``/``--prefix`` from its spec."""
    from requeue.k8s.secrets import KubeSecrets
    from requeue.redis_target import resolve_redis

    kind, _, name = ref.partition("/")
    plural = _KINDS.get(kind.lower())
    if plural is None or not name:
        raise SpecInvalid(f"--from {ref!r}: expected dlqreplay/NAME or queuepolicy/NAME")
    namespace = kube.load()
    spec = (await _read_object(plural, namespace, name)).get("spec") or {}
    try:
        conn = RedisConnection.model_validate(spec.get("redis") or {})
    except ValueError:
        raise SpecInvalid(f"{plural} {namespace}/{name}: spec.redis is not valid") from None
    target = await resolve_redis(KubeSecrets(namespace), conn)
    _hand_over(target)
    if not _has(args, "--prefix") and spec.get("prefix"):
        args += ["--prefix", str(spec["prefix"])]
    if not _has(args, "--queue"):
        queues = [spec["queue"]] if spec.get("queue") else list(spec.get("queues") or [])
        if len(queues) != 1:
            raise SpecInvalid(
                f"{plural} {namespace}/{name} watches {len(queues)} queues: say which with --queue"
            )
        args += ["--queue", str(queues[0])]


def _hand_over(target: RedisTarget) -> None:
    """The resolved Redis into the CLI's environment (:mod:`requeue.commands.redis_env`): the
    URL, database, CA bundle and client certificate; nothing on argv, nothing printed."""
    from requeue.commands import redis_env

    os.environ["REQUEUE_REDIS_URL"] = target.url
    values = {
        redis_env.ENV_CA: target.tls.ca_pem,
        redis_env.ENV_CERT: target.tls.cert_pem,
        redis_env.ENV_KEY: target.tls.key_pem,
        redis_env.ENV_INSECURE: "1" if target.tls.insecure_skip_verify else None,
        redis_env.ENV_DB: None if target.db is None else str(target.db),
    }
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)  # the object's settings, not a leftover of the shell's
        else:
            os.environ[name] = value


async def _replay_from(ref: str, kube: KubeContext, args: list[str]) -> None:
    """``replay --from dlqreplay/NAME``: the object's spec as a manifest file for ``-f``.

    The run is the CLI's own: its replay id comes from namespace/name (as ``replay -f`` of the
    object's manifest), not from the object's uid, so the operator's state for the object is
    neither resumed nor touched; ``spec.suspend`` and ``spec.cancel`` (which hold or stop the
    operator's run) are left out, since asking for this run is the decision to run it. A real
    run of an object the operator may be driving (not suspended, not finished) is refused:
    two drivers would take turns on the queue's lease.
    """
    kind, _, name = ref.partition("/")
    plural = _KINDS.get(kind.lower())
    if plural == "queuepolicies":
        raise SpecInvalid(
            f"replay --from {ref}: a QueuePolicy is not a replay (its actions.autoReplay creates "
            f"DLQReplays); give dlqreplay/NAME, or look at its queues with inspect --from {ref}"
        )
    if plural is None or not name:
        raise SpecInvalid(f"--from {ref!r}: replay takes dlqreplay/NAME")
    if _has(args, "-f", "--filename", "--job"):
        raise click.UsageError("use either --from dlqreplay/NAME or -f FILE / --job, not both")
    namespace = kube.load()
    obj = await _read_object(plural, namespace, name)
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in ("suspend", "cancel")}
    held = bool((obj.get("spec") or {}).get("suspend"))
    phase = (obj.get("status") or {}).get("phase")
    finished = phase in {p.value for p in ReplayPhase} and ReplayPhase(phase).finished
    if not _has(args, "--dry-run") and not spec.get("dryRun") and not held and not finished:
        raise SpecInvalid(
            f"dlqreplays.{GROUP} {namespace}/{name} is not suspended and has not finished "
            f"(phase {phase or 'none yet'}): the operator runs it. Preview with --dry-run, or "
            "set spec.suspend: true first and run it here"
        )
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DLQReplay",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    with tempfile.NamedTemporaryFile("w", prefix="requeue-from-", suffix=".yaml", delete=False) as copy:
        yaml.safe_dump(manifest, copy)
    atexit.register(_remove, copy.name)
    args += ["-f", copy.name]


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


async def _manifest_secrets(args: list[str], kube: KubeContext) -> None:
    """Put every Secret of ``replay -f FILE``'s manifest not given otherwise into the environment."""
    from requeue.commands.replay_cmd import load_manifest, secret_refs
    from requeue.k8s.secrets import KubeSecrets
    from requeue.secrets import StaticSecrets

    file = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in ("-f", "--filename"):
            file = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            if file == "-":  # the CLI reads the manifest again: keep stdin's text for it
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as copy:
                    copy.write(sys.stdin.read())
                file = copy.name
                args[i : i + (1 if eq else 2)] = ["-f", file]
            break
    if file is None:
        return
    manifest = load_manifest(file)
    given = StaticSecrets.from_flags([v for i, v in enumerate(args) if i and args[i - 1] == "--secret"])
    url_given = _has(args, "--redis-url") or "REQUEUE_REDIS_URL" in os.environ
    missing = []
    for where, ref in secret_refs(manifest.spec):
        if url_given and where == "spec.redis.urlSecretRef":
            continue
        try:
            await given.get(ref)
        except SecretNotFound:
            missing.append(ref)
    if not missing:  # everything given: no cluster needed
        return
    in_context = kube.load()
    cluster = KubeSecrets(str(manifest.metadata.get("namespace") or in_context))
    for ref in missing:
        try:
            os.environ[env_name(ref)] = await cluster.get(ref)
        except SecretNotFound:
            continue  # the CLI names every missing one, with how to pass it


async def _cancel(args: list[str], kube: KubeContext) -> int:
    from requeue.k8s.objects import patch_spec

    if len(args) != 1 or args[0].startswith("-"):
        raise click.UsageError("usage: kubectl requeue cancel NAME [-n NAMESPACE]")
    name = args[0]
    namespace = kube.load()
    if not await patch_spec("dlqreplays", namespace, name, {"cancel": True}):
        raise ReplayNotFound(f"dlqreplays.{GROUP} {namespace}/{name} not found")
    print(
        f"dlqreplay.{GROUP}/{name} cancel requested (spec.cancel: true): the operator stops it at its "
        "next step and leaves it Cancelled with its counts"
    )
    return 0


def _run(step: Coroutine[Any, Any, _T]) -> _T:
    """Run one step of the plugin's own API work, then close its API connections."""

    async def run_then_close() -> _T:
        from requeue.k8s.client import close

        try:
            return await step
        finally:
            await close()

    return asyncio.run(run_then_close())


def main(argv: Sequence[str] | None = None) -> None:
    """The ``kubectl-requeue`` entry point."""
    kube, args = split_kube_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        if args[:1] == ["cancel"]:
            sys.exit(_run(_cancel(args[1:], kube)))
        ref = _option(args, "--from")
        if ref is not None:
            if args[:1] == ["replay"]:
                _run(_replay_from(ref, kube, args))
            elif args[:1] == ["inspect"]:
                _run(_from_object(ref, kube, args))
            else:
                raise click.UsageError(
                    "--from goes with inspect or replay: kubectl requeue inspect --from dlqreplay/NAME, "
                    "kubectl requeue replay --from dlqreplay/NAME --dry-run"
                )
        if args[:1] == ["replay"]:
            _run(_manifest_secrets(args, kube))
    except click.UsageError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except RequeueError as exc:
        from requeue.commands.output import RedactedValues, error_object, print_json
        from requeue.redact import redact_text

        if _wants_json(args):  # as the CLI's own errors: the error object on stdout
            print_json(error_object(exc.reason, exc.message, exc.exit_code, RedactedValues()))
        print(f"{PROG}: {exc.reason}: {redact_text(exc.message)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    from requeue.cli import main as requeue

    if not args or args[0] in ("-h", "--help"):
        print(_PLUGIN_HELP)
    requeue.main(args=args, prog_name=PROG)


_PLUGIN_HELP = """kubectl requeue: the requeue CLI in the current kubeconfig context
(-n, --context, --kubeconfig).

Plugin additions:
  inspect --from dlqreplay/NAME|queuepolicy/NAME   Redis URL, TLS, queue and prefix from the object
  replay --from dlqreplay/NAME [--dry-run]         run (or preview) the DLQReplay's spec from here
  replay -f FILE                                   the manifest's Secrets read from the cluster
  cancel NAME                                      set spec.cancel on a DLQReplay (kept as Cancelled)
"""
