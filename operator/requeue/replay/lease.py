"""Who drives a replay: the per-queue lease, fenced by a per-process driver token.

The lease says which replay works a queue. Its value used to be ``"<replay id> <owner>"``,
so two processes running the same manifest (the same replay id) both "held" it, both
moved jobs, and the replay ran at twice ``rate.jobsPerSecond`` against a provider that had
just rate-limited us. The value now carries a random token made once per process, plus
where that process runs; acquiring, renewing, releasing and every guarded move compare
the whole value, so exactly one process drives a replay at a time. A holder that ran on
this host and is provably gone (its pid is ours or runs no more) is taken over at once.

One token per process (not per engine) on purpose: a kopf daemon restarted inside the
same operator process takes its own lease back at once instead of waiting out the TTL,
and kopf runs one daemon per object, so one process is one driver. After a crash the
new process has a new token and takes over when the old lease expires (``LEASE_TTL_MS``).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from dataclasses import dataclass

__all__ = ["Driver", "LeaseHolder", "this_process"]


@dataclass(frozen=True, kw_only=True)
class Driver:
    """One process that may drive replays: a random token and where it runs (for humans)."""

    token: str
    host: str
    pid: int

    def lease_value(self, replay_id: str, owner: str) -> str:
        """What the queue's lease holds while this driver works ``replay_id``."""
        return f"{replay_id} {owner} {self.token} {self.host}:{self.pid}"


@functools.cache
def _driver_for(pid: int) -> Driver:
    return Driver(token=secrets.token_hex(8), host=socket.gethostname() or "unknown-host", pid=pid)


def this_process() -> Driver:
    """The driver of this process; keyed by pid so a forked child gets its own token."""
    return _driver_for(os.getpid())


@dataclass(frozen=True, kw_only=True)
class LeaseHolder:
    """The lease's current value, read back for a message."""

    value: str
    replay_id: str
    owner: str
    where: str = ""

    @classmethod
    def parse(cls, value: str) -> LeaseHolder:
        """Also reads the older ``"<replay id> <owner>"`` value a previous requeue wrote."""
        parts = value.split(" ")
        replay_id = parts[0]
        owner = parts[1] if len(parts) > 1 else value
        where = parts[3] if len(parts) > 3 else ""
        return cls(value=value, replay_id=replay_id, owner=owner, where=where)

    def died_here(self, me: Driver) -> bool:
        """The holder ran on this host and is provably gone, so ``me`` need not wait out its TTL:
        it had our pid (we are a later process: its token differs), or its pid runs no more.
        A rerun after SIGKILL, or a container restarted in the same pod, resumes at once."""
        host, _, pid_text = self.where.rpartition(":")
        if host != me.host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == me.pid:
            return self.value != me.lease_value(self.replay_id, self.owner)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # e.g. PermissionError: it exists, someone else's
            return False
        return False

    def describe(self, *, replay_id: str) -> str:
        """Who holds the queue, as an on-call person reads it in a condition or on stderr."""
        host, _, pid = self.where.rpartition(":")
        process = f"pid {pid} on {host}" if host and pid else "another process"
        if self.replay_id == replay_id:
            return (
                f"this replay (replay id {replay_id}) is being driven by {process}; waiting "
                "until it stops or its lease expires"
            )
        return (
            f"queue is locked by replay {self.owner} (replay id {self.replay_id}, {process}); "
            "waiting for it to finish"
        )
