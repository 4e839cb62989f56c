"""``requeue inspect --duplicates``: duplicate waiting jobs of one queue (read-only).

Reads what a QueuePolicy's ``spec.duplicates`` reads (:mod:`requeue.queues.duplicates`): at
most ``--max-jobs`` ids per list (the newest of ``wait`` and ``paused``, the next to run of
``prioritized``), and with ``--business-key`` each read job's data. Lists job ids listed more
than once, and business keys held by more than one job. The JSON shape (``schemaVersion`` 1)::

    {
      "schemaVersion": 1, "queue": "orders", "prefix": "bull",
      "redis": "redis://default:***@redis:6379/0",
      "scanned": 2003, "maxJobs": 1000,
      "ids": {"count": 1, "extra": 1, "sample": [{"id": "7", "times": 2, "lists": ["wait"]}]},
      "businessKey": {"path": "$.orderId", "count": 1, "extraJobs": 1,
                      "sample": [{"key": "\\"A-1\\"", "jobs": 2, "jobIds": ["1", "2"]}]}
    }

``businessKey`` is null without ``--business-key``. Errors and exit codes as ``requeue inspect``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis import exceptions as rx

from requeue.api.jsonpath import JsonPath
from requeue.commands.output import ConnectRetry, RedactedValues, connect_retrying, print_json, report_error
from requeue.commands.redis_env import cli_connect
from requeue.errors import RequeueError
from requeue.queues import BullQueue, QueueKeys, map_redis_error
from requeue.queues.duplicates import Duplicates, find_duplicates
from requeue.redact import redact_url

__all__ = ["render_duplicates", "run_inspect_duplicates"]


def run_inspect_duplicates(
    *,
    redis_url: str,
    queue: str,
    prefix: str = "bull",
    business_key: JsonPath | None = None,
    max_jobs: int = 1000,
    top: int = 20,
    output: str = "text",
    connect_timeout: float = 10.0,
) -> int:
    """Read, print, return the exit code (as :func:`requeue.commands.inspect_cmd.run_inspect`)."""
    secrets = RedactedValues()
    secrets.add_url(redis_url)

    def note(text: str) -> None:
        print(f"requeue: {secrets.redact(text)}", file=sys.stderr, flush=True)

    async def scan() -> Duplicates:
        keys = QueueKeys(prefix, queue)
        redis = await connect_retrying(
            lambda: cli_connect(redis_url, queues=[keys]), ConnectRetry(connect_timeout), note
        )
        try:
            await BullQueue(redis, queue, prefix=prefix).require_exists()
            read = await find_duplicates(
                redis, {queue: keys}, max_jobs=max_jobs, path=business_key, sample=top
            )
            return read.queues[queue]
        except (rx.RedisError, OSError) as exc:
            raise map_redis_error(exc, url=redis_url, queue=queue) from None
        finally:
            await redis.aclose()

    try:
        found = asyncio.run(scan())
    except RequeueError as exc:
        return report_error(exc, secrets, json_output=output == "json")
    data = duplicates_json(found, queue, prefix, redact_url(redis_url), business_key, max_jobs)
    if output == "json":
        print_json(secrets.redact_json(data))
    else:
        print(secrets.redact(render_duplicates(data)), end="")
    return 0


def duplicates_json(
    found: Duplicates, queue: str, prefix: str, redis: str, path: JsonPath | None, max_jobs: int
) -> dict[str, Any]:
    """The ``-o json`` document (see the module docstring)."""
    return {
        "schemaVersion": 1,
        "queue": queue,
        "prefix": prefix,
        "redis": redis,
        "scanned": found.scanned,
        "maxJobs": max_jobs,
        "ids": {
            "count": found.ids,
            "extra": found.extra_ids,
            "sample": [
                {"id": jid, "times": found.where[jid][0], "lists": list(found.where[jid][1])}
                for jid in found.sample_ids
            ],
        },
        "businessKey": None
        if path is None
        else {
            "path": path.text,
            "count": found.business_keys,
            "extraJobs": found.extra_jobs,
            "sample": [{"key": k, "jobs": n, "jobIds": list(ids)} for k, n, ids in found.sample_keys],
        },
    }


def render_duplicates(data: dict[str, Any]) -> str:
    """Plain aligned text of the JSON document."""
    ids = data["ids"]
    out = [
        f"queue {data['queue']} (prefix {data['prefix']}) at {data['redis']}: {data['scanned']} waiting "
        f"job ids read (wait, paused, prioritized; at most {data['maxJobs']} per list)",
        "",
        f"DUPLICATE IDS: {ids['count']} ids listed more than once ({ids['extra']} extra listings)",
    ]
    if ids["sample"]:
        width = max(2, *(len(s["id"]) for s in ids["sample"]))
        out.append(f"{'ID':<{width}}  {'TIMES':>5}  LISTS")
        out += [f"{s['id']:<{width}}  {s['times']:>5}  {', '.join(s['lists'])}" for s in ids["sample"]]
    bk = data["businessKey"]
    if bk is not None:
        out += [
            "",
            f"DUPLICATE BUSINESS KEYS ({bk['path']}): {bk['count']} keys held by more than one job "
            f"({bk['extraJobs']} extra jobs)",
        ]
        if bk["sample"]:
            width = max(3, *(len(s["key"]) for s in bk["sample"]))
            out.append(f"{'KEY':<{width}}  {'JOBS':>5}  JOB IDS")
            out += [f"{s['key']:<{width}}  {s['jobs']:>5}  {', '.join(s['jobIds'])}" for s in bk["sample"]]
    return "\n".join(out) + "\n"
